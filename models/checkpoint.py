"""Serialisation of encoders and classifiers as ``torch.load(weights_only=True)``-safe payloads.

A payload is a dict of plain python values and tensors carrying ``kind`` and ``format_version``, the
model config, its weights, the ordered gene panel and the preprocessing statistics (scvi-tools style).
Every loader checks all of them and raises :class:`ArtifactError` on any inconsistency.

Classifier payloads may carry an ``"uncertainty"`` entry (:meth:`models.uncertainty.Uncertainty.to_dict`:
temperature, split-conformal calibration scores, OOD scorer, all as tensors or plain values); loaders pass it
on untouched in ``info["uncertainty"]`` (None for artifacts written before it existed).

Inputs of the loaded predictors: both :class:`models.classifiers.EncoderClassifier` and
:class:`LogisticRegressionModel` take the output of ``Preprocessor.transform`` (panel-aligned, log1p if the
preprocessor says so, z-scored, missing genes imputed as 0) in ``predict_proba``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.pipeline import Pipeline

from models.classifiers import EncoderClassifier
from models.encoders import MLPEncoder
from models.heads import LinearHead
from models.methods import METHODS
from models.preprocessing import Preprocessor, require_finite

FORMAT_VERSION = 1
ENCODER_KIND = "encoder"
CLASSIFIER_KIND = "classifier"
LOGREG_KIND = "logreg"
HEAD_KINDS = ("linear_probe", "finetune", "scratch")

_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


class ArtifactError(ValueError):
    """A stored artifact is unreadable or inconsistent (kind, version, genes, config or weights)."""


def _check_safe(obj: Any, path: str = "payload") -> None:
    """Raise TypeError for values that ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{path} has a non-string key {key!r}")
            _check_safe(value, f"{path}[{key!r}]")
        return
    if isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            _check_safe(value, f"{path}[{i}]")
        return
    raise TypeError(f"{path} holds a {type(obj).__name__}; convert it to a tensor or plain python value")


def dumps(payload: dict[str, Any]) -> bytes:
    """Serialise a payload of nested dict/list/str/int/float/bool/None/Tensor with ``torch.save``."""
    _check_safe(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def loads(data: bytes) -> dict[str, Any]:
    """Deserialise with ``torch.load(weights_only=True, map_location="cpu")``.

    Raises:
        ArtifactError: If the bytes are not a weights-only torch payload holding a dict.
    """
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # unpickling errors come in many types
        raise ArtifactError(f"artifact could not be loaded: {exc}") from exc
    if not isinstance(payload, dict):
        raise ArtifactError(f"artifact holds a {type(payload).__name__}, expected a dict")
    return payload


def _check_finite_state(state: Mapping[str, Any], what: str) -> None:
    """Raise ArtifactError naming the first floating tensor of ``state`` holding NaN or inf (a diverged run's
    weights would give NaN probabilities for every input)."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            n_bad = int((~torch.isfinite(value)).sum())
            raise ArtifactError(f"{what} {key!r} holds {n_bad} NaN or infinite value(s)")


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copy of a module's state dict, refused if a weight is not finite."""
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    _check_finite_state(state, "weight")
    return state


def _check_method(method: Any) -> str:
    """The SSL method's name, which must be one of :data:`models.methods.METHODS`."""
    if method not in METHODS:
        raise ArtifactError(f"unknown SSL method {method!r}; known: {sorted(METHODS)}")
    return str(method)


def _require(payload: Mapping[str, Any], kind: str, keys: Sequence[str]) -> None:
    """Check kind, format version and required keys."""
    if not isinstance(payload, Mapping):
        raise ArtifactError(f"payload must be a dict, got {type(payload).__name__}")
    if payload.get("kind") != kind:
        raise ArtifactError(f"artifact kind is {payload.get('kind')!r}, expected {kind!r}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"unsupported artifact format_version {payload.get('format_version')!r} (expected {FORMAT_VERSION})"
        )
    missing = [k for k in keys if k not in payload]
    if missing:
        raise ArtifactError(f"{kind} artifact lacks key(s): {missing}")


def _load_preprocessor(d: Any) -> Preprocessor:
    """Rebuild the preprocessor, converting validation errors to ArtifactError."""
    try:
        return Preprocessor.from_dict(d)
    except (ValueError, TypeError, KeyError) as exc:
        raise ArtifactError(f"invalid preprocessor state: {exc}") from exc


def _load_encoder(config: Any, state: Any, preprocessor: Preprocessor, prefix: str = "") -> MLPEncoder:
    """Build an encoder from its config, check it against the gene panel and load weights strictly."""
    if not isinstance(config, Mapping):
        raise ArtifactError("encoder config must be a dict")
    if config.get("n_genes") != len(preprocessor.genes):
        raise ArtifactError(
            f"encoder expects {config.get('n_genes')} genes but the artifact's panel has {len(preprocessor.genes)}"
        )
    try:
        encoder = MLPEncoder(**config)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"invalid encoder config {dict(config)}: {exc}") from exc
    _load_state(encoder, state, prefix)
    return encoder


