from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import OAS, LedoitWolf
from sklearn.decomposition import PCA

from models import checkpoint
from models.ood import MahalanobisOOD, fit_mahalanobis, gene_drift, shrunk_covariance


def _classes(n_per: int = 40, dim: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian classes with correlated features and shifted means."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    y = np.repeat(np.arange(3), n_per)
    x = rng.normal(size=(y.size, dim)) @ mixing + 2.0 * np.eye(3, dim)[y]
    return x, y


@pytest.mark.parametrize(("method", "estimator"), [("ledoit_wolf", LedoitWolf), ("oas", OAS)])
def test_shrinkage_matches_sklearn(method: str, estimator: type) -> None:
    x = np.random.default_rng(0).normal(size=(30, 20)) * np.linspace(0.2, 3.0, 20)
    covariance, shrinkage = shrunk_covariance(torch.from_numpy(x), method)
    reference = estimator(assume_centered=True).fit(x)
    assert shrinkage == pytest.approx(reference.shrinkage_)
    np.testing.assert_allclose(covariance.numpy(), reference.covariance_, atol=1e-12)


def test_score_is_the_smallest_class_mahalanobis_distance() -> None:
    x, y = _classes()
    ood = fit_mahalanobis(x, y)
    means = np.stack([x[y == k].mean(axis=0) for k in range(3)])
    precision = LedoitWolf(assume_centered=True).fit(x - means[y]).precision_
    new = np.random.default_rng(1).normal(size=(7, x.shape[1])) * 3
    brute = np.min([np.einsum("ij,jk,ik->i", new - m, precision, new - m) for m in means], axis=0)
    np.testing.assert_allclose(ood.score(new), brute / x.shape[1], rtol=1e-8)
    assert ood.summary()["space"] == "embedding" and ood.dim == x.shape[1] and ood.reference.size == y.size


def test_expression_score_is_the_ppca_mahalanobis_distance() -> None:
    """Wide data (G > N): components from the Gram matrix equal sklearn's PCA; T2 + Q / sigma2 by hand."""
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(2), 15)
    x = rng.normal(size=(30, 4)) @ rng.normal(size=(4, 80)) + 0.3 * rng.normal(size=(30, 80)) + 1.5 * y[:, None]
    ood = fit_mahalanobis(x, y, space="expression", n_components=5, residual=True)
    pca = PCA(5).fit(x)
    np.testing.assert_allclose(np.abs(ood.core.components @ pca.components_.T), np.eye(5), atol=1e-8)
    z = pca.transform(x)
    means = np.stack([z[y == k].mean(axis=0) for k in range(2)])
    precision = LedoitWolf(assume_centered=True).fit(z - means[y]).precision_
    sigma2 = ((x - pca.mean_ - pca.inverse_transform(z) + pca.mean_) ** 2).sum(axis=1).mean() / (80 - 5)
    new = rng.normal(size=(4, 80))
    zn = pca.transform(new)
    t2 = np.min([np.einsum("ij,jk,ik->i", zn - m, precision, zn - m) for m in means], axis=0)
    q = ((new - pca.inverse_transform(zn)) ** 2).sum(axis=1)
    np.testing.assert_allclose(ood.score(new), (t2 + q / sigma2) / 80, rtol=1e-6)


def test_percentiles_are_calibrated_in_distribution_and_flag_far_samples() -> None:
    x_all, y_all = _classes(n_per=300)
    order = np.random.default_rng(5).permutation(y_all.size)
    x, y, fresh = x_all[order[:300]], y_all[order[:300]], x_all[order[300:]]
    ood = fit_mahalanobis(x, y, seed=0)
    percentile = ood.percentile(ood.score(fresh))
    # Out-of-fold reference scores: new in-distribution samples land near uniformly on the percentile scale.
    assert np.mean(percentile > 90) == pytest.approx(0.10, abs=0.05)
    assert np.mean(percentile > 99) < 0.04
    far = fresh + 6.0 * np.random.default_rng(4).choice([-1.0, 1.0], size=fresh.shape)
    assert (ood.percentile(ood.score(far)) > 99).all()
    assert (ood.percentile(np.array([-1.0, 1e9])) == [0.0, 100.0]).all()


def test_state_round_trips_through_a_weights_only_payload() -> None:
    x, y = _classes()
    for ood in (fit_mahalanobis(x, y), fit_mahalanobis(x, y, space="expression", n_components=4, residual=True)):
        back = MahalanobisOOD.from_dict(checkpoint.loads(checkpoint.dumps({"o": ood.to_dict()}))["o"])
        np.testing.assert_allclose(back.score(x[:5]), ood.score(x[:5]))
        assert back.summary() == ood.summary()
    state = fit_mahalanobis(x, y).to_dict()
    state["precision"] = state["precision"][:3]
    with pytest.raises(ValueError, match="inconsistent"):
        MahalanobisOOD.from_dict(state)


def test_gene_drift_ranks_genes_by_standardised_mean_difference() -> None:
    z = np.array([[0.1, 3.0, -1.0, 0.0], [0.1, 1.0, -2.0, 0.0]])
    observed = np.array([[True, True, True, False], [True, True, False, False]])
    top, n_compared, mean_abs = gene_drift(z, observed, ["a", "b", "c", "d"], top=2)
    # b: (3 + 1) / 2 = 2; c: only its observed value, -1; a: 0.1; d never observed (imputed) is left out.
    assert [(g["gene"], g["smd"]) for g in top] == [("b", 2.0), ("c", -1.0)]
    assert n_compared == 3 and mean_abs == pytest.approx((0.1 + 2.0 + 1.0) / 3)
