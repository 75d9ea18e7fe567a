"""Encoders mapping standardised expression to a representation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from models.preprocessing import Preprocessor, require_finite

EMBED_BATCH = 4096  # rows encoded at a time: bounds the activations, not the result


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


BatchCheck = Callable[[np.ndarray, slice], None]


def embed(
    encoder: MLPEncoder,
    x: np.ndarray,
    *,
    preprocessor: Preprocessor | None = None,
    batch_size: int = EMBED_BATCH,
    check_batch: BatchCheck | None = None,
) -> np.ndarray:
    """Representations of samples: the encoder's output in eval mode, without gradients, a batch at a time.

    Eval mode matters twice: BatchNorm uses its running statistics (a batch of one sample works, and a
    sample's vector does not depend on the others in its batch) and dropout is off. The encoder's previous
    mode is restored afterwards, so this can be called between training epochs.

    Args:
        encoder: The encoder, on any device (batches are moved to its parameters' device).
        x: ``(N, G)``: ``Preprocessor.transform`` output, or, with ``preprocessor``, values aligned to its
            panel (NaN for missing genes), preprocessed a batch at a time.
        preprocessor: Applied to each batch of ``x`` first when given.
        batch_size: Rows per forward pass, >= 1.
        check_batch: Called as ``check_batch(z_scores, rows)`` with each preprocessed batch and its ``slice``
            of ``x`` before it is encoded; raise in it to refuse the input (the service names the sample).

    Returns:
        float32 ``(N, encoder.out_dim)``.

    Raises:
        ValueError: If ``x`` is not ``(N, G)`` for the encoder's G, holds NaN or infinite values (after
            preprocessing; the first bad row and column are named), or ``batch_size < 1``.
    """
    arr = np.asarray(x) if preprocessor is not None else np.asarray(x, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != encoder.n_genes:
        raise ValueError(f"x must have shape (n_samples, {encoder.n_genes}), got {arr.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(encoder.parameters()).device
    out = np.empty((arr.shape[0], encoder.out_dim), dtype=np.float32)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.inference_mode():
            for start in range(0, arr.shape[0], batch_size):
                rows = slice(start, min(start + batch_size, arr.shape[0]))
                batch = preprocessor.transform(arr[rows]) if preprocessor is not None else arr[rows]
                if check_batch is not None:
                    check_batch(batch, rows)
                require_finite(batch, "x", row_offset=start)
                out[rows] = encoder(torch.from_numpy(np.ascontiguousarray(batch)).to(device)).float().cpu().numpy()
    finally:
        encoder.train(was_training)
    return out
