from __future__ import annotations

import math

import pytest
import torch

from models.losses import byol_loss, byol_regression, nt_xent, vime_loss


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


def _bce(logit: float, label: float) -> float:
    s = 1.0 / (1.0 + math.exp(-logit))
    return -(label * math.log(s) + (1.0 - label) * math.log(1.0 - s))


def test_vime_loss_matches_hand_computed() -> None:
    logits = [[0.0, 2.0], [-1.0, 0.5]]
    mask = [[1.0, 0.0], [0.0, 1.0]]
    pred = [[0.5, -1.0], [2.0, 0.0]]
    x = [[1.0, -1.0], [0.0, 0.5]]
    # BCE terms: log 2, log(1 + e^2), log(1 + e^-1), log(1 + e^-0.5); squared errors 0.25, 0, 4, 0.25.
    bce = (math.log(2) + math.log(1 + math.exp(2)) + math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-0.5))) / 4
    assert bce == pytest.approx(
        sum(_bce(a, m) for ra, rm in zip(logits, mask, strict=True) for a, m in zip(ra, rm, strict=True)) / 4
    )
    mse = (0.25 + 0.0 + 4.0 + 0.25) / 4
    got = vime_loss(torch.tensor(logits), torch.tensor(mask).bool(), torch.tensor(pred), torch.tensor(x), alpha=2.0)
    assert got.mask.item() == pytest.approx(bce, rel=1e-6)
    assert got.feature.item() == pytest.approx(1.125, rel=1e-6)
    assert got.total.item() == pytest.approx(bce + 2.0 * mse, rel=1e-6)
    assert got.total.item() == pytest.approx(3.1518535, rel=1e-6)
    # alpha weights only the reconstruction term; float 0/1 labels give the same BCE as bool labels.
    half = vime_loss(torch.tensor(logits), torch.tensor(mask), torch.tensor(pred), torch.tensor(x), alpha=0.5)
    assert half.total.item() == pytest.approx(bce + 0.5 * mse, rel=1e-6)


def test_vime_loss_random_example() -> None:
    gen = torch.Generator().manual_seed(0)
    logits, pred, x = (torch.randn(4, 3, generator=gen) for _ in range(3))
    mask = torch.rand(4, 3, generator=gen) < 0.3
    bce = sum(_bce(a, float(m)) for a, m in zip(logits.flatten().tolist(), mask.flatten().tolist(), strict=True)) / 12
    mse = sum((p - t) ** 2 for p, t in zip(pred.flatten().tolist(), x.flatten().tolist(), strict=True)) / 12
    assert vime_loss(logits, mask, pred, x, alpha=2.0).total.item() == pytest.approx(bce + 2 * mse, rel=1e-5)


@pytest.mark.parametrize(
    ("shapes", "alpha", "match"),
    [
        (((2, 3), (2, 3), (2, 3), (2, 4)), 2.0, "equal shapes"),
        (((2, 3), (3, 2), (2, 3), (2, 3)), 2.0, "equal shapes"),
        (((6,), (6,), (6,), (6,)), 2.0, "2-D"),
        (((2, 3), (2, 3), (2, 3), (2, 3)), -1.0, "alpha must be >= 0"),
    ],
)
def test_vime_loss_validates(shapes: tuple, alpha: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        logits, mask, pred, x = (torch.zeros(s) for s in shapes)
        vime_loss(logits, mask, pred, x, alpha=alpha)


def _byol_by_hand(p: list[list[float]], z: list[list[float]]) -> float:
    """mean_i (2 - 2 <p_i, z_i> / (|p_i| |z_i|))."""
    total = 0.0
    for a, b in zip(p, z, strict=True):
        dot = sum(u * v for u, v in zip(a, b, strict=True))
        total += 2 - 2 * dot / (math.sqrt(sum(u * u for u in a)) * math.sqrt(sum(v * v for v in b)))
    return total / len(p)


def test_byol_loss_matches_hand_computed() -> None:
    # l(p1, z2): cosines 0 and 1 -> mean(2, 0) = 1. l(p2, z1): cosines -1 and 1/sqrt(2) -> mean(4, 2 - sqrt 2).
    p1, z2 = [[1.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [2.0, 2.0]]
    p2, z1 = [[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [1.0, 1.0]]
    expected = 1.0 + (4.0 + 2.0 - math.sqrt(2)) / 2
    assert expected == pytest.approx(_byol_by_hand(p1, z2) + _byol_by_hand(p2, z1))
    got = byol_loss(torch.tensor(p1), torch.tensor(z2), torch.tensor(p2), torch.tensor(z1)).item()
    assert got == pytest.approx(3.2928932, rel=1e-6)
    assert byol_regression(torch.tensor(p1), torch.tensor(z2)).item() == pytest.approx(1.0, rel=1e-6)


def test_byol_loss_random_example_scale_invariance_and_stop_gradient() -> None:
    gen = torch.Generator().manual_seed(0)
    p1, z2, p2, z1 = (torch.randn(5, 4, generator=gen, requires_grad=True) for _ in range(4))
    expected = _byol_by_hand(p1.tolist(), z2.tolist()) + _byol_by_hand(p2.tolist(), z1.tolist())
    loss = byol_loss(p1, z2, p2, z1)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert p1.grad is not None and p2.grad is not None
    assert z1.grad is None and z2.grad is None  # sg(.) is applied inside
    z = torch.randn(3, 4, generator=gen)
    assert byol_loss(2 * z, z, z, 3 * z).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("s1", "s2", "match"), [((2, 3), (3, 3), "equal shapes"), ((3,), (3,), "2-D"), ((0, 3), (0, 3), "at least one")]
)
def test_byol_loss_validates(s1: tuple, s2: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        byol_loss(torch.ones(s1), torch.ones(s2), torch.ones(s1), torch.ones(s2))
