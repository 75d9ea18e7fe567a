"""Calibration, prediction sets and OOD flags of fitted predictors, on real cohorts (``../shared/data``).

Figures asserted below (test 20 %, calibration 20 % of the pool, logistic regression C = 0.1 on the rest,
the 2,000 most variable genes for speed; 40 random splits of tissue_symbols, 20 of the others;
bench/calibration.py runs the same recipe on all genes, with a torch head too):

| cohort (label, classes) | n fit / cal / test | coverage of 90 % LAC sets | test ECE before -> after |
|---|---|---|---|
| tissue_symbols (tissue, 7) | 120 / 31 / 38 | 0.933 | 0.037 -> 0.016 |
| all_leukemia (mol.biol, 4) | 80 / 20 / 26 | 0.914 | 0.127 -> 0.130 |
| nci60 (cancer_type, 9) | 37 / 10 / 12 | 0.933 | 0.229 -> 0.208 |
| all 80 splits | | | 0.107 -> 0.092 |
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from models import checkpoint
from models.classifiers import fit_logistic_regression
from models.evaluation import split_train_test
from models.preprocessing import Preprocessor
from models.uncertainty import (
    Uncertainty,
    bootstrap_intervals,
    calibration_split,
    fit_uncertainty,
    report_on_test,
)
from tests.conftest import SHARED_DATA

COHORTS = {"tissue_symbols": "tissue", "all_leukemia": "mol.biol", "nci60": "cancer_type"}
SPLITS = {"tissue_symbols": 40, "all_leukemia": 20, "nci60": 20}  # tissue_symbols is cheap: more splits


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread() -> Iterator[None]:
    """OpenBLAS's own threads make small solves many times slower on two shared cores."""
    with threadpool_limits(limits=1):
        yield


def _load(cohort: str, max_genes: int = 2000) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Expression, class indices (singleton classes dropped), genes; the most variable ``max_genes`` genes."""
    x = pd.read_parquet(SHARED_DATA / cohort / "expression.parquet")
    labels = pd.read_csv(SHARED_DATA / cohort / "labels.csv", dtype=str).set_index("sample_id")[COHORTS[cohort]]
    labels = labels.reindex(x.index)
    keep = (labels.notna() & labels.map(labels.value_counts()).ge(2)).to_numpy()
    values = x.to_numpy(dtype=np.float64)[keep]
    top = np.sort(np.argsort(-values.var(axis=0))[:max_genes])  # unsupervised filter, for speed
    return values[:, top], np.unique(labels[keep].to_numpy(), return_inverse=True)[1], [x.columns[j] for j in top]


def _logreg(x: np.ndarray, y: np.ndarray, genes: list[str]) -> checkpoint.LogisticRegressionModel:
    pre = Preprocessor(genes, False, np.zeros(len(genes), np.float32), np.ones(len(genes), np.float32))
    payload = checkpoint.logreg_payload(fit_logistic_regression(x, y, C=0.1), pre, [str(c) for c in range(y.max() + 1)])
    return checkpoint.logreg_from_payload(payload)[0]


def _one_split(x: np.ndarray, y: np.ndarray, genes: list[str], seed: int) -> dict[str, float]:
    """The fit job's recipe on one random split, without the OOD scorer (not needed here)."""
    pool, test = split_train_test(y, None, test_size=0.2, seed=seed)
    fit_rel, cal_rel = calibration_split(y[pool], None, seed=seed)
    fit, cal = pool[fit_rel], pool[cal_rel]
    pre = Preprocessor.fit(x[fit], genes, log1p=False)
    model = _logreg(pre.transform(x[fit]), y[fit], genes)
    state = fit_uncertainty(model, pre.transform(x[fit]), y[fit], pre.transform(x[cal]), y[cal], with_ood=False)
    report = report_on_test(state, model, pre.transform(x[test]), y[test], n_calibration=cal.size)
    return {"coverage": report["conformal"]["test_coverage"]["0.9"], **report["test"]}


@pytest.fixture(scope="module")
def splits() -> dict[str, pd.DataFrame]:
    results = {}
    for cohort in COHORTS:
        x, y, genes = _load(cohort)
        results[cohort] = pd.DataFrame([_one_split(x, y, genes, seed) for seed in range(SPLITS[cohort])])
    return results


@pytest.mark.slow
def test_90_percent_prediction_sets_cover_85_to_95_percent_of_test_samples(splits: dict[str, pd.DataFrame]) -> None:
    coverage = {cohort: float(df["coverage"].mean()) for cohort, df in splits.items()}
    assert all(0.85 <= c <= 0.95 for c in coverage.values()), coverage


