"""Self-supervised losses as pure functions that validate their arguments."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Normalised temperature-scaled cross-entropy over 2N views (SimCLR, Chen et al. 2020; SCARF).

    With ``z = [z1; z2]`` L2-normalised and ``s_ab = z_a . z_b / tau``, the loss is

    ``L = 1/(2N) * sum_a -log( exp(s_{a,p(a)}) / sum_{b != a} exp(s_ab) )``

    where ``p(i) = i + N`` and ``p(i + N) = i`` (each view's positive is the other view of the same sample;
    the remaining 2N - 2 vectors are negatives).

    Args:
        z1: First-view projections, shape ``(N, D)``, N >= 1.
        z2: Second-view projections, shape ``(N, D)``.
        temperature: tau > 0.

    Returns:
        Scalar loss tensor (float32 even under autocast).
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must be 2-D with equal shapes, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 1:
        raise ValueError("nt_xent needs at least one pair")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0).float(), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    idx = torch.arange(n, device=z.device)
    targets = torch.cat([idx + n, idx])
    return F.cross_entropy(logits, targets)
