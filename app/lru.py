"""Thread-safe least-recently-used maps for what the API process keeps loaded between requests."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import torch

from app.config import Settings
from app.errors import Conflict
from app.storage import ArtifactStore
from models import checkpoint
from models.device import resolve_device

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

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is kept (does not count as a use)."""
        with self._lock:
            return key in self._items

    def discard(self, where: Callable[[K], bool]) -> None:
        """Drop every entry whose key satisfies ``where``."""
        with self._lock:
            for key in [k for k in self._items if where(k)]:
                del self._items[key]


class ArtifactCache(Generic[V]):
    """Artifacts loaded from the store onto one device, by (key, sha256), least recently used first out.

    Keys include the checksum, and artifacts are never overwritten, so an entry can never be stale; a deleted
    model's entry ages out, or is dropped with :meth:`discard`.
    """

    def __init__(self, size: int, load: Callable[[bytes, torch.device], V], device: torch.device | None = None) -> None:
        self.size = size
        self.device = device or torch.device("cpu")
        self._load = load
        self._items: LruCache[tuple[str, str], V] = LruCache(size)

    def get(self, store: ArtifactStore, key: str, sha256: str) -> V:
        """The artifact ``key`` loaded, from the cache or the store; one whose contents the loader refuses
        (its checksum matched: written so by an older version, say) is a Conflict, not a server error."""
        return self._items.get((key, sha256), lambda: self._load_checked(store, key, sha256))

    def _load_checked(self, store: ArtifactStore, key: str, sha256: str) -> V:
        try:
            return self._load(store.get_bytes(key, sha256=sha256), self.device)
        except checkpoint.ArtifactError as exc:
            raise Conflict(f"the stored model {key} cannot be used: {exc}; fit or pretrain it again") from exc

    def discard(self, key: str) -> None:
        self._items.discard(lambda item: item[0] == key)


_caches: dict[str, ArtifactCache[Any]] = {}


def cached(name: str, settings: Settings, load: Callable[[bytes, torch.device], V]) -> ArtifactCache[V]:
    """Return this process's cache ``name``, sized by EXPRSSL_PREDICTOR_CACHE_SIZE on EXPRSSL_INFERENCE_DEVICE;
    it starts anew when either setting changes."""
    device = resolve_device(settings.inference_device)
    cache = _caches.get(name)
    if cache is None or cache.size != settings.predictor_cache_size or cache.device != device:
        cache = _caches[name] = ArtifactCache(settings.predictor_cache_size, load, device)
    return cache