def _load_state(module: torch.nn.Module, state: Any, prefix: str) -> None:
    """``load_state_dict(strict=True)`` with shape/key errors reported as ArtifactError."""
    if not isinstance(state, Mapping):
        raise ArtifactError(f"{prefix or 'state_dict'} must be a dict of tensors")
    _check_finite_state(state, "weight")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"weights do not match the config: {exc}") from exc


def encoder_payload(
    encoder: MLPEncoder, preprocessor: Preprocessor, *, method: str, params: dict[str, Any]
) -> dict[str, Any]:
    """Payload for a pretrained encoder with its gene panel and preprocessing statistics.

    Args:
        encoder: The trained encoder.
        preprocessor: The preprocessor fitted on the pretraining data (its genes are the panel).
        method: SSL method name, a key of :data:`models.methods.METHODS`.
        params: The method's parameters (plain dict).

    Returns:
        A dict for :func:`dumps`.

    Raises:
        ArtifactError: On an unknown method, a panel of another width, or weights holding NaN or inf.
    """
    method = _check_method(method)
    if encoder.n_genes != len(preprocessor.genes):
        raise ArtifactError(f"encoder has {encoder.n_genes} inputs but the panel has {len(preprocessor.genes)} genes")
    return {
        "kind": ENCODER_KIND,
        "format_version": FORMAT_VERSION,
        "method": method,
        "params": dict(params),
        "config": encoder.config(),
        "state_dict": _cpu_state(encoder),
        "preprocessor": preprocessor.to_dict(),
    }


def encoder_from_payload(payload: dict[str, Any]) -> tuple[MLPEncoder, Preprocessor, dict[str, Any]]:
    """Rebuild an encoder (CPU, eval mode) from :func:`encoder_payload` output.

    Returns:
        ``(encoder, preprocessor, {"method": ..., "params": ...})``.

    Raises:
        ArtifactError: On a wrong kind or version, missing keys, an unknown method, a gene panel that
            disagrees with the config or names a gene twice, or weights that do not match or are not finite.
    """
    _require(payload, ENCODER_KIND, ["method", "params", "config", "state_dict", "preprocessor"])
    _check_method(payload["method"])
    preprocessor = _load_preprocessor(payload["preprocessor"])
    encoder = _load_encoder(payload["config"], payload["state_dict"], preprocessor)
    return encoder.eval(), preprocessor, {"method": payload["method"], "params": payload["params"]}


def _check_classes(classes: Sequence[str], n_classes: int) -> list[str]:
    """Class names as strings; their number must equal the model's output width."""
    names = [str(c) for c in classes]
    if len(names) != n_classes or len(set(names)) != len(names):
        raise ArtifactError(f"{len(names)} distinct class names expected {n_classes}: {names[:20]}")
    return names


