"""Heads placed on top of an encoder: SSL projector and downstream linear classifier."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """SCARF's projector g (Bahri et al. 2022): Linear, BatchNorm1d, ReLU, Linear.

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
