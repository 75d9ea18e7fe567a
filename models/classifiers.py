"""Downstream classifiers: linear probe / fine-tuned encoder + linear head, and logistic regression."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from models.device import (
    autocast,
    batch_slices,
    check_seed,
    grad_scaler,
    make_generator,
    resolve_device,
    seeded,
)
from models.encoders import MLPEncoder
from models.evaluation import whole_number_indices
from models.heads import LinearHead
from models.methods.base import EpochCallback
from models.params import ParamsMixin, param
from models.preprocessing import require_finite

FINETUNE_LR = 1e-4  # Dradjat et al.'s Adam rate, for fine-tuning and the from-scratch MLP
PROBE_LR = 1e-3  # a frozen encoder's head alone: ten times the fine-tuning rate


class EncoderClassifier(nn.Module):
    """An encoder followed by a linear head: ``logits = W f(x) + b``; softmax gives class probabilities.

    Args:
        encoder: The (pretrained or fresh) :class:`MLPEncoder`.
        head: A :class:`LinearHead` with ``in_dim == encoder.out_dim``.
    """

    def __init__(self, encoder: MLPEncoder, head: LinearHead) -> None:
        super().__init__()
        if head.in_dim != encoder.out_dim:
            raise ValueError(f"head expects {head.in_dim} inputs but the encoder gives {encoder.out_dim}")
        self.encoder = encoder
        self.head = head
        self.n_classes = head.n_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map preprocessed expression ``(N, G)`` to logits ``(N, C)``."""
        return self.head(self.encoder(x))

    def predict_with_embedding(self, x: np.ndarray, *, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities and the encoder's representation, from one encoder pass, in eval mode.

        Args:
            x: Output of ``Preprocessor.transform``, shape ``(N, G)``.
            batch_size: Rows per forward pass.

        Returns:
            ``(proba, z)``: float32 ``(N, C)`` rows summing to 1, and float32 ``(N, hidden)``.

        Raises:
            ValueError: If ``x`` has another width, or NaN or inf (the first is named; ``Preprocessor.transform``
                output has neither).
        """
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.encoder.n_genes:
            raise ValueError(f"x must have shape (n_samples, {self.encoder.n_genes}), got {arr.shape}")
        require_finite(arr, "x")
        device = next(self.parameters()).device
        self.eval()
        probas, embeddings = [], []
        with torch.inference_mode():
            for start in range(0, arr.shape[0], batch_size):
                z = self.encoder(torch.from_numpy(arr[start : start + batch_size]).to(device))
                probas.append(torch.softmax(self.head(z).float(), dim=1).cpu())
                embeddings.append(z.float().cpu())
        if not probas:
            return np.zeros((0, self.n_classes), np.float32), np.zeros((0, self.encoder.out_dim), np.float32)
        return torch.cat(probas).numpy().astype(np.float32), torch.cat(embeddings).numpy()

    def predict_proba(self, x: np.ndarray, *, batch_size: int = 4096) -> np.ndarray:
        """Class probabilities in eval mode.

        Args:
            x: Output of ``Preprocessor.transform`` (z-scored log-expression), shape ``(N, G)``.
            batch_size: Rows per forward pass.

        Returns:
            float32 array ``(N, C)`` whose rows sum to 1.
        """
        return self.predict_with_embedding(x, batch_size=batch_size)[0]


@dataclass
class HeadParams(ParamsMixin):
    """Training settings of a downstream head (Dradjat et al.: Adam 1e-4, early stopping on val loss).

    Attributes:
        lr: Adam learning rate; None (the default) means the head's own: :data:`FINETUNE_LR` (1e-4) when the
            encoder is fine-tuned, :data:`PROBE_LR` (1e-3) for a linear probe (see :meth:`lr_for`).
        max_epochs: Upper bound on epochs.
        batch_size: Mini-batch size.
        patience: Epochs without validation-loss improvement before stopping.
        weight_decay: Adam L2 penalty.
    """

    lr: float | None = param(None, low=0.0, low_open=True)
    max_epochs: int = param(200, low=1)
    batch_size: int = param(64, low=2)
    patience: int = param(10, low=1)
    weight_decay: float = param(0.0, low=0.0)

    def lr_for(self, *, linear_probe: bool) -> float:
        """The learning rate a head trains with: ``lr`` when set, else the head's default."""
        if self.lr is not None:
            return self.lr
        return PROBE_LR if linear_probe else FINETUNE_LR

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, *, linear_probe: bool | None = None) -> Self:
        """Validated params from a mapping; with ``linear_probe`` given, a missing ``lr`` is filled with that
        head's default (so ``to_dict`` records the rate used), else it stays None (decided at fit time).

        Raises:
            ValueError: On unknown keys or out-of-range values (naming the key).
        """
        d = dict(d or {})
        params = super().from_dict(d)
        if linear_probe is not None:
            params.lr = params.lr_for(linear_probe=linear_probe)
        return params


