from __future__ import annotations

import math

import pytest
import torch

from models.losses import nt_xent


def _nt_xent_by_hand(z1: list[list[float]], z2: list[list[float]], tau: float) -> float:
    """Literal SimCLR formula: mean over 2N anchors of -log(exp(s_pos) / sum_{b != a} exp(s_ab))."""
    z = [*z1, *z2]
    n = len(z1)
    unit = [[v / math.sqrt(sum(c * c for c in row)) for v in row] for row in z]

    def sim(a: int, b: int) -> float:
        return sum(p * q for p, q in zip(unit[a], unit[b], strict=True)) / tau

    total = 0.0
    for a in range(2 * n):
        pos = a + n if a < n else a - n
        denom = sum(math.exp(sim(a, b)) for b in range(2 * n) if b != a)
        total += -math.log(math.exp(sim(a, pos)) / denom)
    return total / (2 * n)


def test_nt_xent_matches_hand_computed_two_pairs() -> None:
    # Unit vectors u0=(1,0), u1=(0,1), u2=(1,1)/r2, u3=(1,-1)/r2; with c = 1/sqrt(2) the cosines are
    # s01=0, s02=c, s03=c, s12=c, s13=-c, s23=0. Positives: (0,2) and (1,3). Per anchor:
    #   a=0: log(1 + 2e^c) - c          a=2: log(2e^c + 1) - c
    #   a=1: log(1 + e^c + e^-c) + c    a=3: log(e^c + e^-c + 1) + c
    # so the mean is (log(1 + 2e^c) + log(1 + e^c + e^-c)) / 2 = 1.43971...
    z1 = [[1.0, 0.0], [0.0, 2.0]]
    z2 = [[1.0, 1.0], [1.0, -1.0]]
    c = 1 / math.sqrt(2)
    expected = (math.log(1 + 2 * math.exp(c)) + math.log(1 + math.exp(c) + math.exp(-c))) / 2
    got = nt_xent(torch.tensor(z1), torch.tensor(z2), temperature=1.0).item()
    assert expected == pytest.approx(1.43971, abs=1e-5)
    assert got == pytest.approx(expected, rel=1e-6)
    assert got == pytest.approx(_nt_xent_by_hand(z1, z2, 1.0), rel=1e-6)


def test_nt_xent_temperature_and_random_example() -> None:
    gen = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    expected = _nt_xent_by_hand(z1.tolist(), z2.tolist(), 0.5)
    assert nt_xent(z1, z2, temperature=0.5).item() == pytest.approx(expected, rel=1e-5)


def test_nt_xent_identical_views_beat_random_views() -> None:
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(8, 4, generator=gen)
    assert nt_xent(z, z, 0.1).item() < nt_xent(z, torch.randn(8, 4, generator=gen), 0.1).item()


@pytest.mark.parametrize(
    ("shape1", "shape2", "tau", "match"),
    [((2, 3), (3, 3), 1.0, "equal shapes"), ((2, 3), (2, 3), 0.0, "temperature"), ((3,), (3,), 1.0, "2-D")],
)
def test_nt_xent_validates(shape1: tuple, shape2: tuple, tau: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        nt_xent(torch.ones(shape1), torch.ones(shape2), temperature=tau)
