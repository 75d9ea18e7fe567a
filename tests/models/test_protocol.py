"""Label-efficiency protocol: structure, leak-free splits and scalers, label savings."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from models import protocol
from models.evaluation import label_fraction_subset
from models.preprocessing import Preprocessor
from models.protocol import ProtocolConfig, label_savings, run_protocol, summarise

FAST = {"max_epochs": 15, "patience": 3}


def grouped_data(n_groups: int = 30, per_group: int = 3, n_genes: int = 12) -> tuple[np.ndarray, ...]:
    """Three classes, groups of samples sharing a class, and gene 0 a unique marker per sample."""
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(n_groups), per_group)
    y = groups % 3
    x = rng.normal(size=(groups.size, n_genes)).astype(np.float32)
    x[:, 1:4] += 4.0 * np.eye(3, dtype=np.float32)[y]
    x[:, 0] = np.arange(groups.size) * 10.0 + 1.0  # marker: which rows a scaler was fitted on
    return x, y, groups.astype(str)


def config(**overrides: object) -> ProtocolConfig:
    base: dict[str, object] = {
        "fractions": (0.2, 1.0), "n_seeds": 2, "methods": ("scarf",),
        "method_params": {"scarf": {"epochs": 3, "batch_size": 32}}, "head_params": FAST, "device": "cpu",
    }
    return ProtocolConfig(**{**base, **overrides})  # type: ignore[arg-type]


def test_every_model_fraction_and_seed_is_present_with_metrics_in_range() -> None:
    x, y, groups = grouped_data()
    result = run_protocol(x, y, ["a", "b", "c"], groups=groups, config=config())
    models = {"mlp_scratch", "logistic_regression", "pca_logistic_regression", "scarf/linear_probe", "scarf/finetune"}
    keys = {(r["model"], r["fraction"], r["seed"]) for r in result.runs}
    assert keys == {(m, f, s) for m in models for f in (0.2, 1.0) for s in (0, 1)}
    assert len(result.runs) == len(keys)
    for run in result.runs:
        for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert 0.0 <= run[metric] <= 1.0
        assert run["auroc"] is None or 0.0 <= run["auroc"] <= 1.0
    full = {e["model"]: e for e in result.summary if e["fraction"] == 1.0}
    # Classes differ by 4 SD in three genes: the linear baseline is far above the 1/3 chance level.
    assert full["logistic_regression"]["accuracy"]["mean"] >= 0.9
    assert {e["n_seeds"] for e in result.summary} == {2}
    assert set(result.timings) >= models | {"scarf/pretrain"}


def test_groups_never_straddle_a_split() -> None:
    x, y, groups = grouped_data()
    result = run_protocol(x, y, ["a", "b", "c"], groups=groups, config=config(methods=(), method_params={}, n_seeds=3))
    for split in result.splits:
        assert set(groups[split["test"]]).isdisjoint(groups[split["train_pool"]])
        assert len(split["test"]) + len(split["train_pool"]) == len(y)


def test_each_runs_training_subset_can_be_rebuilt_from_the_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y, groups = grouped_data()
    trained: dict[tuple[float, int], set[tuple[int, ...]]] = defaultdict(set)  # every model's, per fraction and seed
    record = protocol._Runner.record

    def spy(self, model, fraction, seed, train, test, proba, started):  # type: ignore[no-untyped-def]
        trained[(fraction, seed)].add(tuple(sorted(train.tolist())))
        return record(self, model, fraction, seed, train, test, proba, started)

    monkeypatch.setattr(protocol._Runner, "record", spy)
    result = run_protocol(x, y, ["a", "b", "c"], groups=groups,
                          config=config(methods=(), method_params={}, fractions=(0.2, 0.5), n_seeds=2))

    for split in result.splits:
        first = split["train_pool_first_fraction"]
        assert len(first) == len(split["train_pool"]) and set(first) == {0.2, 0.5, None}
        for fraction in (0.2, 0.5):
            pairs = zip(split["train_pool"], first, strict=True)
            rebuilt = sorted(p for p, f in pairs if f is not None and f <= fraction)
            assert trained[(fraction, split["seed"])] == {tuple(rebuilt)}
            n_train = {r["n_train"] for r in result.runs if (r["fraction"], r["seed"]) == (fraction, split["seed"])}
            assert n_train == {len(rebuilt)}


def test_no_scaler_or_pca_sees_a_test_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y, groups = grouped_data()
    fitted: list[set[float]] = []

    def spy(original):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            data = args[1] if not isinstance(args[0], np.ndarray) else args[0]
            fitted.append(set(np.asarray(data)[:, 0].round(3).tolist()))
            return original(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(Preprocessor, "fit", classmethod(spy(Preprocessor.fit.__func__)))  # type: ignore[attr-defined]
    monkeypatch.setattr(StandardScaler, "fit", spy(StandardScaler.fit))
    monkeypatch.setattr(PCA, "fit", spy(PCA.fit))
    result = run_protocol(x, y, ["a", "b", "c"], groups=groups, config=config(n_seeds=1))
    test_markers = set(x[result.splits[0]["test"], 0].round(3).tolist())
    assert len(fitted) >= 7  # SSL scaler, 2 fractions x (baseline scaler, logreg scaler, PCA, PCA-logreg...)
    assert all(markers.isdisjoint(test_markers) for markers in fitted)


def test_unlabelled_samples_of_a_test_patient_are_not_pretrained_on(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y, groups = grouped_data()
    # One unlabelled sample per patient (marker gene 0: 10,000 + patient) and two without a patient.
    x_unlabelled = x[::3].copy()
    x_unlabelled[:, 0] = 10_000.0 + np.arange(30)
    x_unlabelled = np.concatenate([x_unlabelled, x_unlabelled[:2] + 0.5])
    x_unlabelled[30:, 0] = [20_000.0, 20_001.0]
    groups_unlabelled = np.array([*[str(g) for g in range(30)], None, None], dtype=object)
    seen: list[set[float]] = []

    def spy(original):  # type: ignore[no-untyped-def]
        def wrapper(cls, x, *args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(set(np.asarray(x)[:, 0].round(1).tolist()))
            return original(cls, x, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(Preprocessor, "fit", classmethod(spy(Preprocessor.fit.__func__)))  # type: ignore[attr-defined]
    result = run_protocol(x, y, ["a", "b", "c"], groups=groups, x_unlabelled=x_unlabelled,
                          groups_unlabelled=groups_unlabelled, config=config(baselines=("logistic_regression",)))

    ssl_scalers = [markers for markers in seen if max(markers) >= 10_000]  # one per seed; the baselines' after
    for split, pretrained_on in zip(result.splits, ssl_scalers, strict=True):
        tested = set(groups[split["test"]])
        assert split["unlabelled_left_out"] == sorted(int(g) for g in tested)  # unlabelled row i: patient i
        assert {10_000.0 + int(g) for g in tested}.isdisjoint(pretrained_on)  # no test patient's sample
        assert {10_000.0 + g for g in range(30) if str(g) not in tested} <= pretrained_on
        assert {20_000.0, 20_001.0} <= pretrained_on and split["n_unlabelled_used"] == 32 - len(tested)


def test_a_class_too_small_for_the_test_split_leaves_auroc_over_the_others() -> None:
    x, y, _ = grouped_data()
    y = y.copy()
    y[[0, 1]] = 3  # a fourth class of two samples: a 20 % stratified split never tests it
    result = run_protocol(x, y, ["a", "b", "c", "d"], config=config(methods=(), method_params={}, n_seeds=3,
                                                                   baselines=("logistic_regression",)))
    for run in result.runs:
        assert run["auroc"] is not None and run["auroc_classes"] == 3  # a, b and c, not d
    for entry in result.summary:
        assert entry["auroc"]["n"] == entry["accuracy"]["n"] == entry["n_seeds"] == 3


def savings_runs(curves: dict[str, list[list[float]]], fractions: tuple[float, ...],
                 n_train: list[int]) -> list[dict[str, object]]:
    """Runs of each model: ``curves[model][i]`` holds one accuracy per seed at ``fractions[i]``."""
    runs = []
    for model, per_fraction in curves.items():
        for fraction, n, accs in zip(fractions, n_train, per_fraction, strict=True):
            for seed, acc in enumerate(accs):
                runs.append({"model": model, "fraction": fraction, "seed": seed, "n_train": n, "accuracy": acc,
                             "balanced_accuracy": acc, "macro_f1": acc, "auroc": None})
    return runs


def test_label_savings_follow_the_papers_definition() -> None:
    curves = {"mlp_scratch": [[0.5], [0.7], [0.8], [0.8]], "scarf/finetune": [[0.6], [0.8], [0.85], [0.9]],
              "x/linear_probe": [[0.4], [0.5], [0.6], [0.7]]}
    savings = label_savings(summarise(savings_runs(curves, (0.1, 0.2, 0.5, 1.0), [10, 20, 50, 100])))
    # The MLP first reaches its best (0.8) at 50 % of the labels; SCARF reaches 0.8 at 20 %: 60 % fewer labels.
    assert savings["reference_fraction"] == 0.5 and savings["target_accuracy"] == pytest.approx(0.8)
    assert savings["reference_n_train"] == 50
    assert savings["models"]["scarf/finetune"] == {"fraction_needed": 0.2, "n_train_needed": 20,
                                                   "label_savings": pytest.approx(0.6)}
    assert savings["models"]["x/linear_probe"] == {"fraction_needed": None, "n_train_needed": None,
                                                   "label_savings": None}


def test_label_savings_count_the_labels_the_rounded_up_subsets_hold() -> None:
    # all_leukemia's mol.biol training pool: classes of 8, 29, 4 and 59. Rounded up per class, 5 % of it is
    # 7 labels and 10 % is 11, so reaching the target at 5 % instead of 10 % saves 4 of 11 labels, not half.
    y = np.repeat(np.arange(4), [8, 29, 4, 59])
    n_train = [label_fraction_subset(y, f, seed=0).size for f in (0.05, 0.1, 1.0)]
    assert n_train == [7, 11, 100]
    curves = {"mlp_scratch": [[0.5], [0.7], [0.7]], "scarf/finetune": [[0.7], [0.7], [0.8]]}
    savings = label_savings(summarise(savings_runs(curves, (0.05, 0.1, 1.0), n_train)))
    assert savings["models"]["scarf/finetune"]["label_savings"] == pytest.approx(4 / 11)  # the paper's 1 - f/f_ref: 0.5
    assert savings["reference_fraction"] == 0.1 and savings["reference_n_train"] == 11
    assert savings["models"]["scarf/finetune"] == {"fraction_needed": 0.05, "n_train_needed": 7,
                                                   "label_savings": pytest.approx(4 / 11)}
    assert savings["models"]["mlp_scratch"]["label_savings"] == 0.0


def test_label_savings_treat_equal_mean_accuracies_as_equal() -> None:
    # Two seeds scoring 0.1 and 0.7 average 0.39999999999999997 in floating point, 0.3 and 0.5 average 0.4:
    # the same mean accuracy, so the MLP first reaches its best at 20 % and saves nothing against itself.
    assert np.mean([0.1, 0.7]) < np.mean([0.3, 0.5])
    same = [[0.1, 0.7], [0.3, 0.5], [0.3, 0.4]]
    curves = {"mlp_scratch": same, "logistic_regression": same}
    savings = label_savings(summarise(savings_runs(curves, (0.2, 0.5, 1.0), [20, 50, 100])))
    assert savings["reference_fraction"] == 0.2 and savings["reference_n_train"] == 20
    for model in curves:
        assert savings["models"][model] == {"fraction_needed": 0.2, "n_train_needed": 20, "label_savings": 0.0}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("fractions", (0.0, 0.5), "fractions"), ("methods", ("simclr",), "simclr"),
     ("method_params", {"byol": {}}, "byol"), ("head_params", {"max_epochs": 0}, "max_epochs")],
)
def test_config_errors_name_the_problem(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(**{field: value})


def _mismatched_inputs() -> dict[str, tuple[dict[str, object], str]]:
    """Each case: overrides of run_protocol's arguments and the error they must raise up front."""
    from models.encoders import MLPEncoder
    from models.protocol import PretrainedEncoder

    x, y, groups = grouped_data()
    n, g = x.shape
    encoder = MLPEncoder(g, hidden_dim=8, n_layers=1)
    return {
        "y shorter": ({"y": y[:-5]}, rf"y has {n - 5} entries but x has {n} rows"),
        "x shorter": ({"x": x[:-5]}, rf"y has {n} entries but x has {n - 5} rows"),
        "index out of range": ({"y": np.where(y == 2, 3, y)}, r"y holds class index 3, outside \[0, 3\)"),
        "negative index": ({"y": np.where(y == 2, -1, y)}, r"y holds class index -1"),
        "string labels": ({"y": np.array(["a", "b", "c"])[y]}, "y must hold integer class indices"),
        "fractional labels": ({"y": y + 0.5}, "y must hold integer class indices, got 0.5"),
        "one class": ({"y": np.zeros_like(y)}, r"y holds 1 class\(es\) \(\['a'\]\); the protocol needs two"),
        "groups length": ({"groups": groups[:10]}, rf"groups has 10 entries but x has {n} rows"),
        "unlabelled genes": ({"x_unlabelled": np.ones((4, g + 1))}, rf"x_unlabelled has {g + 1} genes .* x has {g}"),
        "unlabelled groups": (
            {"x_unlabelled": np.ones((4, g)), "groups_unlabelled": np.array(["1", "2"])},
            "groups_unlabelled has 2 entries but x_unlabelled has 4 rows",
        ),
        "groups without unlabelled": ({"groups_unlabelled": np.array(["1"])}, "without x_unlabelled"),
        "pretrained rows": (
            {"pretrained": {"ext": PretrainedEncoder(encoder, np.zeros((n - 1, g), np.float32))}},
            rf"pretrained\['ext'\].x has shape \({n - 1}, {g}\); expected \({n}, {g}\)",
        ),
    }


@pytest.mark.parametrize("case", list(_mismatched_inputs()))
def test_inputs_that_disagree_are_refused_before_anything_is_fitted(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.protocol as protocol

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be fitted before the inputs are checked")

    monkeypatch.setattr(protocol, "split_train_test", never)
    x, y, groups = grouped_data()
    overrides, message = _mismatched_inputs()[case]
    args: dict[str, object] = {"x": x, "y": y, "classes": ["a", "b", "c"], "groups": groups, **overrides}
    with pytest.raises(ValueError, match=message):
        run_protocol(**args, config=config())  # type: ignore[arg-type]
