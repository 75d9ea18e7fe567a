from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def _single_thread() -> Iterator[None]:
    """Tiny matrices train faster on one thread, and much faster when other jobs share the 2 cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_x() -> np.ndarray:
    """64 x 30 z-scored matrix with low-rank structure (something to learn)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)) @ rng.normal(size=(4, 30)) + 0.3 * rng.normal(size=(64, 30))
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32)


@pytest.fixture
def labelled() -> tuple[np.ndarray, np.ndarray]:
    """120 x 20 z-scored matrix and 3 separable classes (class c shifts genes 5c..5c+4)."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 40)
    x = rng.normal(size=(120, 20))
    for c in range(3):
        x[y == c, 5 * c : 5 * c + 5] += 2.0
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32), y
