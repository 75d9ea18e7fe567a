from __future__ import annotations

import numpy as np
import pytest

from models.imputation import (
    IMPUTERS,
    KnnImputer,
    MeanImputer,
    RidgeImputer,
    ZeroImputer,
    impute_missing_genes,
    observed_genes,
)
from models.preprocessing import Preprocessor


def correlated(n: int, seed: int, *, genes: int = 120, programmes: int = 4) -> np.ndarray:
    """Low-rank log-expression around 8 with gene-specific offsets: genes predict each other."""
    rng = np.random.default_rng(100)  # the same programmes for every draw
    loadings = rng.normal(size=(programmes, genes))
    offsets = rng.uniform(4.0, 12.0, size=genes)
    draw = np.random.default_rng(seed)
    return draw.normal(size=(n, programmes)) @ loadings + 0.3 * draw.normal(size=(n, genes)) + offsets


@pytest.fixture
def split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training and test matrices on the z-score scale, and a mask with 40 % of the genes missing."""
    train_raw, test_raw = correlated(200, 1), correlated(50, 2)
    pre = Preprocessor.fit(train_raw, [f"g{j}" for j in range(train_raw.shape[1])], log1p=False)
    observed = np.random.default_rng(3).random(train_raw.shape[1]) >= 0.4
    return pre.transform(train_raw), pre.transform(test_raw), observed


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_mean_fill_is_the_training_mean() -> None:
    train = np.array([[1.0, 10.0, 5.0], [3.0, 20.0, np.nan], [5.0, 30.0, 7.0]])
    x = np.array([[100.0, np.nan, np.nan], [200.0, -1.0, np.nan]])
    observed = np.array([True, False, True])
    out = MeanImputer().fit(train).transform(x, observed)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[100.0, 20.0, 6.0], [200.0, 20.0, 6.0]])  # observed NaN -> mean too


def test_zero_fill_gives_zeros() -> None:
    train = np.full((4, 3), 8.0)
    x = np.array([[7.0, 9.0, np.nan]])
    out = impute_missing_genes(x, np.array([True, False, True]), train, method="zero")
    np.testing.assert_array_equal(out, [[7.0, 0.0, 0.0]])


@pytest.mark.parametrize("method", ["ridge", "knn"])
def test_model_based_imputation_beats_the_mean_on_correlated_genes(
    split: tuple[np.ndarray, np.ndarray, np.ndarray], method: str
) -> None:
    train, test, observed = split
    x = np.where(observed, test, np.nan)
    mean = impute_missing_genes(x, observed, train, method="mean")
    model = impute_missing_genes(x, observed, train, method=method)
    np.testing.assert_allclose(model[:, observed], test[:, observed], rtol=1e-6, atol=1e-6)
    err_mean, err_model = rmse(mean[:, ~observed], test[:, ~observed]), rmse(model[:, ~observed], test[:, ~observed])
    assert err_mean == pytest.approx(1.0, abs=0.2)  # z-scores: the mean explains nothing
    assert err_model < 0.7 * err_mean, (err_model, err_mean)
    if method == "ridge":
        assert err_model < 0.4 * err_mean


def test_ridge_picks_a_small_penalty_for_clean_low_rank_data(split: tuple[np.ndarray, ...]) -> None:
    train, test, observed = split
    imputer = RidgeImputer().fit(train)
    imputer.transform(test, observed)
    assert imputer.alpha_ is not None and imputer.alpha_ > 0


def test_ridge_on_uncorrelated_genes_falls_back_towards_the_mean() -> None:
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(200, 60)), rng.normal(size=(40, 60))
    observed = np.arange(60) < 30
    ridge = RidgeImputer().fit(train).transform(test, observed)
    mean = MeanImputer().fit(train).transform(test, observed)
    assert rmse(ridge[:, ~observed], test[:, ~observed]) < 1.05 * rmse(mean[:, ~observed], test[:, ~observed])


def test_ridge_subsamples_training_rows(split: tuple[np.ndarray, ...]) -> None:
    train, test, observed = split
    imputer = RidgeImputer(max_samples=50, seed=1).fit(train)
    assert imputer.centred_.shape == (50, train.shape[1])
    out = imputer.transform(test, observed)
    assert np.isfinite(out).all()


def test_knn_with_one_neighbour_copies_the_nearest_training_row() -> None:
    train = np.array([[0.0, 0.0, 1.0], [10.0, 10.0, 2.0], [20.0, 20.0, 3.0]])
    x = np.array([[12.0, 11.0, np.nan], [19.0, 22.0, np.nan]])
    out = KnnImputer(k=1).fit(train).transform(x, np.array([True, True, False]))
    np.testing.assert_allclose(out[:, 2], [2.0, 3.0])
    out2 = KnnImputer(k=2).fit(train).transform(x, np.array([True, True, False]))
    np.testing.assert_allclose(out2[:, 2], [2.5, 2.5])


@pytest.mark.parametrize("method", sorted(IMPUTERS))
def test_nothing_missing_or_nothing_observed(method: str, split: tuple[np.ndarray, ...]) -> None:
    train, test, _ = split
    everything = np.ones(train.shape[1], dtype=bool)
    np.testing.assert_allclose(impute_missing_genes(test, everything, train, method=method), test, atol=1e-6)
    out = impute_missing_genes(test, ~everything, train, method=method)
    expected = 0.0 if method == "zero" else train.mean(axis=0)
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=1e-5)


def test_observed_genes_and_argument_checks() -> None:
    x = np.array([[1.0, np.nan, np.nan], [2.0, 3.0, np.nan]])
    np.testing.assert_array_equal(observed_genes(x), [True, True, False])
    imputer = MeanImputer().fit(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="boolean mask"):
        imputer.transform(x, np.array([1, 0, 1]))
    with pytest.raises(ValueError, match="fitted on 3"):
        imputer.transform(np.zeros((2, 4)), np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="unknown imputation method"):
        impute_missing_genes(x, observed_genes(x), np.zeros((3, 3)), method="median")
    with pytest.raises(ValueError, match="alphas"):
        RidgeImputer(alphas=(0.0,))
    with pytest.raises(ValueError, match="k must be"):
        KnnImputer(k=0)
    assert isinstance(ZeroImputer().fit(np.zeros((2, 3))), ZeroImputer)
