"""Device selection and mixed-precision helpers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def accepted_devices() -> list[str]:
    """The device names :func:`resolve_device` takes on this machine (``mps`` where PyTorch supports it)."""
    return ["auto", "cpu", "cuda", "cuda:N", *(["mps"] if _mps_available() else [])]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve ``"auto"`` to CUDA when available, else CPU.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` (Apple GPUs, where available) or a
            ``torch.device``.

    Returns:
        The torch device to use.

    Raises:
        ValueError: For any other name (torch's own error lists some twenty device types this code never
            runs on), or a device this machine lacks.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    accepted = ", ".join(accepted_devices())
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be one of {accepted}; got {device!r}") from exc
    if resolved.type not in ("cpu", "cuda", "mps") or (resolved.type == "mps" and not _mps_available()):
        raise ValueError(f"device must be one of {accepted}; got {device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return resolved


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``device``: bf16 where supported on CUDA, else fp16 on CUDA, None on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on CUDA (mixed precision), a no-op elsewhere."""
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Gradient scaler, enabled only for fp16 autocast (bf16 and fp32 need none)."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)


def check_seed(seed: object) -> int:
    """``seed`` as an int; a TypeError naming it for anything but an integer (None, a float, a bool)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    return int(seed)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG (dropout, init) inside a forked RNG scope, restoring it afterwards.

    Args:
        seed: Seed for the scope.
        device: The device whose RNG must also be forked (CUDA only).
    """
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def batch_slices(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Batch boundaries over ``n`` items, dropping a trailing batch of size 1 (BatchNorm needs >= 2).

    The trailing singleton is only dropped when other batches exist, so ``n == 1`` yields one batch.
    """
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds.pop()
    return bounds
