"""Out-of-distribution detection measured: leave one class out, score it against in-distribution test samples.

For each cohort, each class in turn is removed before fitting; the rest is split as the fit job splits it
(test 20 %, calibration 20 % of the pool), a predictor is fitted, and ``fit_uncertainty`` fits its OOD
scorer. The held-out class's samples (out of distribution) are scored beside the in-distribution test
samples; the AUROC of the score separating them is reported, averaged over seeds, per held-out class.

Scores compared:

* ``exprssl (expression)``: the default for logistic-regression predictors: class-conditional Mahalanobis on
  20 principal components of the standardised expression plus the normalised residual off those
  components (``models.ood``);
* ``20-PC Mahalanobis``: the simple baseline, the same class-conditional Mahalanobis distance (shared
  Ledoit-Wolf covariance) on 20 principal components, without the residual term;
* with ``--torch``, ``exprssl (embedding)``: the default for encoder predictors, Mahalanobis in the
  representation of a SCARF encoder (pretrained on the in-distribution training samples, 200 epochs)
  fine-tuned with a linear head.

Also the share of samples flagged at the 99th percentile for in-distribution test samples, for the held-out
class, and (tissue_symbols only) for samples that do not belong on its panel: all_leukemia's log2 values
for 500 random probe sets named as tissue_symbols's genes, uniform noise over the cohort's value range, and
Gaussian noise with each gene's mean and standard deviation.

Usage: ``.venv/bin/python bench/ood.py [--seeds 3] [--torch]``; prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# One BLAS thread: on a few shared cores OpenBLAS's own threads make small SVDs and solves 10-40x slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.calibration import COHORTS, DATA, load, logreg  # noqa: E402
from models.classifiers import HeadParams, fit_encoder_classifier  # noqa: E402
from models.evaluation import split_train_test  # noqa: E402
from models.methods import METHODS  # noqa: E402
from models.ood import fit_mahalanobis  # noqa: E402
from models.preprocessing import Preprocessor  # noqa: E402
from models.uncertainty import calibration_split, fit_uncertainty, ood_features  # noqa: E402


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    return float(roc_auc_score(np.r_[np.zeros(inside.size), np.ones(outside.size)], np.r_[inside, outside]))


def scarf_finetuned(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> torch.nn.Module:
    method = METHODS["scarf"]
    ssl = method(x.shape[1], method.params_class.from_dict({"epochs": 200}), device="cpu")
    ssl.fit(x, seed=seed)
    classifier, _ = fit_encoder_classifier(
        ssl.encoder, x, y, None, None, n_classes, freeze_encoder=False, params=HeadParams(max_epochs=100),
        seed=seed, device="cpu",
    )
    return classifier


def foreign_samples(x: np.ndarray, n: int = 60) -> dict[str, np.ndarray]:
    """Samples that do not belong, on the raw scale of ``x`` ``(N, G)``: another cohort put on the same panel
    (all_leukemia's log2 values of G random probe sets), uniform noise over ``x``'s value range, and Gaussian
    noise matched to each gene's mean and standard deviation (the hardest: only the genes' correlations
    are lost)."""
    rng = np.random.default_rng(0)
    leukemia = pd.read_parquet(DATA / "all_leukemia" / "expression.parquet").to_numpy()
    columns = rng.choice(leukemia.shape[1], size=x.shape[1], replace=False)
    return {
        "all_leukemia on the panel": leukemia[:n, columns].astype(np.float64),
        "uniform noise": rng.uniform(x.min(), x.max(), size=(n, x.shape[1])),
        "per-gene Gaussian noise": rng.normal(x.mean(axis=0), x.std(axis=0), size=(n, x.shape[1])),
    }


def one_class_out(x, y, genes, held, seed, use_torch, foreign):  # noqa: ANN001, ANN201 - bench glue
    inside = np.flatnonzero(y != held)
    classes, y_in = np.unique(y[inside], return_inverse=True)
    pool, test = split_train_test(y_in, None, test_size=0.2, seed=seed)
    fit_rel, cal_rel = calibration_split(y_in[pool], None, seed=seed)
    fit, cal = pool[fit_rel], pool[cal_rel]
    pre = Preprocessor.fit(x[inside[fit]], genes, log1p=False)
    xf, xc, xt = (pre.transform(x[inside[i]]) for i in (fit, cal, test))
    xo = pre.transform(x[y == held])
    row: dict[str, float] = {}
    model = logreg(xf, y_in[fit], classes.size, seed)
    state = fit_uncertainty(model, xf, y_in[fit], xc, y_in[cal], seed=seed)
    assert state.ood is not None
    s_in, s_out = state.ood.score(xt), state.ood.score(xo)
    row["exprssl (expression)"] = auroc(s_in, s_out)
    row["flag_in"] = float((state.ood.percentile(s_in) > 99).mean())
    row["flag_out"] = float((state.ood.percentile(s_out) > 99).mean())
    for name, raw in foreign.items():
        row[f"flag {name}"] = float((state.ood.percentile(state.ood.score(pre.transform(raw))) > 99).mean())
    base = fit_mahalanobis(np.concatenate([xf, xc]), np.r_[y_in[fit], y_in[cal]], space="expression",
                           n_components=20)
    row["20-PC Mahalanobis"] = auroc(base.score(xt), base.score(xo))
    if use_torch:
        clf = scarf_finetuned(np.concatenate([xf, xc]), np.r_[y_in[fit], y_in[cal]], classes.size, seed)
        emb = fit_uncertainty(clf, xf, y_in[fit], xc, y_in[cal], seed=seed)
        assert emb.ood is not None
        e_in, e_out = emb.ood.score(ood_features(clf, xt)), emb.ood.score(ood_features(clf, xo))
        row["exprssl (embedding)"] = auroc(e_in, e_out)
        row["flag_in_embedding"] = float((emb.ood.percentile(e_in) > 99).mean())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--torch", action="store_true", help="also the embedding score (tissue_symbols)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for cohort, column in COHORTS.items():
        x, y, classes, genes = load(cohort, column)
        foreign = foreign_samples(x) if cohort == "tissue_symbols" else {}
        use_torch = args.torch and cohort == "tissue_symbols"
        started = time.perf_counter()
        rows = {}
        for held, name in enumerate(classes):
            runs = [one_class_out(x, y, genes, held, s, use_torch, foreign) for s in range(args.seeds)]
            rows[name] = pd.DataFrame(runs).mean()
            rows[name]["n"] = int((y == held).sum())
        table = pd.DataFrame(rows).T
        print(f"# {cohort}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        print_table(cohort, column, table, args.seeds)


def print_table(cohort: str, column: str, table: pd.DataFrame, seeds: int) -> None:
    scores = [c for c in ("exprssl (expression)", "exprssl (embedding)", "20-PC Mahalanobis") if c in table]
    print(f"\n{cohort} ({column}), AUROC held-out class vs in-distribution test, mean over {seeds} seeds:\n")
    print("| held-out class | n | " + " | ".join(scores) + " | held-out flagged (99th pct) |")
    print("|---|---|" + "---|" * len(scores) + "---|")
    for name, r in table.iterrows():
        print(f"| {name} | {r.n:.0f} | " + " | ".join(f"{r[s]:.3f}" for s in scores) + f" | {r.flag_out:.2f} |")
    print("| **mean** | | " + " | ".join(f"**{table[s].mean():.3f}**" for s in scores)
          + f" | {table.flag_out.mean():.2f} |")
    print("| lowest | | " + " | ".join(f"{table[s].min():.3f}" for s in scores) + " | |")
    flags = [f"in-distribution test samples flagged: {table.flag_in.mean():.3f}"]
    if "flag_in_embedding" in table:
        flags.append(f"(embedding score: {table.flag_in_embedding.mean():.3f})")
    flags += [f"{c.removeprefix('flag ')} flagged: {table[c].mean():.2f}" for c in table if c.startswith("flag ")]
    print("\n" + "; ".join(flags) + ".")


if __name__ == "__main__":
    main()
