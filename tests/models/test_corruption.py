from __future__ import annotations

import pytest
import torch

from models.corruption import (
    column_permutation,
    corruption_mask,
    feature_bounds,
    marginal_replacement,
    uniform_replacement,
    vime_corruption,
)


def _data(n: int = 200, g: int = 50, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # Distinct per-gene scales and offsets so bounds differ between genes.
    return torch.randn(n, g, generator=gen) * torch.arange(1, g + 1) + 10 * torch.arange(g)


def test_feature_bounds_are_per_gene_min_max() -> None:
    x = torch.tensor([[1.0, -2.0], [3.0, 5.0], [0.0, 4.0]])
    low, high = feature_bounds(x)
    assert low.tolist() == [0.0, -2.0]
    assert high.tolist() == [3.0, 5.0]


def test_corruption_mask_rate_and_determinism() -> None:
    mask = corruption_mask((400, 250), 0.3, generator=torch.Generator().manual_seed(3), device="cpu")
    assert mask.dtype == torch.bool and mask.shape == (400, 250)
    # 100k Bernoulli(0.3) draws: sd of the mean is 0.0014, so 0.01 is > 7 sd.
    assert abs(mask.float().mean().item() - 0.3) < 0.01
    again = corruption_mask((400, 250), 0.3, generator=torch.Generator().manual_seed(3), device="cpu")
    assert torch.equal(mask, again)
    other = corruption_mask((400, 250), 0.3, generator=torch.Generator().manual_seed(4), device="cpu")
    assert not torch.equal(mask, other)
    assert not corruption_mask((10, 10), 0.0, generator=None).any()


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_corruption_mask_rejects_bad_rate(rate: float) -> None:
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        corruption_mask((4, 4), rate, generator=None)


def test_uniform_replacement_within_bounds_and_only_masked_change() -> None:
    x = _data()
    low, high = feature_bounds(x)
    gen = torch.Generator().manual_seed(0)
    mask = corruption_mask(x.shape, 0.3, generator=gen)
    out = uniform_replacement(x, mask, low, high, generator=gen)
    assert torch.equal(out[~mask], x[~mask])
    assert ((out >= low) & (out <= high)).all()
    # Replacements are fresh draws, not the original values.
    assert (out[mask] != x[mask]).float().mean() > 0.99
    # Uniform draws spread over the range: mean position of replaced values ~ 0.5 of [low, high].
    pos = ((out - low) / (high - low))[mask]
    assert abs(pos.mean().item() - 0.5) < 0.02


def test_uniform_replacement_deterministic_under_seed() -> None:
    x = _data()
    low, high = feature_bounds(x)
    mask = corruption_mask(x.shape, 0.3, generator=torch.Generator().manual_seed(0))
    a = uniform_replacement(x, mask, low, high, generator=torch.Generator().manual_seed(5))
    b = uniform_replacement(x, mask, low, high, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_marginal_values_come_from_same_column_other_row() -> None:
    n, g = 40, 30
    # Every value is unique and encodes its (row, column): value = 1000 * col + row.
    x = (1000 * torch.arange(g).unsqueeze(0) + torch.arange(n).unsqueeze(1)).float()
    gen = torch.Generator().manual_seed(2)
    mask = corruption_mask(x.shape, 0.3, generator=gen)
    out = marginal_replacement(x, mask, generator=gen)
    assert torch.equal(out[~mask], x[~mask])
    col = torch.div(out, 1000, rounding_mode="floor").long()
    row = (out - 1000 * col).long()
    assert torch.equal(col, torch.arange(g).expand(n, g))  # same gene
    rows = torch.arange(n).unsqueeze(1).expand(n, g)
    assert (row[mask] != rows[mask]).all()  # another sample
    assert row[mask].unique().numel() > n // 2  # donors spread over the batch


def test_marginal_with_source_draws_from_source_column() -> None:
    x = torch.zeros(20, 5)
    source = (torch.arange(5).float() + 100).expand(7, 5).clone()
    mask = torch.ones(20, 5, dtype=torch.bool)
    mask[0] = False
    out = marginal_replacement(x, mask, generator=torch.Generator().manual_seed(0), source=source)
    assert out[0].tolist() == [0.0] * 5
    assert torch.equal(out[1:], (torch.arange(5).float() + 100).expand(19, 5))


def test_replacement_validates_shapes() -> None:
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="mask shape"):
        marginal_replacement(x, torch.zeros(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        marginal_replacement(x, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="low/high"):
        uniform_replacement(x, torch.zeros(4, 3, dtype=torch.bool), torch.zeros(2), torch.ones(2))


def _coded(n: int, g: int) -> torch.Tensor:
    """Matrix whose every value is unique and encodes its (row, column): value = 10000 * col + row."""
    return (10000 * torch.arange(g).unsqueeze(0) + torch.arange(n).unsqueeze(1)).double()


def test_column_permutation_permutes_each_column_independently() -> None:
    x = _coded(50, 20)
    x_bar, donor = column_permutation(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x_bar, x.gather(0, donor))
    assert torch.equal(x_bar.sort(dim=0).values, x)  # every column keeps exactly its values
    assert torch.equal(donor.sort(dim=0).values, torch.arange(50).unsqueeze(1).expand(50, 20))
    assert donor.T.unique(dim=0).shape[0] == 20  # a different permutation for every gene
    again, _ = column_permutation(x, generator=torch.Generator().manual_seed(0))
    other, _ = column_permutation(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x_bar, again) and not torch.equal(x_bar, other)


def test_vime_corruption_statistics() -> None:
    n, g = 1000, 100
    x = _coded(n, g)
    view = vime_corruption(x, 0.3, generator=torch.Generator().manual_seed(3))
    # 100k Bernoulli(0.3) draws: sd of the mean is 0.00145, so 0.01 is ~7 sd. A permutation maps a row to
    # itself with probability 1/n, so the label rate is 0.3 * (1 - 1/n) = 0.2997.
    assert abs(view.drawn.float().mean().item() - 0.3) < 0.01
    assert abs(view.mask.float().mean().item() - 0.3 * (1 - 1 / n)) < 0.01
    assert torch.equal(view.mask, view.drawn & (view.x_tilde != x))
    assert torch.equal(view.x_tilde[~view.mask], x[~view.mask])  # clean where the label is 0
    assert torch.equal(view.x_tilde[~view.drawn], x[~view.drawn])
    col = torch.div(view.x_tilde, 10000, rounding_mode="floor").long()
    row = (view.x_tilde - 10000 * col).long()
    cols = torch.arange(g).expand(n, g)
    rows = torch.arange(n).unsqueeze(1).expand(n, g)
    assert torch.equal(col, cols)  # same gene everywhere
    assert (row[view.mask] != rows[view.mask]).all()  # another sample where the label is 1
    for j in (0, 57, 99):  # membership in the column's own values, checked directly
        assert torch.isin(view.x_tilde[:, j], x[:, j]).all()


def test_vime_corruption_deterministic_and_tied_values_not_labelled() -> None:
    x = _data(64, 12)
    a = vime_corruption(x, 0.3, generator=torch.Generator().manual_seed(5))
    b = vime_corruption(x, 0.3, generator=torch.Generator().manual_seed(5))
    c = vime_corruption(x, 0.3, generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a.drawn, c.drawn)
    # A constant gene (e.g. all-zero counts) cannot change, so it never carries a positive label.
    x[:, 3] = 0.0
    tied = vime_corruption(x, 0.5, generator=torch.Generator().manual_seed(5))
    assert tied.drawn[:, 3].any() and not tied.mask[:, 3].any()
    assert not vime_corruption(x, 0.0, generator=None).drawn.any()
    with pytest.raises(ValueError, match="2-D"):
        vime_corruption(torch.zeros(4), 0.3)
