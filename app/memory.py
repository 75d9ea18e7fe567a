"""The C heap's freed memory: kept for the next requests, handed back to the operating system after a large
upload."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

import pyarrow as pa

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h), and the largest mmap threshold it takes on a 64-bit system.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD_MAX = 32 * 1024**2
KEEP_MAX = 2**31 - 1  # mallopt takes a C int
# Allocation arenas: besides the main one, each keeps up to one 64 MiB heap of freed memory once the trim
# threshold is raised, and glibc makes up to 8 per core for the threads that allocate (the API's thread pool).
ARENAS = 2


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
    """Keep up to ``keep_bytes`` (at most 2 GiB - 1) of freed C-heap memory for the next requests instead of
    handing it back to the system at once (glibc's trim threshold), serve blocks up to 32 MiB from the heap, and
    allocate in at most two arenas; False where the C library is not glibc, ``keep_bytes`` is 0 (glibc's defaults
    stay), or glibc refused a setting (logged).

    By default glibc maps each block over 128 KiB on its own and unmaps it when freed, and returns the heap's
    free top as soon as it passes twice the largest such block; which of the two happens to a process depends
    on its history. A prediction request of 100 inline samples frees some 10 MB (its body's copies, the
    parse's lists) that the next request allocates again: handed back, every page of it faults in anew, about
    4 microseconds a page on a virtual machine, 3-4 ms a request (bench/RESULTS.md). Blocks over 32 MiB (a
    cohort's matrix) are still mapped apart and unmapped when freed; a large upload trims the heap itself
    (:func:`release_freed_memory`). What stays kept: ``keep_bytes`` in the main arena, up to 64 MiB in the
    other (threads share the two arenas, as they share the interpreter's lock anyway); concurrent requests
    needing more than that arena's 64 MiB heap at once get another heap, unmapped again once empty.
    """
    if not 0 <= keep_bytes <= KEEP_MAX:
        raise ValueError(f"keep_bytes {keep_bytes}: between 0 and {KEEP_MAX}")
    mallopt = _libc("mallopt")
    if mallopt is None or keep_bytes == 0:
        return False
    settings = {"M_ARENA_MAX": (M_ARENA_MAX, ARENAS), "M_MMAP_THRESHOLD": (M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX),
                "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, keep_bytes)}
    refused = [name for name, (param, value) in settings.items()
               if not mallopt(ctypes.c_int(param), ctypes.c_int(value))]
    if refused:
        log.warning("glibc refused mallopt %s: freed heap memory may be handed back and fault in again", refused)
    return not refused


def release_freed_memory() -> None:
    """Return free pages to the system: Arrow's memory pool's and the C heap's. An upload's parse frees
    gigabytes in blocks both keep for reuse, so the API process would otherwise stay near its peak."""
    pa.default_memory_pool().release_unused()
    trim = _libc("malloc_trim")
    if trim is not None:
        trim(0)
