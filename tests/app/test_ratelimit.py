"""app.ratelimit: counts in the in-memory store are taken one at a time (limits' MemoryStorage races)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app import ratelimit
from app.config import Settings


@pytest.fixture
def fresh_limiters() -> Iterator[None]:
    ratelimit._limiter.cache_clear()
    yield
    ratelimit._limiter.cache_clear()


def test_concurrent_requests_are_counted_in_memory_one_at_a_time(
    settings: Settings, fresh_limiters: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = ratelimit._limiter(settings.rate_limit_storage).storage
    acquire = storage.acquire_entry
    inside, most, lock = 0, 0, threading.Lock()

    def slow_acquire(*args: Any, **kwargs: Any) -> bool:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        time.sleep(0.002)  # long enough for the other threads to come in, were they let in
        try:
            return bool(acquire(*args, **kwargs))
        finally:
            with lock:
                inside -= 1

    monkeypatch.setattr(storage, "acquire_entry", slow_acquire)
    errors: list[BaseException] = []

    def user(n: int) -> None:
        try:
            for _ in range(5):
                ratelimit.hit(settings, "predict", f"user{n}")
        except BaseException as exc:  # noqa: BLE001 - any error fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=user, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert settings.rate_limit_storage == "memory://" and errors == []
    assert most == 1
    assert storage.get_moving_window("LIMITER/predict/user3/600/1/minute", 600, 60)[1] == 5  # all counted


def test_only_the_in_memory_store_takes_the_lock() -> None:
    assert ratelimit._in_memory("memory://")
    assert not ratelimit._in_memory("redis://127.0.0.1:6379/1") and not ratelimit._in_memory("rediss://h:6380")
