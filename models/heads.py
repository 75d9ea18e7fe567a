"""Heads placed on top of an encoder: SSL projector, decoders and downstream linear classifier."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """Linear, BatchNorm1d, ReLU, Linear: SCARF's projector g (Bahri et al. 2022, 256-256-256) and BYOL's
    projector g and predictor q (Grill et al. 2020, Sec. 3.3: hidden 4096, output 256).

    Args:
        in_dim: Encoder output width.
        hidden_dim: Hidden width.
        out_dim: Width of the vectors compared by the contrastive loss.
    """

    def __init__(self, in_dim: int = 256, hidden_dim: int = 256, out_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Project representations ``(N, in_dim)`` to ``(N, out_dim)``."""
        return self.net(h)


class MLPDecoder(nn.Module):
    """A multilayer perceptron decoder: ``n_layers`` x [Linear -> hidden_dim, ReLU], then Linear -> out_dim.

    VIME's mask estimator and feature estimator (Yoon et al. 2020, Sec. 4.1) as sized by Dradjat et al.
    (4 x 256 hidden units, then one output per gene). The output is raw (logits or linear values);
    the caller applies any sigmoid. ``n_layers=0`` gives a single linear layer (VIME's released code).

    Args:
        in_dim: Representation width.
        hidden_dim: Width of every hidden layer.
        n_layers: Number of hidden layers (>= 0).
        out_dim: Output width (G for VIME).
    """

    def __init__(self, in_dim: int, hidden_dim: int, n_layers: int, out_dim: int) -> None:
        super().__init__()
        if in_dim < 1 or hidden_dim < 1 or n_layers < 0 or out_dim < 1:
            raise ValueError(
                "in_dim, hidden_dim and out_dim must be >= 1 and n_layers >= 0, "
                f"got {in_dim}, {hidden_dim}, {n_layers}, {out_dim}"
            )
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU()]
            width = hidden_dim
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Decode representations ``(N, in_dim)`` to ``(N, out_dim)``."""
        return self.net(h)


class LinearHead(nn.Module):
    """One linear layer producing class logits (softmax is applied by the loss or at prediction).

    Args:
        in_dim: Encoder output width.
        n_classes: Number of classes C.
    """

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.in_dim = int(in_dim)
        self.n_classes = int(n_classes)
        self.linear = nn.Linear(in_dim, n_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Map representations ``(N, in_dim)`` to logits ``(N, C)``."""
        return self.linear(h)
