"""A small thread-safe least-recently-used map for what the API process keeps loaded between requests."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """At most ``size`` values (0: none kept), the least recently used dropped first.

    ``make`` runs outside the lock, so a slow load does not block other keys; two threads missing the same
    key may both make it, and the later one is kept.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, make: Callable[[], V]) -> V:
        """The value of ``key``, made (and kept) on a miss."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def discard(self, where: Callable[[K], bool]) -> None:
        """Drop every entry whose key satisfies ``where``."""
        with self._lock:
            for key in [k for k in self._items if where(k)]:
                del self._items[key]
