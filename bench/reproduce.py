"""Run the label-efficiency protocol on the real cohorts of ../shared/data and print markdown tables.

Usage (what made bench/RESULTS.md is recorded there):

    .venv/bin/python bench/reproduce.py --seeds 5 > bench/RESULTS.md

Each SSL method is pretrained per seed on the non-test samples only, with the paper's hyper-parameters
unless --epochs-scale shrinks every method's epoch count. Baselines: the same MLP from scratch (the
paper's), logistic regression and PCA + logistic regression on standardised expression.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.methods import METHODS  # noqa: E402
from models.protocol import METRICS, ProtocolConfig, ProtocolResult, fraction_label, run_protocol  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class Task:
    cohort: str
    label: str
    note: str


TASKS = (
    Task("all_leukemia", "mol.biol", "ALL (Chiaretti 2004), 128 x 12,625 probe sets, molecular subtype; "
         "singleton classes dropped (4 classes, majority 0.59)"),
    Task("nci60", "cancer_type", "NCI-60 (Ross 2000), 64 x 6,830 genes, cancer type; singleton classes dropped"),
    Task("tissue_symbols", "tissue", "seven tissues (Zilliox & Irizarry), 189 x 500 genes; an easy task"),
)


def load(task: Task) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None]:
    """Labelled samples with classes of at least two members; unlabelled ones for pretraining."""
    x = pd.read_parquet(DATA / task.cohort / "expression.parquet")
    x.index = x.index.astype(str)
    labels = pd.read_csv(DATA / task.cohort / "labels.csv", dtype=str).set_index("sample_id")[task.label]
    labels = labels.reindex(x.index)
    counts = labels.value_counts()
    keep = labels.isin(counts[counts >= 2].index)
    classes = sorted(labels[keep].unique())
    y = labels[keep].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    unlabelled = x[~keep].to_numpy(np.float32)
    return x[keep].to_numpy(np.float32), y, classes, unlabelled if len(unlabelled) else None


def scaled_params(scale: float) -> dict[str, dict[str, int]]:
    if scale == 1.0:
        return {}
    return {m: {"epochs": max(1, round(cls.params_class().epochs * scale))} for m, cls in METHODS.items()}


def table(result: ProtocolResult, metric: str, fractions: list[float]) -> list[str]:
    lines = [f"| model | {' | '.join(fraction_label(f) for f in fractions)} |", "|---|" + "---|" * len(fractions)]
    models = sorted({e["model"] for e in result.summary}, key=lambda m: ("/" in m, m))
    cells = {(e["model"], e["fraction"]): (e[metric], e["n_seeds"]) for e in result.summary}
    for model in models:
        row = []
        for f in fractions:
            value, n_seeds = cells.get((model, f), (None, 0))
            text = "n/a" if value is None else f"{value['mean']:.3f} ± {value['std']:.3f}"
            if value is not None and value["n"] < n_seeds:  # undefined on some seeds' test splits
                text += f" ({value['n']} of {n_seeds} seeds)"
            row.append(text)
        lines.append(f"| {model} | {' | '.join(row)} |")
    return lines


def report(task: Task, x: np.ndarray, y: np.ndarray, result: ProtocolResult, seconds: float,
           fractions: list[float]) -> list[str]:
    chance = np.bincount(y).max() / y.size
    lines = [f"## {task.cohort}: `{task.label}`", "", f"{task.note}. {x.shape[0]} labelled samples, "
             f"{len(np.unique(y))} classes, majority-class accuracy {chance:.2f}. Wall time {seconds:.0f} s.", ""]
    for metric in METRICS:
        lines += [f"**{metric.replace('_', ' ')}** (mean ± std over seeds, held-out test split)", ""]
        lines += table(result, metric, fractions) + [""]
    savings = result.label_savings
    if savings:
        reference = fraction_label(savings["reference_fraction"])
        lines += [f"**Label savings** (paper's definition, counted in labels used): the from-scratch MLP's best "
                  f"mean accuracy is {savings['target_accuracy']:.3f}, first reached with {reference} of the labels "
                  f"({savings['reference_n_train']:.0f} samples); the labels each model needs to reach it:", "",
                  "| model | labels needed | labels saved |", "|---|---|---|"]
        for model, entry in savings["models"].items():
            needed = ("never" if entry["fraction_needed"] is None
                      else f"{fraction_label(entry['fraction_needed'])} ({entry['n_train_needed']:.0f})")
            saved = "-" if entry["label_savings"] is None else f"{entry['label_savings']:.0%}"
            lines.append(f"| {model} | {needed} | {saved} |")
        lines.append("")
    lines += ["**Wall time per model** (seconds, all seeds and fractions)", "", "| model | seconds |", "|---|---|"]
    lines += [f"| {m} | {s:.1f} |" for m, s in sorted(result.timings.items())] + [""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every method's epochs")
    parser.add_argument("--cohorts", nargs="+", default=[t.cohort for t in TASKS])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header = [
        "# Label-efficiency results on real cohorts", "",
        f"Command: `.venv/bin/python bench/reproduce.py {' '.join(sys.argv[1:])}`", "",
        f"Machine: {platform.processor() or platform.machine()}, {args.threads} torch thread(s), "
        f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}; torch "
        f"{torch.__version__}. Seeds: {args.seeds}. SSL epochs: paper's x {args.epochs_scale}.",
        "",
    ]
    print("\n".join(header), flush=True)
    for task in TASKS:
        if task.cohort not in args.cohorts:
            continue
        x, y, classes, unlabelled = load(task)
        config = ProtocolConfig(fractions=tuple(sorted(args.fractions)), n_seeds=args.seeds,
                                method_params=scaled_params(args.epochs_scale))
        started = time.perf_counter()
        result = run_protocol(x, y, classes, x_unlabelled=unlabelled, config=config)
        seconds = time.perf_counter() - started
        print("\n".join(report(task, x, y, result, seconds, sorted(args.fractions))), flush=True)


if __name__ == "__main__":
    main()
