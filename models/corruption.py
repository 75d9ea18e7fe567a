"""Vectorised feature corruption for tabular SSL (SCARF, VIME, BYOL views).

Every function takes an explicit ``torch.Generator`` (or ``None`` for the global RNG) so that
corruption is reproducible for a given seed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch


def _generator_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    """Device random numbers must be drawn on for ``generator`` (its own device, else ``fallback``)."""
    return torch.device(generator.device) if generator is not None else fallback


# CPU draws of at least _PARALLEL_MIN entries are split into _RNG_CHUNKS blocks, each with its own generator.
_RNG_CHUNKS = 4
_PARALLEL_MIN = 1 << 20


def _rand(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform [0, 1) draws of ``shape`` on ``device``, drawn on the generator's device.

    torch's CPU uniform kernel runs on one thread at about 4 ns a number, and one (256, 20000) draw took as
    long as the encoder's first layer. Large CPU draws are therefore split into ``_RNG_CHUNKS`` blocks, each
    filled by numpy's SFC64 generator (about 2 ns a number, GIL released) seeded from ``generator``, on up
    to ``torch.get_num_threads()`` threads. The numbers depend on the seed and the shape only, not on the
    thread count. float32 draws carry 24 random bits, as torch's do.
    """
    draw_on = _generator_device(generator, device)
    if draw_on.type != "cpu" or math.prod(shape) < _PARALLEL_MIN or dtype not in _NUMPY_FLOATS:
        return torch.rand(tuple(shape), generator=generator, device=draw_on, dtype=dtype).to(device)
    seeds = torch.randint(2**63 - 1, (_RNG_CHUNKS,), generator=generator).tolist()
    out = np.empty(math.prod(shape), dtype=_NUMPY_FLOATS[dtype])
    blocks = np.array_split(out, _RNG_CHUNKS)
    generators = [np.random.Generator(np.random.SFC64(seed)) for seed in seeds]
    workers = min(_RNG_CHUNKS, torch.get_num_threads())
    if workers == 1:
        list(map(_fill_uniform, blocks, generators))
    else:
        list(_rng_pool(workers).map(_fill_uniform, blocks, generators))
    return torch.from_numpy(out).view(tuple(shape)).to(device)


@functools.cache
def _rng_pool(workers: int) -> ThreadPoolExecutor:
    """One pool per thread count, kept for the process: draws run on every batch, threads need not."""
    return ThreadPoolExecutor(workers, thread_name_prefix="exprssl-rng")


_NUMPY_FLOATS = {torch.float32: np.float32, torch.float64: np.float64}


def _fill_uniform(block: np.ndarray, generator: np.random.Generator) -> None:
    """Fill ``block`` in place with U[0, 1) draws from ``generator``.

    float32: the top 24 bits of raw 32-bit words, ``(w >> 8) * 2**-24 + 0.5`` for ``w`` read as signed,
    which is exact and uniform on the 2**24 multiples of 2**-24 in [0, 1) (numpy's own float32 path is
    twice as slow). Every step is a numpy ufunc that releases the GIL.
    """
    if block.dtype != np.float32:
        generator.random(out=block, dtype=block.dtype)
        return
    words = generator.bit_generator.random_raw((block.size + 1) // 2).view(np.int32)[: block.size]
    np.right_shift(words, 8, out=words)
    np.multiply(words, np.float32(2.0**-24), out=block, casting="unsafe")
    block += np.float32(0.5)


def _check_2d(x: torch.Tensor, name: str = "x") -> None:
    """Raise ValueError unless ``x`` is a 2-D (N, G) tensor."""
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_genes), got shape {tuple(x.shape)}")


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


