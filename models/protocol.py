"""Label-efficiency protocol: SSL encoders and supervised baselines over label fractions and seeds.

Follows the comparison of Dradjat et al. (Bioinformatics 2025, arXiv 2507.13912) but without its leaks:

* the test split is drawn first, per seed, by group (patient) when groups are given;
* every SSL method is pretrained, per seed, on the non-test samples only (plus the unlabelled samples of
  patients outside that seed's test split), and its scaler is fitted on those same samples;
* every baseline's scaler (and PCA) is fitted on the labelled training subset only;
* label subsets are nested per class across fractions (``label_fraction_subset``);
* metrics are accuracy, balanced accuracy, macro-F1 and one-vs-rest AUROC, reported as mean and standard
  deviation over seeds, beside the from-scratch MLP (the paper's only baseline), logistic regression and
  PCA + logistic regression.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from models.classifiers import HeadParams, class_indices, fit_encoder_classifier, fit_logistic_regression
from models.device import resolve_device, seeded
from models.encoders import MLPEncoder
from models.evaluation import classification_metrics, label_fraction_subset, split_train_test, validation_split
from models.methods import METHODS
from models.methods.base import EpochCallback
from models.preprocessing import Preprocessor

DEFAULT_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
HEADS = ("linear_probe", "finetune")
BASELINES = ("mlp_scratch", "logistic_regression", "pca_logistic_regression")
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")
REFERENCE = "mlp_scratch"

ProgressCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ProtocolConfig:
    """What to compare and how often.

    Attributes:
        fractions: Shares of each class of the labelled training pool, each in (0, 1].
        n_seeds: Repetitions; seed s draws its own test split, subsets, initialisations and corruptions.
        test_size: Share of samples (or groups) held out per seed.
        methods: SSL methods (keys of ``METHODS``) pretrained inside the protocol.
        method_params: Per-method hyper-parameter overrides (e.g. ``{"scarf": {"epochs": 200}}``).
        heads: Downstream heads fitted on every encoder: ``linear_probe`` and/or ``finetune``.
        baselines: Any of ``mlp_scratch``, ``logistic_regression``, ``pca_logistic_regression``.
        head_params: Overrides of :class:`HeadParams` for the torch heads and the MLP baseline.
        logreg_c: Inverse regularisation of both logistic regressions.
        pca_components: Upper bound on PCA components (capped by training size and genes).
        log1p: Log-transform before standardising; None detects counts.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:i]"``.
    """

    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    n_seeds: int = 5
    test_size: float = 0.2
    methods: tuple[str, ...] = ("scarf", "vime", "byol")
    method_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    heads: tuple[str, ...] = HEADS
    baselines: tuple[str, ...] = BASELINES
    head_params: Mapping[str, Any] = field(default_factory=dict)
    logreg_c: float = 0.1
    pca_components: int = 50
    log1p: bool | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.fractions or any(not 0.0 < f <= 1.0 for f in self.fractions):
            raise ValueError(f"fractions must be a non-empty list of values in (0, 1], got {list(self.fractions)}")
        if not 1 <= self.n_seeds <= 50:
            raise ValueError(f"n_seeds must be in [1, 50], got {self.n_seeds}")
        if not 0.0 < self.test_size < 1.0:
            raise ValueError(f"test_size must be in (0, 1), got {self.test_size}")
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; available: {sorted(METHODS)}")
        stray = sorted(set(self.method_params) - set(self.methods))
        if stray:
            raise ValueError(f"method_params given for method(s) not run: {stray}")
        for name in self.methods:
            METHODS[name].params_class.from_dict(self.method_params.get(name, {}))
        if set(self.heads) - set(HEADS):
            raise ValueError(f"unknown head(s) {sorted(set(self.heads) - set(HEADS))}; available: {list(HEADS)}")
        if set(self.baselines) - set(BASELINES):
            bad = sorted(set(self.baselines) - set(BASELINES))
            raise ValueError(f"unknown baseline(s) {bad}; available: {list(BASELINES)}")
        HeadParams.from_dict(self.head_params)
        if not 0 < self.logreg_c < math.inf:
            raise ValueError(f"logreg_c must be a finite number > 0, got {self.logreg_c}")
        if self.pca_components < 1:
            raise ValueError(f"pca_components must be >= 1, got {self.pca_components}")


@dataclass(frozen=True)
class PretrainedEncoder:
    """An encoder trained elsewhere, with the cohort's samples already in its panel and preprocessing.

    Attributes:
        encoder: The encoder.
        x: ``Preprocessor.transform`` output for the protocol's labelled samples, ``(N, G_encoder)``.
        note: Caveat shown with its results (e.g. that its pretraining saw this cohort's test samples).
    """

    encoder: MLPEncoder
    x: np.ndarray
    note: str = ""


@dataclass
class ProtocolResult:
    """Runs (one per model, fraction and seed), their summary, label savings, splits and timings."""

    runs: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    label_savings: dict[str, Any]
    splits: list[dict[str, Any]]
    timings: dict[str, float]
    notes: dict[str, str]


def model_name(encoder: str, head: str) -> str:
    return f"{encoder}/{head}"


class _Runner:
    """State of one protocol run: data, config, callbacks, accumulated runs and timings."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        classes: Sequence[str],
        groups: np.ndarray | None,
        x_unlabelled: np.ndarray | None,
        groups_unlabelled: np.ndarray | None,
        config: ProtocolConfig,
        on_progress: ProgressCallback | None,
        on_epoch: EpochCallback | None,
    ) -> None:
        self.x, self.y, self.classes, self.groups = x, y, list(classes), groups
        self.x_unlabelled, self.groups_unlabelled = x_unlabelled, groups_unlabelled
        self.config = config
        self.head_params = HeadParams.from_dict(config.head_params, linear_probe=False)
        self.probe_params = HeadParams.from_dict(config.head_params, linear_probe=True)
        self.on_progress, self.on_epoch = on_progress, on_epoch
        self.runs: list[dict[str, Any]] = []
        self.timings: dict[str, float] = defaultdict(float)
        self.step = 0
        self.total = 0

    def progress(self, message: str) -> None:
        self.step += 1
        if self.on_progress is not None:
            self.on_progress(self.step, self.total, message)

    def record(self, model: str, fraction: float, seed: int, train: np.ndarray, test: np.ndarray, proba: np.ndarray,
               started: float) -> None:
        metrics = classification_metrics(self.y[test], proba, self.classes)
        elapsed = time.perf_counter() - started
        self.timings[model] += elapsed
        self.runs.append(
            {
                "model": model,
                "fraction": fraction,
                "seed": seed,
                "n_train": int(train.size),
                "n_test": int(test.size),
                "seconds": elapsed,
                **{k: metrics[k] for k in METRICS},
                "auroc_classes": metrics["auroc_classes"],
            }
        )

    def torch_head(self, encoder: MLPEncoder, x: np.ndarray, train: np.ndarray, seed: int, head: str) -> Any:
        """Fit a linear probe or fine-tune ``encoder`` on rows ``train`` of ``x``, early-stopped when it can."""
        groups = None if self.groups is None else self.groups[train]
        val = validation_split(self.y[train], groups, seed=seed)
        fit_rows, val_rows = (train[val[0]], train[val[1]]) if val else (train, None)
        classifier, _ = fit_encoder_classifier(
            encoder,
            x[fit_rows],
            self.y[fit_rows],
            None if val_rows is None else x[val_rows],
            None if val_rows is None else self.y[val_rows],
            len(self.classes),
            freeze_encoder=head == "linear_probe",
            params=self.probe_params if head == "linear_probe" else self.head_params,
            seed=seed,
            device=self.config.device,
            on_epoch_end=self.on_epoch,
        )
        return classifier

    def baselines(self, fraction: float, seed: int, train: np.ndarray, test: np.ndarray) -> None:
        """Fit every requested baseline on ``train`` with a scaler (and PCA) fitted on ``train`` only."""
        config = self.config
        scaler = Preprocessor.fit(self.x[train], [str(i) for i in range(self.x.shape[1])], log1p=config.log1p)
        x_all = scaler.transform(self.x)  # fitted on train only; applying it to other rows is not fitting
        x_train, x_test = x_all[train], x_all[test]
        for name in config.baselines:
            started = time.perf_counter()
            if name == "logistic_regression":
                model = fit_logistic_regression(x_train, self.y[train], C=config.logreg_c, seed=seed)
                proba = _full_proba(model.predict_proba(x_test), model.classes_, len(self.classes))
            elif name == "pca_logistic_regression":
                n_components = max(1, min(config.pca_components, train.size - 1, x_train.shape[1]))
                pca = PCA(n_components=n_components, random_state=seed).fit(x_train)
                logreg = LogisticRegression(C=config.logreg_c, max_iter=2000, random_state=seed)
                logreg.fit(pca.transform(x_train), self.y[train])
                proba = _full_proba(logreg.predict_proba(pca.transform(x_test)), logreg.classes_, len(self.classes))
            else:
                with seeded(seed, resolve_device(config.device)):
                    fresh = MLPEncoder(self.x.shape[1], **_encoder_shape(config))
                proba = self.torch_head(fresh, x_all, train, seed, "finetune").predict_proba(x_test)
            self.record(name, fraction, seed, train, test, proba, started)
            self.progress(f"seed {seed}, {fraction:g} of labels: {name}")

    def unlabelled_kept(self, test: np.ndarray) -> np.ndarray:
        """Which unlabelled rows a seed may pretrain on, as a mask: all but those of a patient in its ``test``
        rows (a sample without a group id is a patient of its own)."""
        n = 0 if self.x_unlabelled is None else self.x_unlabelled.shape[0]
        if self.groups is None or self.groups_unlabelled is None:
            return np.ones(n, dtype=bool)
        tested = set(self.groups[test].tolist())
        return np.array([g is None or g not in tested for g in self.groups_unlabelled.tolist()], dtype=bool)

    def pretrain(
        self, method: str, pool: np.ndarray, unlabelled: np.ndarray, seed: int
    ) -> tuple[MLPEncoder, np.ndarray]:
        """Pretrain ``method`` on the non-test rows ``pool`` and the unlabelled rows the mask ``unlabelled``
        keeps; return it and all labelled rows' input."""
        started = time.perf_counter()
        rows = self.x[pool]
        if self.x_unlabelled is not None:
            rows = np.concatenate([rows, self.x_unlabelled[unlabelled]])
        genes = [str(i) for i in range(self.x.shape[1])]
        scaler = Preprocessor.fit(rows, genes, log1p=self.config.log1p)
        cls = METHODS[method]
        ssl = cls(len(genes), cls.params_class.from_dict(self.config.method_params.get(method, {})),
                  device=self.config.device)
        ssl.fit(scaler.transform(rows), seed=seed, on_epoch_end=self.on_epoch)
        self.timings[f"{method}/pretrain"] += time.perf_counter() - started
        self.progress(f"seed {seed}: pretrained {method}")
        return ssl.encoder, scaler.transform(self.x)


