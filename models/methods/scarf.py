"""SCARF: self-supervised contrastive learning with random feature corruption (Bahri et al., ICLR 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from models.corruption import feature_bounds, marginal_corruption, uniform_corruption
from models.heads import ProjectionHead
from models.losses import nt_xent
from models.methods.base import MethodParams, SSLMethod
from models.params import param


@dataclass
class ScarfParams(MethodParams):
    """SCARF settings; defaults follow Dradjat et al.'s use of SCARF (see DESIGN.md).

    Attributes:
        hidden_dim: Encoder and projector width (256).
        n_layers: Encoder blocks (4).
        dropout: Encoder dropout (0.2).
        corruption_rate: Fraction of genes corrupted per sample, in [0, 1) (0.3).
        replacement: ``"uniform"`` draws from Uniform(min_j, max_j) of the pretraining set (the paper's
            better variant); ``"marginal"`` takes gene j's value from a random pretraining sample.
        temperature: NT-Xent temperature (1.0).
        lr: Adam learning rate (1e-4).
        batch_size: Mini-batch size (256).
        epochs: Training epochs (1000).
        batchnorm_stats: ``"clean"`` (default: after pretraining, the encoder's BatchNorm running statistics
            are re-estimated on the clean pretraining matrix, the data it is then used on) or ``"training"``
            (the released code's: those accumulated during training, over corrupted views too).
    """

    hidden_dim: int = param(256, low=1)
    n_layers: int = param(4, low=1)
    dropout: float = param(0.2, low=0.0, high=1.0, high_open=True)
    corruption_rate: float = param(0.3, low=0.0, high=1.0, high_open=True)
    replacement: str = param("uniform", choices=("uniform", "marginal"))
    temperature: float = param(1.0, low=0.0, low_open=True)
    lr: float = param(1e-4, low=0.0, low_open=True)
    batch_size: int = param(256, low=2)
    epochs: int = param(1000, low=1)


class Scarf(SSLMethod[ScarfParams]):
    """SCARF pretraining.

    For a batch x ``(B, G)``: mask ``m ~ Bernoulli(corruption_rate)``, corrupted view
    ``x~ = m * u + (1 - m) * x`` (u from the replacement distribution), then
    ``loss = NT-Xent(g(f(x)), g(f(x~)); tau)`` with f the encoder and g the projection head; Adam.
    """

    name: ClassVar[str] = "scarf"
    params_class: ClassVar[type[ScarfParams]] = ScarfParams

    def build_heads(self) -> dict[str, nn.Module]:
        """SCARF's projector: Linear hidden-hidden, BN, ReLU, Linear hidden-hidden."""
        h = self.params.hidden_dim
        return {"projector": ProjectionHead(h, h, h)}

    def setup(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Keep the pretraining matrix ``(N, G)`` (marginal) or its per-gene bounds (uniform)."""
        self._data = x
        self._low, self._high = feature_bounds(x)

    def corrupt(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return the corrupted view of ``batch`` ``(B, G)``."""
        rate = self.params.corruption_rate
        if self.params.replacement == "uniform":
            return uniform_corruption(batch, rate, self._low, self._high, generator=generator)
        return marginal_corruption(batch, rate, generator=generator, source=self._data)[0]

    def training_step(
        self, batch: torch.Tensor, generator: torch.Generator, *, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """NT-Xent between the projections of the clean and the corrupted view of ``batch``."""
        corrupted = self.corrupt(batch, generator)
        projector = self.heads["projector"]
        z_clean = projector(self.encoder(batch))
        z_corrupt = projector(self.encoder(corrupted))
        return nt_xent(z_clean, z_corrupt, self.params.temperature)