def _draw(
    x: torch.Tensor, rate: float, *, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniform draw per entry serving both the mask and the replacement (inverse-CDF reuse).

    ``u ~ U[0, 1)`` and ``m = u < rate`` (so ``m ~ Bernoulli(rate)``); given ``m``, ``u / rate`` is again
    uniform on [0, 1), so it can pick the replacement too. This halves the random numbers drawn per
    batch, which on CPU cost about as much as the first linear layer's forward pass. torch draws float32
    with 24 random bits, so given ``m`` ``u / rate`` takes ``ceil(rate * 2**24)`` equally likely values
    (about 5 million at rate 0.3).

    Args:
        x: The batch ``(N, G)`` to corrupt (its shape and device are used).
        rate: Probability that an entry is corrupted, in [0, 1).
        generator: Random generator (its device is used for drawing).

    Returns:
        ``(u, m)``: ``(N, G)`` draws on ``x``'s device (float64 for a float64 ``x``, else float32) and
        the bool ``(N, G)`` mask.
    """
    _check_2d(x)
    _check_rate(rate)
    u = _rand(x.shape, generator=generator, device=x.device, dtype=_draw_dtype(x))
    return u, u < rate


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1), got {rate}")


def _draw_dtype(x: torch.Tensor) -> torch.dtype:
    """Draws are float64 for a float64 batch, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def uniform_corruption(
    x: torch.Tensor,
    rate: float,
    low: torch.Tensor,
    high: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SCARF's corruption with uniform replacement (Bahri et al. 2022, Sec. 3).

    ``m_ij ~ Bernoulli(rate)``, ``x~_ij = m_ij * v_ij + (1 - m_ij) * x_ij`` with
    ``v_ij ~ U(low_j, high_j)``. Mask and value come from one uniform draw ``u`` (see :func:`_draw`):
    ``m = u < rate`` and ``v = low + (u / rate) * (high - low)``.

    Args:
        x: Batch of shape ``(N, G)``.
        rate: Probability that an entry is replaced, in [0, 1).
        low: Per-gene lower bounds, shape ``(G,)``.
        high: Per-gene upper bounds, shape ``(G,)``, ``high >= low``.
        generator: Random generator.

    Returns:
        Corrupted copy of ``x``, shape ``(N, G)``, dtype of ``x``.
    """
    _check_2d(x)
    n_genes = x.shape[1]
    if low.shape != (n_genes,) or high.shape != (n_genes,):
        raise ValueError(f"low/high must have shape ({n_genes},), got {tuple(low.shape)} and {tuple(high.shape)}")
    if bool((high < low).any()):
        raise ValueError("high must be >= low for every gene")
    _check_rate(rate)
    if rate == 0.0:
        return x.clone()
    u = _rand(x.shape, generator=generator, device=x.device, dtype=_draw_dtype(x))
    # m as 0/1 floats, merged arithmetically: torch.where on a bool mask costs several times these passes
    # on CPU. x * (1 - m) + v * m is exact for m in {0, 1} (x and v finite).
    take = torch.rsub(u, rate).sign_().clamp_(min=0.0)  # 1 where u < rate, else 0
    low = low.to(device=x.device, dtype=u.dtype)
    scale = (high.to(device=x.device, dtype=u.dtype) - low) / rate
    values = torch.addcmul(low, u, scale, out=u)  # in place of u
    return torch.rsub(take, 1.0).mul_(x.to(u.dtype)).addcmul_(values, take).to(x.dtype)


def _batch_donor_index(u: torch.Tensor, rate: float) -> torch.Tensor:
    """Flat positions ``r_ij * G + j`` of each entry's value, from the draws ``u`` of :func:`_draw`.

    Where ``u_ij < rate``, ``k = floor(u_ij / rate * (N - 1))`` is uniform on ``0..N-2`` and the donor
    ``r_ij = (i + 1 + k) mod N`` is uniform over the rows other than ``i``; elsewhere ``k`` is clamped to
    ``N - 1``, so ``r_ij = i`` and the entry keeps its own value (no separate merge with ``x`` needed).
    Row arithmetic runs in place on ``u`` on whole numbers below 2N (exact in float32 for N < 2**23), and
    positions are int32 written over ``u`` when they fit: every fresh ``(N, G)`` buffer costs page faults
    on each batch, and an int64 index doubles the memory traffic. Overwrites ``u``.

    Args:
        u: float32 or float64 draws ``(N, G)``, N >= 2; overwritten.
        rate: The corruption rate ``u`` was thresholded at, in (0, 1).

    Returns:
        Integer tensor ``(N, G)`` of positions in ``x.reshape(-1)``.
    """
    n, g = u.shape
    rows = torch.arange(1, n + 1, device=u.device, dtype=u.dtype).unsqueeze(1)
    u.mul_((n - 1) / rate).floor_().clamp_(max=n - 1).add_(rows).fmod_(n)  # whole numbers: r_ij
    if u.dtype == torch.float32 and n * g < 2**31:
        index = u.view(torch.int32).copy_(u)  # converted in place: one (N, G) allocation fewer
    else:
        index = u.long()
    cols = torch.arange(g, device=u.device, dtype=index.dtype)
    return index.mul_(g).add_(cols)


def marginal_corruption(
    x: torch.Tensor,
    rate: float,
    *,
    generator: torch.Generator | None = None,
    source: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace entries with the same gene's value from a random row (the gene's empirical marginal).

    ``m_ij ~ Bernoulli(rate)``; ``x~_ij = x_ij`` where ``m_ij = 0``, else ``S[r_ij, j]`` with a row ``r_ij``
    drawn independently per entry (SCARF's marginal variant, Bahri et al. 2022; VIME's ``x_bar``, Yoon et
    al. 2020, Sec. 4.1). Without ``source``, ``S = x`` and ``r_ij`` is uniform over the batch's rows other
    than ``i`` (mask and donor from one draw, see :func:`_draw`; donor probabilities are equal to within a
    relative ``(N - 1) / (rate * 2**24)``, 5e-5 for a batch of 256 at rate 0.3). With ``source`` (e.g. the
    whole pretraining set), ``r_ij`` is drawn exactly uniformly over its M rows with a second draw.

    Args:
        x: Batch of shape ``(N, G)``.
        rate: Probability that an entry is replaced, in [0, 1).
        generator: Random generator (the mask's draw first, then any donor draw).
        source: Optional donor matrix ``(M, G)``, M >= 1.

    Returns:
        ``(x_tilde, drawn)``: the corrupted copy ``(N, G)`` and the bool mask ``m`` ``(N, G)``. With a
        single row and no source, ``x_tilde`` equals ``x`` (there is no other row to draw from).
    """
    _check_2d(x)
    if source is not None:
        _check_2d(source, "source")
        if source.shape[1] != x.shape[1] or source.shape[0] < 1:
            raise ValueError(f"source must have shape (M >= 1, {x.shape[1]}), got {tuple(source.shape)}")
    u, drawn = _draw(x, rate, generator=generator)
    if source is not None:
        draw_on = _generator_device(generator, x.device)
        donor = torch.randint(source.shape[0], tuple(x.shape), generator=generator, device=draw_on)
        donors = source.to(x.device, x.dtype).gather(0, donor.to(x.device))
        return torch.where(drawn, donors, x), drawn
    if x.shape[0] < 2 or rate == 0.0:
        return x.clone(), drawn
    index = _batch_donor_index(u, rate)
    return x.reshape(-1).index_select(0, index.view(-1)).view(x.shape), drawn


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


VIME_REPLACEMENTS = ("other_row", "column_permutation")


def column_permutation(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each column of ``x`` shuffled by its own random permutation of the rows (VIME's released ``x_bar``).

    The permutations are the column-wise ``argsort`` of uniform draws, all columns at once. A row keeps its
    own value with probability 1/N per gene.

    Args:
        x: Matrix ``(N, G)``.
        generator: Random generator.

    Returns:
        ``x_bar`` ``(N, G)`` with ``x_bar[:, j] = x[pi_j, j]`` for a permutation ``pi_j`` per column.
    """
    _check_2d(x)
    keys = _rand(x.shape, generator=generator, device=x.device)
    return x.gather(0, keys.argsort(dim=0))


def vime_corruption(
    x: torch.Tensor, rate: float, *, generator: torch.Generator | None = None, replacement: str = "other_row"
) -> MaskedView:
    """VIME's mask generator and pretext generator (Yoon et al. 2020, Eq. 3).

    ``m_ij ~ Bernoulli(rate)``, ``x~ = m * x_bar + (1 - m) * x`` where ``x_bar_ij`` is gene j's value in
    another row of ``x``, drawn per entry (:func:`marginal_corruption`): a sample of the gene's empirical
    marginal, as the paper states. The released code draws ``x_bar`` as one permutation per column
    (sampling without replacement, which maps a row to itself with probability 1/N); drawing per entry
    with replacement from the other rows gives every entry the same marginal, never hands a row its own
    value and avoids sorting an ``(N, G)`` matrix per batch. As in the released code
    (``m_new = 1 * (x != x_tilde)``) the label is ``m & (x~ != x)``: a donor with a tied value (zero counts,
    a constant gene) leaves the entry unchanged, and an unchanged entry cannot be detected.

    Args:
        x: Clean matrix of shape ``(N, G)``.
        rate: ``p_m``, the probability that an entry is replaced, in [0, 1).
        generator: Random generator.
        replacement: ``"other_row"`` (the per-entry draw above) or ``"column_permutation"`` (the released
            code's :func:`column_permutation`, drawn after the mask).

    Returns:
        :class:`MaskedView` with ``x_tilde``, ``mask`` (labels) and ``drawn`` (``m``), each ``(N, G)``.
    """
    if replacement == "column_permutation":
        _, drawn = _draw(x, rate, generator=generator)
        x_tilde = torch.where(drawn, column_permutation(x, generator=generator), x)
    elif replacement == "other_row":
        x_tilde, drawn = marginal_corruption(x, rate, generator=generator)
    else:
        raise ValueError(f"replacement must be one of {VIME_REPLACEMENTS}, got {replacement!r}")
    return MaskedView(x_tilde=x_tilde, mask=torch.ne(x_tilde, x).logical_and_(drawn), drawn=drawn)
