from __future__ import annotations

import json

import numpy as np
import pytest

from models.preprocessing import Preprocessor, looks_like_counts


def _counts(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(lam=np.linspace(1, 500, 20), size=(30, 20)).astype(np.float64)


def test_looks_like_counts() -> None:
    assert looks_like_counts(_counts())
    microarray = np.random.default_rng(0).uniform(2, 14, size=(10, 5))
    assert not looks_like_counts(microarray)
    assert not looks_like_counts(np.round(microarray))  # integers but max <= 100
    negative = _counts()
    negative[0, 0] = -1
    assert not looks_like_counts(negative)
    with_nan = _counts()
    with_nan[1, 1] = np.nan
    assert looks_like_counts(with_nan)


def test_fit_transform_counts_auto_log1p() -> None:
    x = _counts()
    genes = [f"G{i}" for i in range(20)]
    pre = Preprocessor.fit(x, genes)
    assert pre.log1p is True
    z = pre.transform(x)
    assert z.dtype == np.float32 and z.shape == (30, 20)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-4)
    np.testing.assert_allclose(pre.mean, np.log1p(x).mean(axis=0), rtol=1e-6)


def test_fit_no_log_for_microarray_and_constant_gene_std() -> None:
    x = np.random.default_rng(1).uniform(2, 14, size=(10, 3))
    x[:, 2] = 7.0
    pre = Preprocessor.fit(x, ["A", "B", "C"])
    assert pre.log1p is False
    assert pre.std[2] == 1.0 and pre.mean[2] == pytest.approx(7.0)
    assert pre.transform(x)[:, 2].tolist() == [0.0] * 10
    assert Preprocessor.fit(x, ["A", "B", "C"], log1p=True).log1p is True


def test_nan_ignored_in_fit_and_imputed_to_zero() -> None:
    x = np.array([[1.0, 10.0], [3.0, np.nan], [5.0, 20.0]])
    pre = Preprocessor.fit(x, ["A", "B"], log1p=False)
    assert pre.mean.tolist() == pytest.approx([3.0, 15.0])
    assert pre.std.tolist() == pytest.approx([np.sqrt(8 / 3), 5.0])
    z = pre.transform(np.array([[np.nan, 25.0]]))
    assert z.tolist() == [[0.0, pytest.approx(2.0)]]


def test_transform_checks_width() -> None:
    pre = Preprocessor.fit(np.ones((3, 2)), ["A", "B"])
    with pytest.raises(ValueError, match="3 columns but the preprocessor has 2 genes"):
        pre.transform(np.ones((3, 3)))


def test_dict_round_trip_and_validation() -> None:
    pre = Preprocessor.fit(_counts(), [f"G{i}" for i in range(20)])
    d = json.loads(json.dumps(pre.to_dict()))
    back = Preprocessor.from_dict(d)
    assert back.genes == pre.genes and back.log1p == pre.log1p
    np.testing.assert_array_equal(back.mean, pre.mean)
    np.testing.assert_array_equal(back.transform(_counts(5)), pre.transform(_counts(5)))
    d["mean"] = d["mean"][:-1]
    with pytest.raises(ValueError, match="lengths differ: 20 genes, 19 means"):
        Preprocessor.from_dict(d)
