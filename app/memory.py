"""The C heap's freed memory: kept for the next requests, handed back to the operating system after a large
upload."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

import pyarrow as pa

# glibc's mallopt parameters (malloc.h), and the largest mmap threshold it takes on a 64-bit system.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 1024**2


@functools.cache
def _libc(function: str) -> Callable[..., int] | None:
    """A function of glibc (``malloc_trim``, ``mallopt``), or None on another C library."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        found: Callable[..., int] = getattr(ctypes.CDLL(name), function)
    except (OSError, AttributeError):
        return None
    return found


def keep_freed_memory(keep_bytes: int) -> bool:
    """Keep up to ``keep_bytes`` of freed C-heap memory for the next requests instead of handing it back to the
    system at once (glibc's trim threshold), and serve blocks up to 32 MiB from the heap; False where the C
    library is not glibc or ``keep_bytes`` is 0 (glibc's defaults stay).

    By default glibc maps each block over 128 KiB on its own and unmaps it when freed, and returns the heap's
    free top as soon as it passes twice the largest such block; which of the two happens to a process depends
    on its history. A prediction request of 100 inline samples frees some 10 MB (its body's copies, the
    parse's lists) that the next request allocates again: handed back, every page of it faults in anew, about
    4 microseconds a page on a virtual machine, 3-4 ms a request (bench/RESULTS.md). Blocks over 32 MiB (a
    cohort's matrix) are still mapped apart and unmapped when freed; a large upload trims the heap itself
    (:func:`release_freed_memory`).
    """
    mallopt = _libc("mallopt")
    if mallopt is None or keep_bytes <= 0:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, keep_bytes))


def release_freed_memory() -> None:
    """Return free pages to the system: Arrow's memory pool's and the C heap's. An upload's parse frees
    gigabytes in blocks both keep for reuse, so the API process would otherwise stay near its peak."""
    pa.default_memory_pool().release_unused()
    trim = _libc("malloc_trim")
    if trim is not None:
        trim(0)
