"""Calibration and prediction sets of fitted predictors on real cohorts, over many random splits.

For each cohort and seed the fit job's own recipe runs: a stratified test split (20 %), a calibration split
(20 % of the training pool, ``models.uncertainty.calibration_split``), the head trained on the rest, then
``fit_uncertainty`` (temperature and split-conformal scores on the calibration split) and
``report_on_test``. Figures are means (and standard deviations) over seeds of:

* the empirical coverage of the 90 % prediction sets on the test split (LAC, the default; APS beside it),
  their mean size and the share of single-label sets;
* the expected calibration error (15 bins) and Brier score on the test split before and after temperature
  scaling, and the fitted temperature.

Cohorts (``../shared/data``): tissue_symbols (tissue, 7 classes), all_leukemia (mol.biol, 4 classes after
dropping the two singletons), nci60 (cancer_type, 9 classes after dropping singletons). Heads: logistic
regression (C = 0.1) on every cohort; with ``--torch`` also a fine-tuned MLP from scratch (the paper's
encoder, Adam 1e-4, early stopping) on tissue_symbols and all_leukemia.

Usage: ``.venv/bin/python bench/calibration.py [--seeds 20] [--torch]``; prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

# One BLAS thread: on a few shared cores OpenBLAS's own threads make small SVDs and solves 10-40x slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import checkpoint  # noqa: E402
from models.classifiers import HeadParams, fit_encoder_classifier, fit_logistic_regression  # noqa: E402
from models.encoders import MLPEncoder  # noqa: E402
from models.evaluation import split_train_test, validation_split  # noqa: E402
from models.preprocessing import Preprocessor  # noqa: E402
from models.uncertainty import ProbabilisticClassifier, calibration_split, fit_uncertainty, report_on_test  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COHORTS = {"tissue_symbols": "tissue", "all_leukemia": "mol.biol", "nci60": "cancer_type"}


def load(cohort: str, column: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Expression ``(N, G)``, class indices, class names and genes; classes with one sample dropped."""
    x = pd.read_parquet(DATA / cohort / "expression.parquet")
    labels = pd.read_csv(DATA / cohort / "labels.csv", dtype=str).set_index("sample_id")[column]
    labels = labels.reindex(x.index)
    keep = labels.notna() & labels.map(labels.value_counts()).ge(2)
    classes, y = np.unique(labels[keep].to_numpy(), return_inverse=True)
    return x.to_numpy()[keep.to_numpy()].astype(np.float64), y, [str(c) for c in classes], [str(g) for g in x.columns]


Fitter = Callable[[np.ndarray, np.ndarray, int, int], ProbabilisticClassifier]


