from __future__ import annotations

import pytest
import torch

from models.corruption import feature_bounds, marginal_corruption, uniform_corruption, vime_corruption


def _data(n: int = 200, g: int = 50, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # Distinct per-gene scales and offsets so bounds differ between genes.
    return torch.randn(n, g, generator=gen) * torch.arange(1, g + 1) + 10 * torch.arange(g)


def _coded(n: int, g: int) -> torch.Tensor:
    """Matrix whose every value is unique and encodes its (row, column): value = 10000 * col + row."""
    return (10000 * torch.arange(g).unsqueeze(0) + torch.arange(n).unsqueeze(1)).float()


def _decode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) each value of a :func:`_coded` matrix came from."""
    col = torch.div(x, 10000, rounding_mode="floor").long()
    return (x - 10000 * col).long(), col


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_feature_bounds_are_per_gene_min_max() -> None:
    x = torch.tensor([[1.0, -2.0], [3.0, 5.0], [0.0, 4.0]])
    low, high = feature_bounds(x)
    assert low.tolist() == [0.0, -2.0]
    assert high.tolist() == [3.0, 5.0]


def test_uniform_corruption_share_bounds_and_spread() -> None:
    x = _data(400, 250)
    low, high = feature_bounds(x)
    out = uniform_corruption(x, 0.3, low, high, generator=_gen(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    changed = out != x
    # 100k Bernoulli(0.3) draws: sd of the share is 0.0014, so 0.01 is > 7 sd. Replacements are fresh
    # continuous draws, so (almost) every drawn entry changes.
    assert abs(changed.float().mean().item() - 0.3) < 0.01
    assert ((out >= low) & (out <= high)).all()
    # Uniform over [low_j, high_j]: the relative position of replaced values has mean 1/2 and variance 1/12.
    pos = ((out - low) / (high - low))[changed]
    assert abs(pos.mean().item() - 0.5) < 0.01
    assert abs(pos.var().item() - 1 / 12) < 0.005
    # The mask and the value share one draw: replaced values must not depend on whether u was small.
    assert abs((pos < 0.5).float().mean().item() - 0.5) < 0.01


def test_uniform_corruption_deterministic_under_seed() -> None:
    x = _data()
    low, high = feature_bounds(x)
    a = uniform_corruption(x, 0.3, low, high, generator=_gen(5))
    b = uniform_corruption(x, 0.3, low, high, generator=_gen(5))
    c = uniform_corruption(x, 0.3, low, high, generator=_gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(uniform_corruption(x, 0.0, low, high, generator=_gen(5)), x)


def test_marginal_corruption_takes_the_same_gene_from_another_row() -> None:
    n, g = 300, 200
    x = _coded(n, g)
    out, drawn = marginal_corruption(x, 0.3, generator=_gen(2))
    assert drawn.dtype == torch.bool and drawn.shape == x.shape
    assert abs(drawn.float().mean().item() - 0.3) < 0.01  # 60k draws: sd 0.0019
    assert torch.equal(out[~drawn], x[~drawn])
    row, col = _decode(out)
    assert torch.equal(col, torch.arange(g).expand(n, g))  # same gene everywhere
    rows = torch.arange(n).unsqueeze(1).expand(n, g)
    assert (row[drawn] != rows[drawn]).all()  # always another sample, so every drawn entry changes
    assert torch.equal(out != x, drawn)


def test_marginal_corruption_donors_are_uniform_over_other_rows() -> None:
    n, g = 8, 50_000
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1).expand(n, g).contiguous()  # value = row
    out, drawn = marginal_corruption(x, 0.3, generator=_gen(3))
    row = out.long()
    for i in range(n):
        donors = row[i][drawn[i]]
        counts = torch.bincount(donors, minlength=n).float()
        assert counts[i] == 0
        # ~15k draws over 7 rows: each share is 1/7 with sd 0.0029, so 0.015 is ~5 sd.
        shares = counts[torch.arange(n) != i] / donors.numel()
        assert (shares - 1 / (n - 1)).abs().max() < 0.015
    # Donors of one sample are drawn independently per gene: consecutive genes agree 1/7 of the time.
    both = drawn[:, 1:] & drawn[:, :-1]
    same = (row[:, 1:] == row[:, :-1])[both].float().mean().item()
    assert abs(same - 1 / (n - 1)) < 0.01


def test_marginal_corruption_edge_cases() -> None:
    pair = _coded(2, 1000)
    out, drawn = marginal_corruption(pair, 0.5, generator=_gen(0))
    assert torch.equal(out[0][drawn[0]], pair[1][drawn[0]]) and torch.equal(out[1][drawn[1]], pair[0][drawn[1]])
    single = _coded(1, 10)
    assert torch.equal(marginal_corruption(single, 0.5, generator=_gen(0))[0], single)  # no other row
    zero, none = marginal_corruption(_coded(5, 10), 0.0, generator=_gen(0))
    assert torch.equal(zero, _coded(5, 10)) and not none.any()
    as_double = marginal_corruption(_coded(50, 20).double(), 0.3, generator=_gen(0))[0]
    assert as_double.dtype == torch.float64


def test_marginal_corruption_deterministic_under_seed() -> None:
    x = _data(64, 40)
    a = marginal_corruption(x, 0.3, generator=_gen(4))
    b = marginal_corruption(x, 0.3, generator=_gen(4))
    c = marginal_corruption(x, 0.3, generator=_gen(5))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_marginal_with_source_draws_from_source_column() -> None:
    m, g = 7, 5
    x = torch.full((3000, g), -1.0)
    source = _coded(m, g)
    out, drawn = marginal_corruption(x, 0.3, generator=_gen(0), source=source)
    assert torch.equal(out[~drawn], x[~drawn])
    row, col = _decode(out[drawn])
    assert torch.equal(col, drawn.nonzero()[:, 1])  # same gene
    shares = torch.bincount(row, minlength=m).float() / row.numel()  # uniform over all M source rows
    assert (shares - 1 / m).abs().max() < 0.02


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_corruption_rejects_bad_rate(rate: float) -> None:
    x = _data(4, 4)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        marginal_corruption(x, rate)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        uniform_corruption(x, rate, *feature_bounds(x))


def test_corruption_validates_shapes() -> None:
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="2-D"):
        marginal_corruption(torch.zeros(4), 0.3)
    with pytest.raises(ValueError, match="source"):
        marginal_corruption(x, 0.3, source=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="low/high"):
        uniform_corruption(x, 0.3, torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="high must be >= low"):
        uniform_corruption(x, 0.3, torch.ones(3), torch.zeros(3))


def test_vime_corruption_statistics() -> None:
    n, g = 1000, 100
    x = _coded(n, g)
    view = vime_corruption(x, 0.3, generator=_gen(3))
    # 100k Bernoulli(0.3) draws: sd of the share is 0.00145, so 0.01 is ~7 sd. Every donor is another
    # row and every value is unique, so every drawn entry changes and is labelled.
    assert abs(view.drawn.float().mean().item() - 0.3) < 0.01
    assert torch.equal(view.mask, view.drawn)
    assert torch.equal(view.x_tilde[~view.drawn], x[~view.drawn])
    row, col = _decode(view.x_tilde)
    assert torch.equal(col, torch.arange(g).expand(n, g))  # same gene everywhere
    rows = torch.arange(n).unsqueeze(1).expand(n, g)
    assert (row[view.mask] != rows[view.mask]).all()  # another sample where the label is 1
    for j in (0, 57, 99):  # membership in the column's own values, checked directly
        assert torch.isin(view.x_tilde[:, j], x[:, j]).all()


def test_vime_corruption_deterministic_and_tied_values_not_labelled() -> None:
    x = _data(64, 12)
    a = vime_corruption(x, 0.3, generator=_gen(5))
    b = vime_corruption(x, 0.3, generator=_gen(5))
    c = vime_corruption(x, 0.3, generator=_gen(6))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a.drawn, c.drawn)
    # A constant gene (e.g. all-zero counts) cannot change, so it never carries a positive label.
    x[:, 3] = 0.0
    tied = vime_corruption(x, 0.5, generator=_gen(5))
    assert tied.drawn[:, 3].any() and not tied.mask[:, 3].any()
    assert torch.equal(tied.mask, tied.drawn & (tied.x_tilde != x))
    assert not vime_corruption(x, 0.0, generator=None).drawn.any()
    with pytest.raises(ValueError, match="2-D"):
        vime_corruption(torch.zeros(4), 0.3)


def test_large_cpu_draws_are_the_same_on_any_thread_count() -> None:
    # 256 x 4,200 entries: above the size from which CPU draws are split over threads.
    x = _data(256, 4200)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = marginal_corruption(x, 0.3, generator=_gen(7))
        torch.set_num_threads(2)
        two = marginal_corruption(x, 0.3, generator=_gen(7))
    finally:
        torch.set_num_threads(previous)
    assert all(torch.equal(u, v) for u, v in zip(one, two, strict=True))
    assert abs(one[1].float().mean().item() - 0.3) < 0.005  # the split draws are still Bernoulli(0.3)


def test_large_cpu_draws_are_uniform_on_24_bit_steps_and_reproducible() -> None:
    from models.corruption import _rand

    shape, cpu = (512, 4096), torch.device("cpu")  # 2**21 entries: the threaded numpy path
    u = _rand(shape, generator=torch.Generator().manual_seed(3), device=cpu)
    assert u.dtype == torch.float32 and u.shape == shape
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert torch.equal(u * 2**24, (u * 2**24).floor())  # multiples of 2**-24, as torch.rand's are
    counts = torch.histc(u, bins=16, min=0.0, max=1.0)
    expected = u.numel() / 16
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 50.0  # 15 degrees of freedom: p < 1e-5 beyond 50
    assert abs(float(u.mean()) - 0.5) < 0.002 and abs(float(u.var()) - 1 / 12) < 0.001
    assert torch.equal(u, _rand(shape, generator=torch.Generator().manual_seed(3), device=cpu))
    assert not torch.equal(u, _rand(shape, generator=torch.Generator().manual_seed(4), device=cpu))