def class_indices(y: Any, what: str = "y") -> np.ndarray:
    """Labels as int64 class indices: integers, or floats that are whole numbers.

    Raises:
        ValueError: For strings or other non-numeric labels, or floats with a fractional part or not finite
            (casting them would truncate silently).
    """
    arr = np.asarray(y)
    indices = arr.astype(np.int64) if arr.dtype.kind == "b" else whole_number_indices(arr)
    if indices is not None:
        return indices
    if arr.dtype.kind != "f":
        shown = arr.reshape(-1)[:3].tolist()
        raise ValueError(
            f"{what} must hold integer class indices, got {arr.dtype} values such as {shown}; "
            "map the labels to 0..n_classes-1 first"
        )
    bad = ~np.isfinite(arr) | (arr != np.round(arr))
    first = int(np.flatnonzero(bad.reshape(-1))[0])  # a float that is not a whole number: there is one
    raise ValueError(f"{what} must hold integer class indices, got {arr.reshape(-1)[first]} at position {first}")


def _check_xy(x: np.ndarray, y: np.ndarray, n_genes: int, n_classes: int, what: str) -> None:
    """Validate a feature matrix and its integer labels."""
    if x.ndim != 2 or x.shape[1] != n_genes:
        raise ValueError(f"x_{what} must have shape (n_samples, {n_genes}), got {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y_{what} must have shape ({x.shape[0]},), got {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"x_{what} contains NaN or infinite values; preprocess it first")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"y_{what} must hold class indices in [0, {n_classes}), got range [{y.min()}, {y.max()}]")


def _validation_tensors(
    x_val: np.ndarray | None, y_val: np.ndarray | None, n_genes: int, n_classes: int, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Validated validation tensors on ``device``; ``(None, None)`` when absent or empty."""
    if (x_val is None) != (y_val is None):
        raise ValueError("x_val and y_val must be given together")
    if x_val is None or y_val is None:
        return None, None
    x_v, y_v = np.asarray(x_val, dtype=np.float32), class_indices(y_val, "y_val")
    _check_xy(x_v, y_v, n_genes, n_classes, "val")
    if x_v.shape[0] == 0:
        return None, None
    return torch.from_numpy(x_v).to(device), torch.from_numpy(y_v).to(device)


def _embed(encoder: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Frozen-encoder representations ``(N, hidden)`` computed once in eval mode."""
    encoder.eval()
    with torch.inference_mode():
        parts = [encoder(x[s : s + batch_size]).float() for s in range(0, x.shape[0], batch_size)]
    return torch.cat(parts).clone()


@dataclass
class _Trainable:
    """What one epoch trains: a module mapping ``inputs`` to logits, with its optimiser."""

    module: nn.Module
    optimizer: torch.optim.Optimizer
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    scaler: torch.amp.GradScaler


def _train_epoch(t: _Trainable, batch_size: int, generator: torch.Generator, device: torch.device) -> float:
    """One shuffled pass of cross-entropy training; returns the sample-weighted mean loss."""
    t.module.train()
    n = t.x_train.shape[0]
    perm = torch.randperm(n, generator=generator, device=device)
    total = torch.zeros((), device=device)
    seen = 0
    for start, stop in batch_slices(n, batch_size):
        idx = perm[start:stop]
        t.optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            logits = t.module(t.x_train[idx])
        loss = F.cross_entropy(logits.float(), t.y_train[idx])
        t.scaler.scale(loss).backward()
        t.scaler.step(t.optimizer)
        t.scaler.update()
        total += loss.detach() * (stop - start)
        seen += stop - start
    return float(total.item() / seen)


def _val_loss(t: _Trainable, batch_size: int = 4096) -> float:
    """Mean cross-entropy on the validation set in eval mode."""
    assert t.x_val is not None and t.y_val is not None
    t.module.eval()
    total = 0.0
    with torch.inference_mode():
        for s in range(0, t.x_val.shape[0], batch_size):
            logits = t.module(t.x_val[s : s + batch_size]).float()
            total += float(F.cross_entropy(logits, t.y_val[s : s + batch_size], reduction="sum"))
    return total / t.x_val.shape[0]


def _fit_loop(
    t: _Trainable,
    params: HeadParams,
    generator: torch.Generator,
    device: torch.device,
    on_epoch_end: EpochCallback | None,
) -> list[float]:
    """Train up to ``max_epochs``; with validation data stop after ``patience`` epochs without a new best
    validation loss and restore the best weights."""
    losses: list[float] = []
    best_loss, best_state, stale = float("inf"), None, 0
    for epoch in range(1, params.max_epochs + 1):
        losses.append(_train_epoch(t, params.batch_size, generator, device))
        if on_epoch_end is not None:
            on_epoch_end(epoch, losses[-1])
        if t.x_val is None:
            continue
        val = _val_loss(t)
        if val < best_loss:
            best_loss, stale = val, 0
            best_state = {k: v.detach().clone() for k, v in t.module.state_dict().items()}
        else:
            stale += 1
            if stale >= params.patience:
                break
    if best_state is not None:
        t.module.load_state_dict(best_state)
    return losses


def fit_encoder_classifier(
    encoder: MLPEncoder,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    n_classes: int,
    *,
    freeze_encoder: bool,
    params: HeadParams | Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    on_epoch_end: EpochCallback | None = None,
) -> tuple[EncoderClassifier, list[float]]:
    """Train a linear head on an encoder (linear probe) or encoder and head together (fine-tuning).

    Loss: cross-entropy over softmax(W f(x) + b); Adam. The caller's encoder is deep-copied, never mutated.
    With validation data, early stopping on validation loss with ``params.patience`` restores the best
    epoch's weights; without it, ``params.max_epochs`` epochs run. With ``freeze_encoder`` the encoder
    stays in eval mode and its representations are computed once.

    Args:
        encoder: Pretrained (or fresh, for the from-scratch baseline) encoder.
        x_train: Preprocessed training matrix ``(N, G)``.
        y_train: Class indices ``(N,)`` in ``[0, n_classes)``.
        x_val: Optional preprocessed validation matrix ``(M, G)``.
        y_val: Validation class indices ``(M,)`` (required with ``x_val``).
        n_classes: Number of classes C >= 2.
        freeze_encoder: True for a linear probe, False to fine-tune.
        params: Optimisation settings: a :class:`HeadParams`, a plain dict of its fields
            (``HeadParams.from_dict``), or None for the defaults. An unset ``lr`` is the head's default
            (:meth:`HeadParams.lr_for`).
        seed: Random seed (head init, shuffling, dropout).
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:i]"``.
        on_epoch_end: Called as ``on_epoch_end(epoch, train_loss)``; exceptions propagate.

    Returns:
        ``(classifier, train_losses)``: the classifier on CPU in eval mode and the per-epoch training losses.

    Raises:
        ValueError: On shapes that disagree, labels that are not class indices in ``[0, n_classes)``, fewer
            than two classes in ``y_train``, or NaN/inf in the inputs.
        TypeError: If ``params`` is neither a :class:`HeadParams` nor a mapping.
    """
    params = _head_params(params, linear_probe=freeze_encoder)
    seed = check_seed(seed)
    dev = resolve_device(device)
    x_tr = np.asarray(x_train, dtype=np.float32)
    y_tr = class_indices(y_train, "y_train")
    _check_xy(x_tr, y_tr, encoder.n_genes, n_classes, "train")
    if x_tr.shape[0] < (1 if freeze_encoder else 2):
        raise ValueError(f"too few training samples: {x_tr.shape[0]}")
    if np.unique(y_tr).size < 2:
        raise ValueError(
            f"y_train holds one class only ({np.unique(y_tr).tolist()}); a classifier needs two or more"
        )
    with seeded(seed, dev):
        enc = copy.deepcopy(encoder).to(dev)
        head = LinearHead(enc.out_dim, n_classes).to(dev)
        classifier = EncoderClassifier(enc, head)
        inputs_tr = torch.from_numpy(x_tr).to(dev)
        inputs_val, y_val_t = _validation_tensors(x_val, y_val, encoder.n_genes, n_classes, dev)
        if freeze_encoder:
            enc.requires_grad_(False)
            inputs_tr = _embed(enc, inputs_tr)
            inputs_val = _embed(enc, inputs_val) if inputs_val is not None else None
            module: nn.Module = head
        else:
            module = classifier
        optimizer = torch.optim.Adam(
            [p for p in module.parameters() if p.requires_grad],
            lr=params.lr_for(linear_probe=freeze_encoder),
            weight_decay=params.weight_decay,
        )
        trainable = _Trainable(
            module, optimizer, inputs_tr, torch.from_numpy(y_tr).to(dev), inputs_val, y_val_t, grad_scaler(dev)
        )
        losses = _fit_loop(trainable, params, make_generator(seed, dev), dev, on_epoch_end)
    return classifier.cpu().eval(), losses


def _head_params(params: HeadParams | Mapping[str, Any] | None, *, linear_probe: bool) -> HeadParams:
    """``params`` as :class:`HeadParams` (a mapping goes through ``from_dict`` for the head)."""
    if isinstance(params, HeadParams):
        return params
    if params is None or isinstance(params, Mapping):
        return HeadParams.from_dict(params, linear_probe=linear_probe)
    raise TypeError(f"params must be a HeadParams or a dict of its fields, got {type(params).__name__}")


def fit_logistic_regression(x_train: np.ndarray, y_train: np.ndarray, *, C: float = 0.1, seed: int = 0) -> Pipeline:
    """L2 logistic regression on standardised expression (the baseline the paper omitted).

    Args:
        x_train: Output of ``Preprocessor.transform`` (z-scored log-expression), ``(N, G)``; the pipeline's
            own StandardScaler is fitted on this training data only (near-identity on standardised input).
        y_train: Class indices ``(N,)``.
        C: Inverse regularisation strength.
        seed: Random state of the solver.

    Returns:
        A fitted ``Pipeline([("scaler", StandardScaler()), ("logreg", LogisticRegression)])``.
    """
    if not C > 0:
        raise ValueError(f"C must be > 0, got {C}")
    pipeline = Pipeline(
        [
            ("scaler", StandardScaler()),
            ("logreg", LogisticRegression(C=C, max_iter=2000, random_state=seed)),
        ]
    )
    return pipeline.fit(np.asarray(x_train, dtype=np.float32), class_indices(y_train, "y_train"))
