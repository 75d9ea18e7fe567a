"""Common training loop and interface of the SSL methods (solo-learn style: one class per method)."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np
import torch
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
from models.encoders import EMBED_BATCH, MLPEncoder, embed
from models.params import ParamsMixin, param

STATE_VERSION = 1
BATCHNORM_CHUNK = 2048  # rows per pass when BatchNorm statistics are re-estimated after pretraining


class EpochCallback(Protocol):
    """Called after every epoch; raising inside it (e.g. on cancellation) stops training and propagates."""

    def __call__(self, epoch: int, loss: float) -> None:
        """Report a finished epoch.

        Args:
            epoch: 1-based index of the epoch just finished (absolute, counting resumed epochs).
            loss: Mean training loss of that epoch.
        """


@dataclass
class MethodParams(ParamsMixin):
    """Parameters every SSL method shares: the encoder (Dradjat et al.) and the optimisation loop.

    Attributes:
        hidden_dim: Encoder width.
        n_layers: Encoder blocks.
        dropout: Encoder dropout, in [0, 1).
        lr: Learning rate of the method's optimiser.
        batch_size: Mini-batch size.
        epochs: Training epochs.
        batchnorm_stats: ``"clean"`` (default: after pretraining, the encoder's BatchNorm running statistics
            are re-estimated on the clean pretraining matrix, the data it is then used on) or ``"training"``
            (the released code's: those accumulated during training, over corrupted views too).
    """

    hidden_dim: int = param(256, low=1)
    n_layers: int = param(4, low=1)
    dropout: float = param(0.2, low=0.0, high=1.0, high_open=True)
    lr: float = param(1e-4, low=0.0, low_open=True)
    batch_size: int = param(256, low=2)
    epochs: int = param(1000, low=1)
    # "clean": after pretraining the encoder's BatchNorm statistics are re-estimated on the clean pretraining
    # matrix, the kind of data the encoder is then used on; "training": those accumulated while training
    # (the released code's: for SCARF they average the clean and the corrupted view).
    batchnorm_stats: str = param("clean", choices=("clean", "training"))


P = TypeVar("P", bound=MethodParams)


def _epoch_seed(seed: int, epoch: int) -> int:
    """Seed for one epoch, so a resumed run draws the same numbers as an uninterrupted one."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1)


class SSLMethod(ABC, Generic[P]):
    """A self-supervised pretraining recipe around an :class:`MLPEncoder`.

    Subclasses set ``name`` and ``params_class``, build their heads in :meth:`build_heads`, compute
    data-dependent state in :meth:`setup` and return one batch's loss from :meth:`training_step`.

    Args:
        n_genes: Input width G (the length of the gene panel).
        params: The method's params dataclass; ``None`` means the paper's defaults.
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"`` or ``"cuda[:i]"``.

    Attributes:
        encoder: The representation network.
        heads: Method-specific modules trained together with the encoder.
        params: The validated parameters.
        device: Resolved torch device.
        epoch: Number of epochs completed so far.
    """

    name: ClassVar[str]
    params_class: ClassVar[type[MethodParams]]

    def __init__(self, n_genes: int, params: P | None = None, *, device: str = "auto") -> None:
        if params is None:
            params = self.params_class()  # type: ignore[assignment]
        if not isinstance(params, self.params_class):
            raise TypeError(f"{type(self).__name__} expects {self.params_class.__name__}, got {type(params)}")
        params.validate()
        self.n_genes = int(n_genes)
        self.params: P = params  # type: ignore[assignment]
        self.device = resolve_device(device)
        self.epoch = 0
        self._build()

    def _build(self) -> None:
        """(Re)create encoder, heads, optimiser and gradient scaler from the current RNG state."""
        p = self.params
        self.encoder = MLPEncoder(self.n_genes, p.hidden_dim, p.n_layers, p.dropout)
        self.heads = nn.ModuleDict(self.build_heads())
        self.network = nn.ModuleDict({"encoder": self.encoder, "heads": self.heads}).to(self.device)
        self.optimizer = self.build_optimizer(list(self.network.parameters()))
        self.scaler = grad_scaler(self.device)
        self.epoch = 0

    @abstractmethod
    def build_heads(self) -> dict[str, nn.Module]:
        """Return the method's extra modules (projector, decoders ...), keyed by name."""

    def build_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        """Return the optimiser (Adam by default; methods override to follow their paper)."""
        return torch.optim.Adam(parameters, lr=self.params.lr)

    def setup(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:  # noqa: B027 - optional hook
        """Compute data-dependent state from the full pretraining matrix before training.

        Called by :meth:`fit` on every run, fresh or resumed, after any training state has been loaded.

        Args:
            x: The pretraining matrix ``(N, G)`` on the method's device.
            generator: Seeded from ``fit``'s seed (the same on a resumed run); random draws made here
                (e.g. VIME's fixed corruption) must use it. ``None`` means the global RNG.
        """

    @abstractmethod
    def training_step(
        self, batch: torch.Tensor, generator: torch.Generator, *, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the scalar loss of one batch.

        Args:
            batch: Rows of the pretraining matrix, shape ``(B, G)``.
            generator: Random draws (corruption) must use it.
            index: Positions of ``batch``'s rows in the matrix given to :meth:`setup`, shape ``(B,)``
                (always passed by :meth:`fit`; ``None`` when a caller has no such matrix).
        """

    def after_step(self) -> None:  # noqa: B027 - optional hook
        """Hook after each optimiser step (e.g. BYOL's EMA target update)."""

    def _to_tensor(self, x: np.ndarray) -> torch.Tensor:
        """Validate the preprocessed matrix and move it to the device once as float32 ``(N, G)``."""
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.n_genes:
            raise ValueError(f"x must have shape (n_samples, {self.n_genes}), got {arr.shape}")
        if arr.shape[0] < 2:
            raise ValueError(f"pretraining needs at least 2 samples (BatchNorm), got {arr.shape[0]}")
        if not np.isfinite(arr).all():
            raise ValueError("x contains NaN or infinite values; preprocess it first (Preprocessor.transform)")
        return torch.from_numpy(arr).to(self.device)

    def _resolve_start(self, start_epoch: int, state: dict | None) -> int:
        """Load ``state`` when given and return the epoch to resume after."""
        if start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0, got {start_epoch}")
        if state is None:
            return start_epoch
        saved = int(state.get("epoch", -1))
        if start_epoch not in (0, saved):
            raise ValueError(f"start_epoch={start_epoch} disagrees with the state's epoch {saved}")
        self.load_training_state(state)
        return saved

    def fit(
        self,
        x: np.ndarray,
        *,
        seed: int = 0,
        on_epoch_end: EpochCallback | None = None,
        start_epoch: int = 0,
        state: dict | None = None,
        init_encoder: dict[str, torch.Tensor] | None = None,
    ) -> list[float]:
        """Pretrain on a preprocessed matrix.

        A fresh run (``start_epoch == 0`` and no ``state``) re-initialises the weights from ``seed``, then,
        with ``init_encoder``, loads those encoder weights (continued pretraining; the heads start fresh). A run
        with ``state`` (from :meth:`training_state`) restores model and optimiser and continues after the
        state's epoch; ``start_epoch > 0`` without ``state`` continues with the in-memory weights. Each
        epoch's randomness is seeded from ``(seed, epoch)``, so on CPU a resumed run reproduces an
        uninterrupted one exactly.

        Args:
            x: Preprocessed (z-scored) float32 matrix ``(N, G)``, N >= 2.
            seed: Random seed.
            on_epoch_end: Called as ``on_epoch_end(epoch, loss)``; exceptions it raises propagate.
            start_epoch: Number of epochs already done (0 = fresh start, or take it from ``state``).
            state: Output of :meth:`training_state` to resume from (it holds every weight, so
                ``init_encoder`` is not used then).
            init_encoder: An encoder's ``state_dict`` of this method's architecture to start from.

        Returns:
            Mean training loss of each epoch run (``params.epochs - start_epoch`` values).

        Raises:
            TypeError: If ``seed`` is not an integer.
            ValueError: If ``x`` is not a finite ``(N >= 2, G)`` matrix, or ``state`` does not fit.
        """
        seed = check_seed(seed)
        data = self._to_tensor(x)
        with seeded(seed, self.device):
            if state is None and start_epoch == 0:
                self._build()
                if init_encoder is not None:
                    self.load_encoder_weights(init_encoder)
        start = self._resolve_start(start_epoch, state)
        self.setup(data, make_generator(_epoch_seed(seed, 0), self.device))  # epochs use seeds 1..E
        losses: list[float] = []
        for epoch in range(start + 1, self.params.epochs + 1):
            with seeded(_epoch_seed(seed, epoch), self.device):
                loss = self._run_epoch(data, make_generator(_epoch_seed(seed, epoch), self.device))
            self.epoch = epoch
            losses.append(loss)
            if on_epoch_end is not None:
                on_epoch_end(epoch, loss)
        if self.params.batchnorm_stats == "clean":
            self._estimate_batchnorm(data, make_generator(_epoch_seed(seed, self.params.epochs + 1), self.device))
        self.network.eval()
        return losses

    def _estimate_batchnorm(self, data: torch.Tensor, generator: torch.Generator) -> None:
        """Re-estimate the encoder's BatchNorm running statistics on ``data``, the clean matrix, with dropout
        off as at inference: the mean over shuffled chunks of up to 2,048 rows (shuffled, as rows stored in
        order, e.g. by tissue, would hide the spread between chunks)."""
        norms = [m for m in self.encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average over the batches
        self.encoder.eval()
        for norm in norms:
            norm.train()
        order = torch.randperm(data.shape[0], generator=generator, device=self.device)
        with torch.no_grad(), autocast(self.device):
            for start, stop in batch_slices(data.shape[0], max(self.params.batch_size, BATCHNORM_CHUNK)):
                self.encoder(data[order[start:stop]])
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum

    def batch_order(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Order in which an epoch visits the ``n`` rows, shape ``(n,)``: a fresh permutation (methods override
        to offer their paper's order)."""
        return torch.randperm(n, generator=generator, device=self.device)

    def _run_epoch(self, data: torch.Tensor, generator: torch.Generator) -> float:
        """One pass over mini-batches in :meth:`batch_order`; returns the sample-weighted mean loss."""
        self.network.train()
        n = data.shape[0]
        perm = self.batch_order(n, generator)
        total = torch.zeros((), device=self.device)
        seen = 0
        for start, stop in batch_slices(n, self.params.batch_size):
            index = perm[start:stop]
            batch = data[index]
            self.optimizer.zero_grad(set_to_none=True)
            with autocast(self.device):
                loss = self.training_step(batch, generator, index=index)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.after_step()
            total += loss.detach().float() * (stop - start)
            seen += stop - start
        mean = float(total.item() / seen)
        if not np.isfinite(mean):
            raise FloatingPointError(f"{self.name}: training loss became non-finite ({mean})")
        return mean

    def embed(self, x: np.ndarray, *, batch_size: int = EMBED_BATCH) -> np.ndarray:
        """Representations of preprocessed samples from the encoder in eval mode (:func:`models.encoders.embed`).

        A freshly built method's encoder is in training mode, where BatchNorm cannot take a single sample
        and dropout is on; this always encodes as at inference.

        Args:
            x: ``Preprocessor.transform`` output ``(N, G)``.
            batch_size: Rows per forward pass.

        Returns:
            float32 ``(N, hidden_dim)``.
        """
        return embed(self.encoder, x, batch_size=batch_size)

    def load_encoder_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Start the encoder from ``weights`` (a pretrained encoder's ``state_dict``, strict on keys and shapes).

        Raises:
            ValueError: If the weights are of another architecture (input width, hidden size or depth).
        """
        try:
            self.encoder.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"encoder weights do not fit this {self.name} encoder: {exc}") from exc
        self.on_encoder_loaded()

    def on_encoder_loaded(self) -> None:  # noqa: B027 - optional hook
        """Hook after :meth:`load_encoder_weights` (e.g. BYOL's target network copies the new weights)."""

    def training_state(self) -> dict[str, Any]:
        """Checkpoint for resuming: model and optimiser state dicts and the epoch count.

        Returns:
            A dict of tensors and plain python values, loadable with ``torch.load(weights_only=True)``.
        """
        return {
            "version": STATE_VERSION,
            "method": self.name,
            "epoch": int(self.epoch),
            "params": self.params.to_dict(),
            "model": {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scaler": self.scaler.state_dict(),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`training_state` returned (strict on model keys)."""
        if state.get("method") != self.name:
            raise ValueError(f"training state is for method {state.get('method')!r}, not {self.name!r}")
        saved = dict(state.get("params") or {})
        current = self.params.to_dict()
        # The epoch budget may grow between attempts; every other parameter must match.
        changed = sorted(k for k in current if k != "epochs" and k in saved and saved[k] != current[k])
        if changed:
            raise ValueError(f"training state was produced with different parameters: {changed}")
        self.network.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