def _encoder_shape(config: ProtocolConfig) -> dict[str, Any]:
    """The MLP baseline uses the SSL encoder's architecture (the first method's, else the paper's)."""
    if not config.methods:
        return {}
    params = METHODS[config.methods[0]].params_class.from_dict(config.method_params.get(config.methods[0], {}))
    return {"hidden_dim": params.hidden_dim, "n_layers": params.n_layers, "dropout": params.dropout}


def _full_proba(proba: np.ndarray, seen: np.ndarray, n_classes: int) -> np.ndarray:
    """Spread sklearn's columns (classes seen in training) over all classes; unseen ones get 0."""
    out = np.zeros((proba.shape[0], n_classes), dtype=np.float64)
    out[:, np.asarray(seen, dtype=np.int64)] = proba
    return out


def summarise(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean, standard deviation (ddof 0) and number of seeds per model, fraction and metric; None values (an
    undefined AUROC) are skipped and so not counted."""
    grouped: dict[tuple[str, float], list[Mapping[str, Any]]] = defaultdict(list)
    for run in runs:
        grouped[(run["model"], run["fraction"])].append(run)
    summary = []
    for (model, fraction), rows in sorted(grouped.items()):
        entry: dict[str, Any] = {"model": model, "fraction": fraction, "n_seeds": len(rows),
                                 "n_train": float(np.mean([r["n_train"] for r in rows]))}
        for metric in METRICS:  # n: the seeds with a value (AUROC has none where a split left it undefined)
            values = [r[metric] for r in rows if r[metric] is not None]
            entry[metric] = (
                {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)} if values else None
            )
        summary.append(entry)
    return summary


# Mean accuracies equal in exact arithmetic can differ in their last bits (np.mean([0.1, 0.7]) is
# 0.39999999999999997, np.mean([0.3, 0.5]) is 0.4): within this they count as equal, for every model alike.
ACCURACY_TIE = 1e-9


def first_fractions(subsets: Mapping[float, np.ndarray], n_pool: int) -> list[float | None]:
    """For each train-pool position, the smallest fraction whose training subset (``subsets``: positions in the
    pool per fraction) holds it, None if none does: the subset of fraction ``f`` is the positions whose first
    fraction is at most ``f``, as subsets are nested."""
    first: list[float | None] = [None] * n_pool
    for fraction in sorted(subsets, reverse=True):
        for position in subsets[fraction].tolist():
            first[position] = fraction
    return first


def label_savings(summary: Sequence[Mapping[str, Any]], reference: str = REFERENCE) -> dict[str, Any]:
    """Share of labels each model saves reaching the reference's best mean accuracy (Dradjat et al.).

    The reference (the from-scratch MLP) reaches its best mean accuracy first at fraction ``f_ref``, trained on
    ``n_ref`` labels (the summary's ``n_train``, a mean over seeds); a model that reaches that accuracy first at
    fraction ``f``, trained on ``n`` labels, saves ``1 - n / n_ref`` of the labels. That is the paper's
    ``1 - f / f_ref`` when each class keeps exactly ``f`` of its samples; ``label_fraction_subset`` rounds up per
    class and keeps at least one sample of each, so on small cohorts a small fraction trains on more labels than
    it says (5 % of classes of 8, 29, 4 and 59 samples is 7 labels, 10 % is 11: 36 % fewer, not 50 %), and the
    savings count the labels used. Accuracies within ``ACCURACY_TIE`` count as equal. Models that never reach
    the target get ``fraction_needed = None``.

    Returns:
        ``{}`` without the reference, else reference, target_accuracy, reference_fraction,
        reference_n_train and, per model, fraction_needed, n_train_needed and label_savings.
    """
    by_model: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for entry in summary:
        if entry["accuracy"] is not None:
            by_model[entry["model"]].append((entry["fraction"], entry["accuracy"]["mean"], entry["n_train"]))
    if reference not in by_model:
        return {}
    best = max(acc for _, acc, _ in by_model[reference])

    def first_reaching(curve: list[tuple[float, float, float]]) -> tuple[float, float] | None:
        return next(((f, n) for f, acc, n in sorted(curve) if acc >= best - ACCURACY_TIE), None)

    reached_ref = first_reaching(by_model[reference])
    assert reached_ref is not None  # its best is on its own curve
    ref_fraction, ref_n = reached_ref
    savings: dict[str, Any] = {"reference": reference, "target_accuracy": best, "reference_fraction": ref_fraction,
                               "reference_n_train": ref_n, "models": {}}
    for model, curve in sorted(by_model.items()):
        reached = first_reaching(curve)
        savings["models"][model] = {
            "fraction_needed": None if reached is None else reached[0],
            "n_train_needed": None if reached is None else reached[1],
            "label_savings": None if reached is None else 1.0 - reached[1] / ref_n,
        }
    return savings


def _matrix(x: Any, what: str) -> np.ndarray:
    """``x`` as a float32 2-D matrix, or ValueError naming it."""
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a numeric matrix (n_samples, n_genes): {exc}") from exc
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n_samples, n_genes), got shape {arr.shape}")
    return arr


def _check_length(values: Any, n: int, what: str, against: str) -> None:
    """Raise ValueError unless ``values`` is a sequence of ``n`` entries (one per row of ``against``)."""
    size = len(values)
    if size != n:
        raise ValueError(f"{what} has {size} entries but {against} has {n} rows")


def _checked_labels(y: Any, n_rows: int, classes: Sequence[str]) -> np.ndarray:
    """``y`` as class indices, one per row of x, into ``classes``, with at least two classes present."""
    labels = class_indices(y, "y")
    if labels.ndim != 1:
        raise ValueError(f"y must be 1-D (one class index per row of x), got shape {labels.shape}")
    _check_length(labels, n_rows, "y", "x")
    if len(set(map(str, classes))) != len(classes) or len(classes) < 2:
        raise ValueError(f"classes must be two or more distinct names, got {list(classes)[:20]}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        bad = int(labels[(labels < 0) | (labels >= len(classes))][0])
        raise ValueError(f"y holds class index {bad}, outside [0, {len(classes)}) for {len(classes)} classes")
    present = np.unique(labels)
    if present.size < 2:
        raise ValueError(f"y holds {present.size} class(es) ({[classes[i] for i in present]}); the protocol needs two")
    return labels


def _check_inputs(
    x: np.ndarray,
    y: Any,
    classes: Sequence[str],
    groups: Any,
    x_unlabelled: Any,
    groups_unlabelled: Any,
    pretrained: Mapping[str, PretrainedEncoder],
) -> tuple[np.ndarray, np.ndarray | None]:
    """Check that the inputs agree with each other (rows, genes, class indices) before anything is fitted;
    return the class indices and the unlabelled matrix as float32."""
    labels = _checked_labels(y, x.shape[0], classes)
    if groups is not None:
        _check_length(groups, x.shape[0], "groups", "x")
    unlabelled = None
    if x_unlabelled is not None:
        unlabelled = _matrix(x_unlabelled, "x_unlabelled")
        if unlabelled.shape[1] != x.shape[1]:
            raise ValueError(f"x_unlabelled has {unlabelled.shape[1]} genes (columns) but x has {x.shape[1]}")
    if groups_unlabelled is not None:
        if unlabelled is None:
            raise ValueError("groups_unlabelled was given without x_unlabelled")
        _check_length(groups_unlabelled, unlabelled.shape[0], "groups_unlabelled", "x_unlabelled")
    for name, p in pretrained.items():
        px = _matrix(p.x, f"pretrained[{name!r}].x")
        if px.shape != (x.shape[0], p.encoder.n_genes):
            raise ValueError(
                f"pretrained[{name!r}].x has shape {px.shape}; expected ({x.shape[0]}, {p.encoder.n_genes}): "
                "a row per row of x, a column per gene of its encoder"
            )
    return labels, unlabelled


def run_protocol(
    x: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    *,
    groups: np.ndarray | None = None,
    x_unlabelled: np.ndarray | None = None,
    groups_unlabelled: np.ndarray | None = None,
    pretrained: Mapping[str, PretrainedEncoder] | None = None,
    config: ProtocolConfig | None = None,
    on_progress: ProgressCallback | None = None,
    on_epoch: EpochCallback | None = None,
) -> ProtocolResult:
    """Run the label-efficiency protocol.

    Args:
        x: Labelled samples, raw expression ``(N, G)`` (counts or log values; preprocessing is fitted inside).
        y: Class indices ``(N,)`` into ``classes``; every class should have at least 2 samples.
        classes: Class names.
        groups: Optional group (patient) ids ``(N,)``; no group is ever on both sides of a split.
        x_unlabelled: Optional unlabelled samples ``(M, G)``, used only for SSL pretraining.
        groups_unlabelled: Their group ids ``(M,)`` (None: no group); a seed's pretraining leaves out those of
            the patients in its test split.
        pretrained: Encoders trained elsewhere, evaluated with every head beside the others.
        config: What to run; the paper's comparison by default.
        on_progress: Called as ``on_progress(step, total, message)`` after each fitted model.
        on_epoch: Passed to every training loop (``on_epoch(epoch, loss)``); raise in it to abort.

    Returns:
        A :class:`ProtocolResult`. ``splits`` lists, per seed, the train-pool and test row indices, the
        unlabelled rows pretraining left out (those of test patients) and how many it used.

    Raises:
        ValueError: Before anything is fitted, when the inputs disagree: ``y``, ``groups`` or a pretrained
            encoder's ``x`` without one entry per row of ``x``, labels that are not integer indices into
            ``classes`` or hold a single class, ``x_unlabelled`` with other genes than ``x``, or
            ``groups_unlabelled`` without one entry per row of ``x_unlabelled``.
    """
    config = config or ProtocolConfig()
    pretrained = dict(pretrained or {})
    x = _matrix(x, "x")
    y, x_unlabelled = _check_inputs(x, y, classes, groups, x_unlabelled, groups_unlabelled, pretrained)
    runner = _Runner(x, y, classes, groups, x_unlabelled, groups_unlabelled, config, on_progress, on_epoch)
    n_encoders = len(config.methods) + len(pretrained)
    per_fraction = len(config.baselines) + n_encoders * len(config.heads)
    runner.total = config.n_seeds * (len(config.methods) + len(config.fractions) * per_fraction)
    splits = []
    for seed in range(config.n_seeds):
        pool, test = split_train_test(y, groups, test_size=config.test_size, seed=seed)
        kept = runner.unlabelled_kept(test)
        subsets = {f: label_fraction_subset(y[pool], f, seed=seed) for f in config.fractions}
        splits.append({"seed": seed, "train_pool": pool.tolist(), "test": test.tolist(),
                       "train_pool_first_fraction": first_fractions(subsets, pool.size),
                       "unlabelled_left_out": np.flatnonzero(~kept).tolist(), "n_unlabelled_used": int(kept.sum())})
        encoders = {m: runner.pretrain(m, pool, kept, seed) for m in config.methods}
        encoders.update({name: (p.encoder, np.asarray(p.x, dtype=np.float32)) for name, p in pretrained.items()})
        for fraction in config.fractions:
            train = pool[subsets[fraction]]
            runner.baselines(fraction, seed, train, test)
            for name, (encoder, x_enc) in encoders.items():
                for head in config.heads:
                    started = time.perf_counter()
                    classifier = runner.torch_head(encoder, x_enc, train, seed, head)
                    proba = classifier.predict_proba(x_enc[test])
                    runner.record(model_name(name, head), fraction, seed, train, test, proba, started)
                    runner.progress(f"seed {seed}, {fraction:g} of labels: {model_name(name, head)}")
    summary = summarise(runner.runs)
    notes = {name: p.note for name, p in pretrained.items() if p.note}
    return ProtocolResult(runner.runs, summary, label_savings(summary), splits, dict(runner.timings), notes)


def fraction_label(fraction: float) -> str:
    """``0.05 -> "5%"`` for tables and plots."""
    percent = fraction * 100
    return f"{percent:g}%" if math.isclose(percent, round(percent, 1)) else f"{percent:.2f}%"