def classifier_payload(
    classifier: EncoderClassifier,
    preprocessor: Preprocessor,
    classes: Sequence[str],
    *,
    head_kind: str,
    meta: dict[str, Any] | None = None,
    uncertainty: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Payload for an :class:`EncoderClassifier`.

    Args:
        classifier: The trained classifier.
        preprocessor: The preprocessor its inputs go through (the encoder's panel).
        classes: Class names ordered as the logits.
        head_kind: ``"linear_probe"``, ``"finetune"`` or ``"scratch"``.
        meta: Extra plain metadata stored as is (label column, encoder id ...).
        uncertainty: Calibration, conformal and OOD state (``Uncertainty.to_dict()``), stored as is.
    """
    if head_kind not in HEAD_KINDS:
        raise ValueError(f"head_kind must be one of {HEAD_KINDS}, got {head_kind!r}")
    if classifier.encoder.n_genes != len(preprocessor.genes):
        raise ArtifactError(
            f"classifier has {classifier.encoder.n_genes} inputs but the panel has {len(preprocessor.genes)} genes"
        )
    return {
        "kind": CLASSIFIER_KIND,
        "format_version": FORMAT_VERSION,
        "head_kind": head_kind,
        "classes": _check_classes(classes, classifier.n_classes),
        "encoder_config": classifier.encoder.config(),
        "state_dict": _cpu_state(classifier),
        "preprocessor": preprocessor.to_dict(),
        "meta": dict(meta or {}),
        "uncertainty": uncertainty,
    }


def classifier_from_payload(
    payload: dict[str, Any],
) -> tuple[EncoderClassifier, Preprocessor, dict[str, Any]]:
    """Rebuild an :class:`EncoderClassifier` (CPU, eval mode).

    Returns:
        ``(classifier, preprocessor, {"classes", "head_kind", "meta", "uncertainty"})``; the classifier's
        ``predict_proba`` takes ``preprocessor.transform`` output.
    """
    _require(payload, CLASSIFIER_KIND, ["head_kind", "classes", "encoder_config", "state_dict", "preprocessor"])
    preprocessor = _load_preprocessor(payload["preprocessor"])
    state = payload["state_dict"]
    if not isinstance(state, Mapping):
        raise ArtifactError("state_dict must be a dict of tensors")
    encoder = _load_encoder(
        payload["encoder_config"],
        {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")},
        preprocessor,
    )
    weight = state.get("head.linear.weight")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise ArtifactError("classifier weights lack head.linear.weight")
    classes = _check_classes(payload["classes"], int(weight.shape[0]))
    classifier = EncoderClassifier(encoder, LinearHead(encoder.out_dim, len(classes)))
    _load_state(classifier, state, "state_dict")
    info = {
        "classes": classes,
        "head_kind": payload["head_kind"],
        "meta": dict(payload.get("meta") or {}),
        "uncertainty": payload.get("uncertainty"),
    }
    return classifier.eval(), preprocessor, info


class LogisticRegressionModel:
    """A fitted StandardScaler + multinomial logistic regression, rebuilt from plain arrays.

    ``p = softmax(((x - mean) / scale) W^T + b)`` (binary: ``p_1 = sigmoid(.)``), matching the sklearn
    pipeline it came from. Columns cover all ``n_classes``; a class absent from the training labels
    gets probability 0.

    Args:
        mean: Scaler means ``(G,)``.
        scale: Scaler scales ``(G,)``.
        coef: Coefficients ``(K, G)`` (``(1, G)`` for two labels).
        intercept: Intercepts ``(K,)`` (``(1,)`` for two labels).
        labels: Class indices the model was trained on ``(K,)``.
        n_classes: Number of output columns.
    """

    def __init__(
        self,
        mean: np.ndarray,
        scale: np.ndarray,
        coef: np.ndarray,
        intercept: np.ndarray,
        labels: np.ndarray,
        n_classes: int,
    ) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.n_classes = int(n_classes)
        n_genes = self.mean.shape[0]
        binary = self.labels.size == 2
        if (
            self.scale.shape != (n_genes,)
            or self.coef.shape != ((1 if binary else self.labels.size), n_genes)
            or self.intercept.shape != (self.coef.shape[0],)
            or self.labels.size < 2
            or self.labels.min() < 0
            or self.labels.max() >= self.n_classes
        ):
            raise ArtifactError("logistic regression arrays have inconsistent shapes or labels")
        for name in ("mean", "scale", "coef", "intercept"):
            if not np.isfinite(getattr(self, name)).all():
                raise ArtifactError(f"logistic regression {name} holds NaN or infinite values")
        self.n_genes = n_genes

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, n_classes)`` float32 for ``Preprocessor.transform`` output ``(N, G)``.

        Raises:
            ValueError: If ``x`` has another width, or NaN or inf (the first is named).
        """
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.n_genes:
            raise ValueError(f"x must have shape (n_samples, {self.n_genes}), got {arr.shape}")
        require_finite(arr, "x")
        logits = ((arr - self.mean) / self.scale) @ self.coef.T + self.intercept
        if self.labels.size == 2:
            p1 = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            p = np.stack([1.0 - p1, p1], axis=1)
        else:
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
        out = np.zeros((arr.shape[0], self.n_classes), dtype=np.float64)
        out[:, self.labels] = p
        return out.astype(np.float32)


def logreg_payload(
    pipeline: Pipeline,
    preprocessor: Preprocessor,
    classes: Sequence[str],
    *,
    meta: dict[str, Any] | None = None,
    uncertainty: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Payload for a fitted :func:`models.classifiers.fit_logistic_regression` pipeline (arrays as tensors).

    Args:
        pipeline: Fitted StandardScaler + LogisticRegression pipeline (trained on class indices).
        preprocessor: The preprocessor its inputs go through.
        classes: All class names; the pipeline's labels index into them.
        meta: Extra plain metadata stored as is.
        uncertainty: Calibration, conformal and OOD state (``Uncertainty.to_dict()``), stored as is.
    """
    scaler, logreg = pipeline.named_steps["scaler"], pipeline.named_steps["logreg"]
    if scaler.mean_.shape[0] != len(preprocessor.genes):
        raise ArtifactError(f"pipeline has {scaler.mean_.shape[0]} inputs but the panel has {len(preprocessor.genes)}")
    names = [str(c) for c in classes]
    model = LogisticRegressionModel(
        scaler.mean_, scaler.scale_, logreg.coef_, logreg.intercept_, logreg.classes_, len(names)
    )
    return {
        "kind": LOGREG_KIND,
        "format_version": FORMAT_VERSION,
        "head_kind": "logreg",
        "classes": names,
        "mean": torch.from_numpy(model.mean.copy()),
        "scale": torch.from_numpy(model.scale.copy()),
        "coef": torch.from_numpy(model.coef.copy()),
        "intercept": torch.from_numpy(model.intercept.copy()),
        "labels": torch.from_numpy(model.labels.copy()),
        "preprocessor": preprocessor.to_dict(),
        "meta": dict(meta or {}),
        "uncertainty": uncertainty,
    }


def logreg_from_payload(
    payload: dict[str, Any],
) -> tuple[LogisticRegressionModel, Preprocessor, dict[str, Any]]:
    """Rebuild a :class:`LogisticRegressionModel` from :func:`logreg_payload` output.

    Returns:
        ``(model, preprocessor, {"classes", "head_kind": "logreg", "meta", "uncertainty"})``.
    """
    keys = ["classes", "mean", "scale", "coef", "intercept", "labels", "preprocessor"]
    _require(payload, LOGREG_KIND, keys)
    preprocessor = _load_preprocessor(payload["preprocessor"])
    arrays = {}
    for key in ["mean", "scale", "coef", "intercept", "labels"]:
        if not isinstance(payload[key], torch.Tensor):
            raise ArtifactError(f"logreg artifact field {key!r} must be a tensor")
        arrays[key] = payload[key].numpy()
    classes = [str(c) for c in payload["classes"]]
    model = LogisticRegressionModel(
        arrays["mean"], arrays["scale"], arrays["coef"], arrays["intercept"], arrays["labels"], len(classes)
    )
    if model.n_genes != len(preprocessor.genes):
        raise ArtifactError(
            f"logreg expects {model.n_genes} genes but the artifact's panel has {len(preprocessor.genes)}"
        )
    info = {
        "classes": classes,
        "head_kind": "logreg",
        "meta": dict(payload.get("meta") or {}),
        "uncertainty": payload.get("uncertainty"),
    }
    return model, preprocessor, info


def predictor_from_payload(
    payload: dict[str, Any],
) -> tuple[EncoderClassifier | LogisticRegressionModel, Preprocessor, dict[str, Any]]:
    """Load either classifier kind; the first element has ``predict_proba(preprocessor.transform(x))``."""
    kind = payload.get("kind") if isinstance(payload, Mapping) else None
    if kind == CLASSIFIER_KIND:
        return classifier_from_payload(payload)
    if kind == LOGREG_KIND:
        return logreg_from_payload(payload)
    raise ArtifactError(f"artifact kind {kind!r} is not a classifier")
