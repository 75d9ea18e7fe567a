"""Self-supervised losses as pure functions that validate their arguments."""

from __future__ import annotations

import math
from typing import NamedTuple

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


class VimeLoss(NamedTuple):
    """VIME-self loss and its two terms (scalars, float32).

    Attributes:
        total: ``mask + alpha * feature``.
        mask: Binary cross-entropy of the mask estimator.
        feature: Mean squared error of the feature estimator.
    """

    total: torch.Tensor
    mask: torch.Tensor
    feature: torch.Tensor


def vime_loss(
    mask_logits: torch.Tensor,
    mask: torch.Tensor,
    feature_pred: torch.Tensor,
    x: torch.Tensor,
    alpha: float = 2.0,
) -> VimeLoss:
    """VIME self-supervised loss (Yoon et al. 2020, Eq. 4): ``l_m + alpha * l_r``.

    ``l_m = -1/(N G) sum_ij [m_ij log s(a_ij) + (1 - m_ij) log(1 - s(a_ij))]`` (s the sigmoid of the logits
    a, computed stably from logits) and ``l_r = 1/(N G) sum_ij (x^_ij - x_ij)^2``, both averaged over every
    entry as Keras' ``binary_crossentropy`` and ``mean_squared_error`` do in the released code.

    Args:
        mask_logits: Mask estimator logits, shape ``(N, G)``.
        mask: Mask labels, bool or 0/1 float, shape ``(N, G)``; any other value raises ValueError.
        feature_pred: Feature estimator output, shape ``(N, G)``.
        x: Clean input (the reconstruction target), shape ``(N, G)``.
        alpha: Weight of the reconstruction term, >= 0 (Dradjat et al.: 2.0).

    Returns:
        :class:`VimeLoss` ``(total, mask, feature)``, float32 even under autocast.
    """
    shapes = [tuple(t.shape) for t in (mask_logits, mask, feature_pred, x)]
    if x.ndim != 2 or len(set(shapes)) != 1:
        raise ValueError(f"mask_logits, mask, feature_pred and x must be 2-D with equal shapes, got {shapes}")
    if x.numel() == 0:
        raise ValueError("vime_loss needs at least one entry")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        # BCE against a 2 is defined (and negative-going) but means nothing: labels are 0/1
        bad = mask[(mask != 0) & (mask != 1)].reshape(-1)[0].item()
        raise ValueError(f"mask must hold 0/1 labels (or be bool), got {bad}")
    bce = F.binary_cross_entropy_with_logits(mask_logits.float(), mask.float())
    mse = F.mse_loss(feature_pred.float(), x.float())
    return VimeLoss(total=bce + alpha * mse, mask=bce, feature=mse)


def byol_regression(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's normalised regression loss (Grill et al. 2020, Eq. 2), averaged over the batch.

    ``l(p, z) = 1/N sum_i (2 - 2 <p_i, z_i> / (||p_i|| ||z_i||))``, in [0, 4]. ``z`` is detached here
    (the stop-gradient ``sg``): no gradient ever flows into the target.

    Args:
        p: Online predictions ``q(z)``, shape ``(N, D)``.
        z: Target projections ``z'``, shape ``(N, D)``.

    Returns:
        Scalar float32 loss.
    """
    if p.ndim != 2 or p.shape != z.shape:
        raise ValueError(f"p and z must be 2-D with equal shapes, got {tuple(p.shape)} and {tuple(z.shape)}")
    if p.shape[0] < 1:
        raise ValueError("byol loss needs at least one pair")
    cos = F.cosine_similarity(p.float(), z.detach().float(), dim=1, eps=1e-8)
    return (2.0 - 2.0 * cos).mean()


def byol_loss(p1: torch.Tensor, z2: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    """Symmetrised BYOL loss (Grill et al. 2020, Eq. 2 plus its swapped-view term L~).

    ``L = l(q(z1), sg(z2')) + l(q(z2), sg(z1'))`` with ``l`` from :func:`byol_regression`, so
    ``L`` is in [0, 8]. The stop-gradient is applied inside (the targets are detached), whatever the caller did.

    Args:
        p1: Online prediction of view 1, ``q(g(f(x1)))``, shape ``(N, D)``.
        z2: Target projection of view 2, ``g'(f'(x2))``, shape ``(N, D)``.
        p2: Online prediction of view 2, shape ``(N, D)``.
        z1: Target projection of view 1, shape ``(N, D)``.

    Returns:
        Scalar float32 loss.
    """
    return byol_regression(p1, z2) + byol_regression(p2, z1)