def logreg(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> ProbabilisticClassifier:
    pipeline = fit_logistic_regression(x, y, C=0.1, seed=seed)
    genes = [str(i) for i in range(x.shape[1])]
    pre = Preprocessor(genes, False, np.zeros(x.shape[1], np.float32), np.ones(x.shape[1], np.float32))
    payload = checkpoint.logreg_payload(pipeline, pre, [str(c) for c in range(n_classes)])
    return checkpoint.logreg_from_payload(payload)[0]


def mlp(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> ProbabilisticClassifier:
    torch.manual_seed(seed)
    val = validation_split(y, None, seed=seed)
    fit, held = (val[0], val[1]) if val else (np.arange(y.size), None)
    classifier, _ = fit_encoder_classifier(
        MLPEncoder(x.shape[1]), x[fit], y[fit], None if held is None else x[held], None if held is None else y[held],
        n_classes, freeze_encoder=False, params=HeadParams(), seed=seed, device="cpu",
    )
    return classifier


def one_split(x: np.ndarray, y: np.ndarray, genes: list[str], n_classes: int, seed: int, fitter: Fitter) -> dict:
    pool, test = split_train_test(y, None, test_size=0.2, seed=seed)
    fit_rel, cal_rel = calibration_split(y[pool], None, seed=seed)
    fit, cal = pool[fit_rel], pool[cal_rel]
    pre = Preprocessor.fit(x[fit], genes, log1p=False)
    model = fitter(pre.transform(x[fit]), y[fit], n_classes, seed)
    xf, xc, xt = pre.transform(x[fit]), pre.transform(x[cal]), pre.transform(x[test])
    lac = fit_uncertainty(model, xf, y[fit], xc, y[cal], seed=seed)
    aps = fit_uncertainty(model, xf, y[fit], xc, y[cal], method="aps", prior_strength=0.0, with_ood=False)
    r_lac = report_on_test(lac, model, xt, y[test], n_calibration=cal.size)
    r_aps = report_on_test(aps, model, xt, y[test], n_calibration=cal.size)
    t, plain = r_lac["test"], r_aps["test"]  # the APS run fits T without its prior
    return {
        "n_fit": fit.size, "n_cal": cal.size, "n_test": test.size,
        "accuracy": float((model.predict_proba(xt).argmax(1) == y[test]).mean()),
        "coverage_lac": r_lac["conformal"]["test_coverage"]["0.9"],
        "size_lac": r_lac["conformal"]["test_mean_set_size"]["0.9"],
        "single_lac": r_lac["conformal"]["test_share_single_label"]["0.9"],
        "coverage_aps": r_aps["conformal"]["test_coverage"]["0.9"],
        "size_aps": r_aps["conformal"]["test_mean_set_size"]["0.9"],
        "temperature": t["temperature"],
        "ece_before": t["ece_before"], "ece_after": t["ece_after"], "ece_after_plain": plain["ece_after"],
        "nll_before": t["nll_before"], "nll_after": t["nll_after"], "nll_after_plain": plain["nll_after"],
        "temperature_plain": plain["temperature"],
        "brier_before": t["brier_before"], "brier_after": t["brier_after"],
        "ood_flag_rate_test": r_lac["ood"]["test_flag_rate"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--torch", action="store_true", help="also a fine-tuned MLP on two cohorts")
    args = parser.parse_args()
    torch.set_num_threads(1)
    heads: list[tuple[str, Fitter, list[str]]] = [("logistic regression", logreg, list(COHORTS))]
    if args.torch:
        heads.append(("MLP fine-tuned (scratch)", mlp, ["tissue_symbols", "all_leukemia"]))
    rows = []
    for head, fitter, cohorts in heads:
        for cohort in cohorts:
            x, y, classes, genes = load(cohort, COHORTS[cohort])
            started = time.perf_counter()
            runs = pd.DataFrame([one_split(x, y, genes, len(classes), s, fitter) for s in range(args.seeds)])
            mean, std = runs.mean(), runs.std(ddof=0)
            rows.append({"cohort": cohort, "head": head, "seconds": time.perf_counter() - started,
                         **{f"{k}": mean[k] for k in runs}, **{f"{k}_sd": std[k] for k in runs},
                         "cov_lac_min": runs["coverage_lac"].min(), "ece_better_share":
                         float((runs["ece_after"] <= runs["ece_before"]).mean())})
            print(f"# {cohort} / {head}: {args.seeds} splits in {rows[-1]['seconds']:.0f} s", file=sys.stderr)
    print_tables(pd.DataFrame(rows), args.seeds)


def print_tables(df: pd.DataFrame, seeds: int) -> None:
    print(f"Prediction sets at 90 % target coverage, test split, mean ± sd over {seeds} random splits:\n")
    print("| cohort | head | n fit / cal / test | accuracy | coverage LAC (min) | set size LAC | single-label share "
          "| coverage APS | set size APS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for _, r in df.iterrows():
        print(f"| {r.cohort} | {r['head']} | {r.n_fit:.0f} / {r.n_cal:.0f} / {r.n_test:.0f} | {r.accuracy:.3f} "
              f"| {r.coverage_lac:.3f} ± {r.coverage_lac_sd:.3f} ({r.cov_lac_min:.2f}) | {r.size_lac:.2f} "
              f"| {r.single_lac:.2f} | {r.coverage_aps:.3f} ± {r.coverage_aps_sd:.3f} | {r.size_aps:.2f} |")
    print(f"\nTemperature scaling, test split, mean ± sd over {seeds} random splits (ECE: 15 equal-width bins):\n")
    print("| cohort | head | temperature | ECE before | ECE after | splits not worse | Brier before -> after "
          "| NLL before -> after | without the prior: T, ECE after, NLL after | test flagged OOD (99th pct) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for _, r in df.iterrows():
        print(f"| {r.cohort} | {r['head']} | {r.temperature:.2f} ± {r.temperature_sd:.2f} "
              f"| {r.ece_before:.3f} ± {r.ece_before_sd:.3f} | {r.ece_after:.3f} ± {r.ece_after_sd:.3f} "
              f"| {r.ece_better_share:.0%} | {r.brier_before:.3f} -> {r.brier_after:.3f} "
              f"| {r.nll_before:.3f} -> {r.nll_after:.3f} "
              f"| {r.temperature_plain:.2f}, {r.ece_after_plain:.3f}, {r.nll_after_plain:.3f} "
              f"| {r.ood_flag_rate_test:.3f} |")


if __name__ == "__main__":
    main()
