"""BYOL: bootstrap your own latent (Grill et al., NeurIPS 2020), with VIME-style tabular views."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar, cast

import torch
from torch import nn

from models.corruption import marginal_corruption
from models.device import batch_slices
from models.heads import ProjectionHead
from models.losses import byol_loss
from models.methods.base import MethodParams, SSLMethod
from models.params import param


@dataclass
class ByolParams(MethodParams):
    """BYOL settings; defaults follow Dradjat et al.'s use of BYOL (see DESIGN.md).

    Attributes:
        hidden_dim: Encoder width (256).
        n_layers: Encoder blocks (4).
        dropout: Encoder dropout (0.2).
        corruption_rate: Probability that an entry of view 2 is replaced, in [0, 1) (0.3).
        projector_hidden_dim: Hidden width of projector and predictor (4096).
        projection_dim: Output width of projector and predictor (256).
        tau: EMA decay of the target network, in [0, 1] (0.9; 1 freezes the target).
        ema_schedule: ``"constant"`` (default: tau every step) or ``"cosine"`` (tau rises from ``tau`` to 1
            over all training steps, Grill et al. Sec. 3.2).
        lr: SGD learning rate (1e-4).
        momentum: SGD momentum, in [0, 1) (0.9).
        batch_size: Mini-batch size (32).
        epochs: Training epochs (50).
        shuffle: Visit the rows in a fresh random order every epoch (default) or, False, in their stored
            order every epoch, as the released code's batches did.
        batchnorm_stats: ``"clean"`` (default: after pretraining, the encoder's BatchNorm running statistics
            are re-estimated on the clean pretraining matrix, the data it is then used on) or ``"training"``
            (the released code's: those accumulated during training, over corrupted views too).
    """

    hidden_dim: int = param(256, low=1)
    n_layers: int = param(4, low=1)
    dropout: float = param(0.2, low=0.0, high=1.0, high_open=True)
    corruption_rate: float = param(0.3, low=0.0, high=1.0, high_open=True)
    projector_hidden_dim: int = param(4096, low=1)
    projection_dim: int = param(256, low=1)
    tau: float = param(0.9, low=0.0, high=1.0)
    ema_schedule: str = param("constant", choices=("constant", "cosine"))
    lr: float = param(1e-4, low=0.0, low_open=True)
    momentum: float = param(0.9, low=0.0, high=1.0, high_open=True)
    batch_size: int = param(32, low=2)
    epochs: int = param(50, low=1)
    shuffle: bool = param(True)


def ema_decay(tau_base: float, step: int, total_steps: int | None, schedule: str) -> float:
    """EMA decay for the update after ``step`` earlier updates.

    ``"constant"``: ``tau_base``. ``"cosine"`` (Grill et al. 2020, Sec. 3.2):
    ``tau_k = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2``, rising from ``tau_base`` at k = 0 to 1 at
    k = K (steps beyond K keep 1).

    Args:
        tau_base: Base decay in [0, 1].
        step: k, the number of updates already made (>= 0).
        total_steps: K, the number of updates in the whole run (needed for ``"cosine"``).
        schedule: ``"constant"`` or ``"cosine"``.

    Returns:
        The decay tau_k.
    """
    if schedule == "constant":
        return float(tau_base)
    if schedule != "cosine":
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    if total_steps is None or total_steps < 1:
        raise ValueError(f"the cosine schedule needs total_steps >= 1, got {total_steps}")
    k = min(max(int(step), 0), int(total_steps))
    return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0


class TargetNetwork(nn.Module):
    """BYOL's target network ``g'(f'(.))``: a copy of the online encoder and projector moved only by EMA.

    Its parameters never require gradients. Its BatchNorm running statistics are buffers that its own
    forward passes update (they are unused in training mode); ``updates`` counts EMA updates, so the
    cosine schedule resumes from a checkpoint at the right step.

    Args:
        encoder: The online encoder f (copied).
        projector: The online projector g (copied).
    """

    updates: torch.Tensor

    def __init__(self, encoder: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder)
        self.projector = copy.deepcopy(projector)
        self.requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Target projections ``z'`` ``(N, projection_dim)`` of inputs ``(N, G)``."""
        return self.projector(self.encoder(x))

    @torch.no_grad()
    def ema_update(self, encoder: nn.Module, projector: nn.Module, tau: float) -> None:
        """``xi <- tau * xi + (1 - tau) * theta`` for every parameter (Grill et al. 2020, Eq. 1)."""
        online = [*encoder.parameters(), *projector.parameters()]
        target = [*self.encoder.parameters(), *self.projector.parameters()]
        for xi, theta in zip(target, online, strict=True):
            xi.mul_(tau).add_(theta.detach(), alpha=1.0 - tau)
        self.updates += 1


class Byol(SSLMethod[ByolParams]):
    """BYOL pretraining on tabular views.

    For a batch x ``(B, G)``: view 1 is x, view 2 is its VIME-style corruption (Bernoulli mask, value
    from another sample of the batch). Online: ``z = g(f(v))``, ``p = q(z)``; target: ``z' = g'(f'(v))``.
    ``loss = l(p1, sg(z2')) + l(p2, sg(z1'))`` with ``l(a, b) = 2 - 2 cos(a, b)`` (Grill et al. 2020, Eq. 2);
    SGD with momentum on the online network; after each step the target follows by EMA (:meth:`after_step`).
    The representation is the online encoder :attr:`encoder`. The target lives in ``heads["target"]``, so
    :meth:`training_state` and resuming carry it.
    """

    name: ClassVar[str] = "byol"
    params_class: ClassVar[type[ByolParams]] = ByolParams
    _total_steps: int | None = None  # K for the cosine schedule, set by setup()

    def build_heads(self) -> dict[str, nn.Module]:
        """Projector g (hidden -> 4096 -> 256), predictor q (256 -> 4096 -> 256) and the target copy."""
        p = self.params
        projector = ProjectionHead(p.hidden_dim, p.projector_hidden_dim, p.projection_dim)
        predictor = ProjectionHead(p.projection_dim, p.projector_hidden_dim, p.projection_dim)
        return {"projector": projector, "predictor": predictor, "target": TargetNetwork(self.encoder, projector)}

    @property
    def target(self) -> TargetNetwork:
        """The EMA target network."""
        return cast(TargetNetwork, self.heads["target"])

    def on_encoder_loaded(self) -> None:
        """The target encoder starts as a copy of the loaded online encoder, as at initialisation."""
        self.target.encoder.load_state_dict(self.encoder.state_dict())

    def build_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        """SGD with momentum over the online parameters only (the target is excluded)."""
        frozen = {id(t) for t in self.heads["target"].parameters()}
        online = [t for t in parameters if id(t) not in frozen]
        return torch.optim.SGD(online, lr=self.params.lr, momentum=self.params.momentum)

    def setup(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Count the optimiser steps K of the whole run from ``x`` ``(N, G)`` (for the cosine schedule)."""
        self._total_steps = self.params.epochs * len(batch_slices(x.shape[0], self.params.batch_size))

    def batch_order(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """A fresh permutation of the ``n`` rows, or with ``shuffle=False`` the stored order ``0..n-1``."""
        if self.params.shuffle:
            return super().batch_order(n, generator)
        return torch.arange(n, device=self.device)

    def current_tau(self) -> float:
        """Decay the next EMA update will use."""
        p = self.params
        return ema_decay(p.tau, int(self.target.updates.item()), self._total_steps, p.ema_schedule)

    def training_step(
        self, batch: torch.Tensor, generator: torch.Generator, *, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Symmetric BYOL loss between the clean and the corrupted view of ``batch`` ``(B, G)``."""
        corrupted, _ = marginal_corruption(batch, self.params.corruption_rate, generator=generator)
        projector, predictor = self.heads["projector"], self.heads["predictor"]
        p1 = predictor(projector(self.encoder(batch)))
        p2 = predictor(projector(self.encoder(corrupted)))
        with torch.no_grad():
            z1, z2 = self.target(batch), self.target(corrupted)
        return byol_loss(p1, z2, p2, z1)

    def after_step(self) -> None:
        """Move the target towards the online encoder and projector by EMA."""
        self.target.ema_update(self.encoder, self.heads["projector"], self.current_tau())