@pytest.mark.slow
def test_temperature_scaling_does_not_worsen_test_ece(splits: dict[str, pd.DataFrame]) -> None:
    pooled = pd.concat(splits.values())
    assert pooled["ece_after"].mean() < pooled["ece_before"].mean()
    assert pooled["brier_after"].mean() < pooled["brier_before"].mean()
    ece = {cohort: (df["ece_before"].mean(), df["ece_after"].mean()) for cohort, df in splits.items()}
    # Per cohort, within the noise of 12-38 test samples (all_leukemia: +0.002).
    assert all(after <= before + 0.01 for before, after in ece.values()), ece
    assert ece["tissue_symbols"][1] < ece["tissue_symbols"][0] / 2  # logistic regression is under-confident there


@pytest.mark.slow
def test_samples_from_elsewhere_are_flagged_and_in_distribution_ones_are_not() -> None:
    """tissue_symbols's predictor against all_leukemia's values put on its 500-gene panel and random noise."""
    x, y, genes = _load("tissue_symbols")
    pool, test = split_train_test(y, None, test_size=0.2, seed=0)
    fit_rel, cal_rel = calibration_split(y[pool], None, seed=0)
    fit, cal = pool[fit_rel], pool[cal_rel]
    pre = Preprocessor.fit(x[fit], genes, log1p=False)
    model = _logreg(pre.transform(x[fit]), y[fit], genes)
    state = fit_uncertainty(model, pre.transform(x[fit]), y[fit], pre.transform(x[cal]), y[cal])
    rng = np.random.default_rng(0)
    leukemia = pd.read_parquet(SHARED_DATA / "all_leukemia" / "expression.parquet").to_numpy(dtype=np.float64)
    foreign = {
        "all_leukemia": leukemia[:, rng.choice(leukemia.shape[1], size=len(genes), replace=False)],
        "uniform noise": rng.uniform(x.min(), x.max(), size=(50, len(genes))),
    }
    for name, raw in foreign.items():
        out = state.predict(model, pre.transform(raw))
        assert out.ood_flag is not None and out.ood_flag.mean() == 1.0, name
    inside = state.predict(model, pre.transform(x[test]))
    assert inside.ood_flag is not None and inside.ood_flag.mean() <= 0.05
    assert inside.members is not None and inside.members.sum(axis=1).mean() < 1.5


def test_uncertainty_round_trips_and_old_artifacts_load_without_it() -> None:
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(3), 20)
    x = rng.normal(size=(60, 8)) + np.eye(3, 8)[y] * 2
    genes = [f"g{i}" for i in range(8)]
    model = _logreg(x[:40], y[:40], genes)
    state = fit_uncertainty(model, x[:40], y[:40], x[40:], y[40:])
    pre = Preprocessor.fit(x, genes, log1p=False)
    pipeline = fit_logistic_regression(x[:40], y[:40])
    payload = checkpoint.logreg_payload(pipeline, pre, ["a", "b", "c"], uncertainty=state.to_dict())
    _, _, info = checkpoint.predictor_from_payload(checkpoint.loads(checkpoint.dumps(payload)))
    back = Uncertainty.from_dict(info["uncertainty"])
    assert back.temperature == state.temperature and back.conformal is not None and back.ood is not None
    a, b = back.predict(model, x, coverage=0.8), state.predict(model, x, coverage=0.8)
    assert (a.members == b.members).all() and np.allclose(a.ood_score, b.ood_score)
    del payload["uncertainty"]  # an artifact written before calibration existed
    _, _, info = checkpoint.predictor_from_payload(checkpoint.loads(checkpoint.dumps(payload)))
    identity = Uncertainty.from_dict(info["uncertainty"]).predict(model, x)
    assert identity.members is None and identity.ood_flag is None
    np.testing.assert_allclose(identity.proba, model.predict_proba(x), atol=1e-6)


def test_calibration_split_keeps_groups_apart_and_skips_small_pools() -> None:
    y = np.repeat([0, 1], 30)
    groups = np.repeat(np.arange(20), 3)
    fit, cal = calibration_split(y, groups, seed=1)
    assert cal.size > 0 and not set(groups[fit]) & set(groups[cal])
    assert np.union1d(fit, cal).tolist() == list(range(60))
    fit, cal = calibration_split(y[:10], None)
    assert fit.size == 10 and cal.size == 0
    lonely = np.r_[y, 2]  # class 2 has one sample: it stays with the head, whatever the seed
    assert all(60 in calibration_split(lonely, None, seed=s)[0] for s in range(5))
    fit, cal = calibration_split(lonely, np.r_[groups, 7], seed=1)  # and so does its group (7)
    assert set(np.flatnonzero(np.r_[groups, 7] == 7)) <= set(fit) and not set(groups[cal[cal < 60]]) & {7}


def test_bootstrap_intervals_bracket_the_point_estimate() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=200)
    proba = np.eye(3)[np.where(rng.random(200) < 0.8, y, (y + 1) % 3)]
    boot = bootstrap_intervals(y, proba)
    accuracy = float((proba.argmax(axis=1) == y).mean())
    lo, hi = boot["accuracy"]
    assert lo < accuracy < hi and 0.08 < hi - lo < 0.15  # about 4 standard errors of sqrt(0.16 / 200)
