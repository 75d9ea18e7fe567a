"""Held-out accuracy when panel genes are missing at prediction time, per imputation method (issue 9).

For each cohort (``bench.calibration.COHORTS``: tissue_symbols/tissue, all_leukemia/mol.biol,
nci60/cancer_type; classes with one sample dropped) and seed: stratified 5-fold cross-validation. On each
training fold the product's preprocessing (``Preprocessor``: per-gene z-score, fitted on the fold) and
classifier (``fit_logistic_regression``, C=0.1) are fitted on the full panel. Each test fold is then
predicted with 0, 10, 30, 50 and 70 % of the panel's genes removed (a random subset per seed, fold and
fraction, the same subset for every method) and filled in by:

* ``mean``: the training mean (what ``Preprocessor.transform`` does with NaN; the product's default);
* ``ridge``: ``models.imputation.RidgeImputer``, kernel ridge from the observed to the missing genes over
  the training fold (penalty by leave-one-out);
* ``knn``: ``models.imputation.KnnImputer`` (k=10) on the observed genes;
* ``zero (raw)``: 0 on the raw log scale before standardising, for contrast (what a naive reindex-and-fillna(0)
  does).

Balanced accuracy is computed on the pooled out-of-fold predictions of each seed; the table gives the mean
and standard deviation over seeds.

Usage: ``.venv/bin/python bench/coverage.py [--seeds 5] [--cohorts tissue_symbols all_leukemia nci60]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

# One BLAS thread: on a few shared cores OpenBLAS's own threads make small solves much slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import balanced_accuracy_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.calibration import COHORTS, load  # noqa: E402
from models.classifiers import fit_logistic_regression  # noqa: E402
from models.imputation import KnnImputer, MeanImputer, RidgeImputer  # noqa: E402
from models.preprocessing import Preprocessor  # noqa: E402

MISSING = (0.0, 0.1, 0.3, 0.5, 0.7)
METHODS = ("mean", "ridge", "knn", "zero (raw)")
FOLDS = 5


def fill(method: str, raw: np.ndarray, observed: np.ndarray, pre: Preprocessor, imputers: dict) -> np.ndarray:
    """Model input (z-scores) for a test fold whose unobserved genes are NaN."""
    if method == "zero (raw)":
        return pre.transform(np.where(observed, raw, 0.0))
    z = pre.transform(raw)  # NaN -> 0.0, the training mean
    return z if method == "mean" else imputers[method].transform(z, observed)


def one_fold(
    x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, genes: list[str], rng: np.random.Generator
) -> dict[tuple[float, str], np.ndarray]:
    """Predicted classes of the test fold for every (missing fraction, method)."""
    pre = Preprocessor.fit(x[train], genes, log1p=False)
    z_train = pre.transform(x[train])
    classifier = fit_logistic_regression(z_train, y[train], C=0.1, seed=0)
    imputers: dict[str, MeanImputer] = {"ridge": RidgeImputer().fit(z_train), "knn": KnnImputer(k=10).fit(z_train)}
    out = {}
    for fraction in MISSING:
        observed = np.ones(len(genes), dtype=bool)
        observed[rng.choice(len(genes), int(round(fraction * len(genes))), replace=False)] = False
        raw = np.where(observed, x[test], np.nan)
        for method in METHODS if fraction > 0 else ("mean",):
            out[(fraction, method)] = classifier.predict(fill(method, raw, observed, pre, imputers))
        if fraction == 0:
            out.update({(0.0, m): out[(0.0, "mean")] for m in METHODS})
    return out


def one_seed(x: np.ndarray, y: np.ndarray, genes: list[str], seed: int) -> dict[tuple[float, str], float]:
    """Balanced accuracy of the pooled out-of-fold predictions for every (missing fraction, method)."""
    rng = np.random.default_rng(seed)
    predicted: dict[tuple[float, str], np.ndarray] = {}
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(x, y)
    for train, test in folds:
        for key, pred in one_fold(x, y, train, test, genes, rng).items():
            predicted.setdefault(key, np.empty_like(y))[test] = pred
    return {key: float(balanced_accuracy_score(y, pred)) for key, pred in predicted.items()}


def run(cohorts: list[str], seeds: int) -> pd.DataFrame:
    rows = []
    for cohort in cohorts:
        x, y, classes, genes = load(cohort, COHORTS[cohort])
        started = time.perf_counter()
        for seed in range(seeds):
            scores = one_seed(x, y, genes, seed)
            rows += [
                {"cohort": cohort, "seed": seed, "missing": f, "method": m, "bacc": s} for (f, m), s in scores.items()
            ]
        print(
            f"# {cohort}: {x.shape[0]} samples x {x.shape[1]} genes, {len(classes)} classes, {seeds} seeds x "
            f"{FOLDS} folds in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
    return pd.DataFrame(rows)


def print_table(df: pd.DataFrame, seeds: int) -> None:
    stats = df.groupby(["cohort", "method", "missing"], sort=False)["bacc"].agg(["mean", "std"])
    print(f"Held-out balanced accuracy (pooled 5-fold CV), mean ± sd over {seeds} seeds, by share of genes missing:\n")
    print("| cohort | imputation | " + " | ".join(f"{f:.0%} missing" for f in MISSING) + " |")
    print("|---|---|" + "---|" * len(MISSING))
    for cohort in df["cohort"].unique():
        for method in METHODS:
            cells = [
                f"{stats.loc[(cohort, method, f), 'mean']:.3f} ± {stats.loc[(cohort, method, f), 'std']:.3f}"
                for f in MISSING
            ]
            print(f"| {cohort} | {method} | " + " | ".join(cells) + " |")
    drop = df.pivot_table(index=["cohort", "method", "seed"], columns="missing", values="bacc")
    drop = drop.sub(drop[0.0], axis=0).groupby(["cohort", "method"]).mean()
    drop = drop.reindex(pd.MultiIndex.from_product([df["cohort"].unique(), METHODS]))
    print("\nChange from the full panel (mean over seeds; negative = worse):\n")
    print("| cohort | imputation | " + " | ".join(f"{f:.0%}" for f in MISSING[1:]) + " |")
    print("|---|---|" + "---|" * (len(MISSING) - 1))
    for (cohort, method), row in drop.iterrows():
        print(f"| {cohort} | {method} | " + " | ".join(f"{row[f]:+.3f}" for f in MISSING[1:]) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cohorts", nargs="+", default=list(COHORTS), choices=list(COHORTS))
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="The least populated class")  # nci60 has a class of 2
    print_table(run(args.cohorts, args.seeds), args.seeds)


if __name__ == "__main__":
    main()
