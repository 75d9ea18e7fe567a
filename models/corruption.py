"""Vectorised feature corruption for tabular SSL (SCARF, VIME, BYOL views).

Every function takes an explicit ``torch.Generator`` (or ``None`` for the global RNG) so that
corruption is reproducible for a given seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch


def _generator_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    """Device random numbers must be drawn on for ``generator`` (its own device, else ``fallback``)."""
    return torch.device(generator.device) if generator is not None else fallback


def _rand(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform [0, 1) draws of ``shape`` on ``device``, drawn on the generator's device."""
    draw_on = _generator_device(generator, device)
    return torch.rand(tuple(shape), generator=generator, device=draw_on, dtype=dtype).to(device)


def _check_2d(x: torch.Tensor, name: str = "x") -> None:
    """Raise ValueError unless ``x`` is a 2-D (N, G) tensor."""
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_genes), got shape {tuple(x.shape)}")


def _check_mask(x: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise ValueError unless ``mask`` is a boolean tensor shaped like ``x``."""
    _check_2d(x)
    if mask.shape != x.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal x shape {tuple(x.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")


def feature_bounds(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-gene minimum and maximum over samples.

    Args:
        x: Matrix of shape ``(N, G)`` with N >= 1.

    Returns:
        ``(low, high)``, each of shape ``(G,)``.
    """
    _check_2d(x)
    if x.shape[0] == 0:
        raise ValueError("feature_bounds needs at least one sample")
    return x.amin(dim=0), x.amax(dim=0)


def corruption_mask(
    shape: Sequence[int],
    rate: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draw a corruption mask ``m_ij ~ Bernoulli(rate)`` (SCARF/VIME).

    Args:
        shape: ``(N, G)``.
        rate: Probability that an entry is corrupted, in [0, 1).
        generator: Random generator (its device is used for drawing).
        device: Device of the returned mask.

    Returns:
        Bool tensor of ``shape``; True marks entries to replace.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1), got {rate}")
    if len(shape) != 2:
        raise ValueError(f"shape must be (n_samples, n_genes), got {tuple(shape)}")
    return _rand(shape, generator=generator, device=torch.device(device)) < rate


def uniform_replacement(
    x: torch.Tensor,
    mask: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Replace masked entries with ``Uniform(low_j, high_j)`` draws (SCARF, Bahri et al. 2022, Sec. 3).

    ``x~_ij = m_ij * u_ij + (1 - m_ij) * x_ij`` with ``u_ij ~ U(low_j, high_j)``.

    Args:
        x: Batch of shape ``(N, G)``.
        mask: Bool mask of shape ``(N, G)``.
        low: Per-gene lower bounds, shape ``(G,)``.
        high: Per-gene upper bounds, shape ``(G,)``, ``high >= low``.
        generator: Random generator.

    Returns:
        Corrupted copy of ``x``, shape ``(N, G)``.
    """
    _check_mask(x, mask)
    n_genes = x.shape[1]
    if low.shape != (n_genes,) or high.shape != (n_genes,):
        raise ValueError(f"low/high must have shape ({n_genes},), got {tuple(low.shape)} and {tuple(high.shape)}")
    if bool((high < low).any()):
        raise ValueError("high must be >= low for every gene")
    u = _rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    low = low.to(device=x.device, dtype=x.dtype)
    high = high.to(device=x.device, dtype=x.dtype)
    return torch.where(mask, low + u * (high - low), x)


def marginal_replacement(
    x: torch.Tensor,
    mask: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    source: torch.Tensor | None = None,
) -> torch.Tensor:
    """Replace masked entries with the same gene's value from a random row (empirical marginal).

    ``x~_ij = x_ij`` where unmasked, else ``S[r_ij, j]`` with a row ``r_ij`` drawn independently per entry
    (SCARF's marginal variant, Bahri et al. 2022; VIME's column-wise resampling, Yoon et al. 2020).
    Without ``source``, ``S = x`` and ``r_ij != i`` (another row of the batch, when N > 1); with
    ``source`` (e.g. the whole pretraining set), ``r_ij`` is uniform over its rows.

    Args:
        x: Batch of shape ``(N, G)``.
        mask: Bool mask of shape ``(N, G)``.
        generator: Random generator.
        source: Optional donor matrix ``(M, G)``, M >= 1.

    Returns:
        Corrupted copy of ``x``, shape ``(N, G)``.
    """
    _check_mask(x, mask)
    u = _rand(x.shape, generator=generator, device=x.device, dtype=torch.float64)
    if source is not None:
        _check_2d(source, "source")
        if source.shape[1] != x.shape[1] or source.shape[0] < 1:
            raise ValueError(f"source must have shape (M >= 1, {x.shape[1]}), got {tuple(source.shape)}")
        m = source.shape[0]
        donor = torch.floor(u * m).long().clamp_(max=m - 1)
        return torch.where(mask, source.to(x.device, x.dtype).gather(0, donor), x)
    n = x.shape[0]
    if n < 2:
        return x.clone()
    # Offset in 1..n-1 from the current row so the donor row always differs from the row itself.
    offset = 1 + torch.floor(u * (n - 1)).long().clamp_(max=n - 2)
    donor = (torch.arange(n, device=x.device).unsqueeze(1) + offset) % n
    return torch.where(mask, x.gather(0, donor), x)


class MaskedView(NamedTuple):
    """A corrupted view and its mask labels (VIME's pretext task).

    Attributes:
        x_tilde: Corrupted matrix ``(N, G)``.
        mask: Bool ``(N, G)``; True where ``x_tilde`` differs from the clean value (the label to predict).
        drawn: Bool ``(N, G)``; the Bernoulli draw ``m`` (a superset of ``mask``).
    """

    x_tilde: torch.Tensor
    mask: torch.Tensor
    drawn: torch.Tensor


def column_permutation(
    x: torch.Tensor, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Permute every column of ``x`` independently (VIME's ``x_bar``, Yoon et al. 2020, Sec. 4.1).

    ``x_bar[i, j] = x[pi_j(i), j]`` with an independent uniform permutation ``pi_j`` per gene, so each
    gene keeps its empirical marginal while its link to the other genes of the sample is broken. Drawn
    without a loop as the argsort of a uniform ``(N, G)`` matrix along the samples.

    Args:
        x: Matrix of shape ``(N, G)``.
        generator: Random generator.

    Returns:
        ``(x_bar, donor)``: the permuted matrix ``(N, G)`` and the long tensor ``(N, G)`` of source rows.
    """
    _check_2d(x)
    keys = _rand(x.shape, generator=generator, device=x.device, dtype=torch.float64)
    donor = keys.argsort(dim=0)
    return x.gather(0, donor), donor


def vime_corruption(x: torch.Tensor, rate: float, *, generator: torch.Generator | None = None) -> MaskedView:
    """VIME's mask generator and pretext generator (Yoon et al. 2020, Eq. 3; released ``pretext_generator``).

    ``m_ij ~ Bernoulli(rate)``, ``x~ = m * x_bar + (1 - m) * x`` with ``x_bar`` from
    :func:`column_permutation`. As in the released code (``m_new = 1 * (x != x_tilde)``) the label is
    ``m & (x~ != x)``: a permutation can hand a row its own value (probability 1/N, more with tied values
    such as zero counts), and an entry that did not change cannot be detected, so it is not labelled.

    Args:
        x: Clean matrix of shape ``(N, G)``.
        rate: ``p_m``, the probability that an entry is replaced, in [0, 1).
        generator: Random generator (mask first, then the permutation).

    Returns:
        :class:`MaskedView` with ``x_tilde``, ``mask`` (labels) and ``drawn`` (``m``), each ``(N, G)``.
    """
    _check_2d(x)
    drawn = corruption_mask(x.shape, rate, generator=generator, device=x.device)
    x_bar, _ = column_permutation(x, generator=generator)
    x_tilde = torch.where(drawn, x_bar, x)
    return MaskedView(x_tilde=x_tilde, mask=drawn & (x_tilde != x), drawn=drawn)
