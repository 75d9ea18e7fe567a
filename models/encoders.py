"""Encoders mapping standardised expression to a representation."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class MLPEncoder(nn.Module):
    """The shared encoder of Dradjat et al.: ``n_layers`` x [Linear -> hidden, BatchNorm1d, ReLU, Dropout].

    The representation is the output of the last block.

    Args:
        n_genes: Input width G.
        hidden_dim: Width of every block (the paper: 256).
        n_layers: Number of blocks (the paper: 4).
        dropout: Dropout probability after each block (the paper: 0.2).
    """

    def __init__(self, n_genes: int, hidden_dim: int = 256, n_layers: int = 4, dropout: float = 0.2) -> None:
        super().__init__()
        if n_genes < 1 or hidden_dim < 1 or n_layers < 1:
            raise ValueError(f"n_genes, hidden_dim and n_layers must be >= 1, got {n_genes}, {hidden_dim}, {n_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.n_genes = int(n_genes)
        self.hidden_dim = int(hidden_dim)
        self.out_dim = int(hidden_dim)
        self.n_layers = int(n_layers)
        self.dropout = float(dropout)
        blocks: list[nn.Module] = []
        in_dim = self.n_genes
        for _ in range(self.n_layers):
            blocks += [
                nn.Linear(in_dim, hidden_dim),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
            in_dim = hidden_dim
        self.net = nn.Sequential(*blocks)

    def config(self) -> dict[str, Any]:
        """Return the constructor keyword arguments (``MLPEncoder(**enc.config())`` rebuilds it)."""
        return {
            "n_genes": self.n_genes,
            "hidden_dim": self.hidden_dim,
            "n_layers": self.n_layers,
            "dropout": self.dropout,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode a batch.

        Args:
            x: Standardised expression, shape ``(N, G)``.

        Returns:
            Representation of shape ``(N, hidden_dim)``.
        """
        return self.net(x)
