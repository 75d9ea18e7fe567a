"""Per-user rate limits on the expensive endpoints, counted by the `limits` library (memory or Redis)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from functools import lru_cache
from typing import Any

from fastapi import Depends, status
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

from app.auth.deps import CallerDep
from app.config import Settings
from app.deps import SettingsDep
from app.errors import ErrorBody, TooManyRequests

log = logging.getLogger(__name__)

BUCKETS = ("upload", "train", "predict")
# A shared count store (Redis) that does not answer within this long is taken as down.
STORAGE_TIMEOUT_S = 2.0
RATE_LIMITED: dict[int | str, dict[str, object]] = {
    429: {"model": ErrorBody, "description": "Rate limit reached; the Retry-After header says when to retry"}
}


# The in-memory count store (`limits` 5.8's MemoryStorage) restarts its expiry timer thread without a lock:
# two threads counting at once can both replace it, and one then starts the other's, which raises
# RuntimeError "threads can only be started once" (limits pull request 352), a 500 for the request. Counts
# in memory are taken one at a time; a Redis store needs no such lock.
_MEMORY_COUNT = threading.Lock()


def _in_memory(storage_uri: str) -> bool:
    return storage_uri.split("://", 1)[0] == "memory"


@lru_cache
def _limiter(storage_uri: str) -> MovingWindowRateLimiter:
    options: dict[str, float] = {}
    if storage_uri.split("://", 1)[0] in ("redis", "rediss"):
        # Without them, a Redis host that drops packets holds every limited request for minutes.
        options = {"socket_connect_timeout": STORAGE_TIMEOUT_S, "socket_timeout": STORAGE_TIMEOUT_S}
    return MovingWindowRateLimiter(storage_from_string(storage_uri, **options))


def limit_for(settings: Settings, bucket: str) -> RateLimitItem:
    """The configured limit of ``bucket``; ValueError names the setting when it does not parse."""
    text = getattr(settings, f"rate_limit_{bucket}")
    try:
        return parse(text)
    except ValueError as exc:
        raise ValueError(f"EXPRSSL_RATE_LIMIT_{bucket.upper()}={text!r} is not a rate such as '10/minute'") from exc


def hit(settings: Settings, bucket: str, user_id: str) -> None:
    """Count one request of ``user_id`` against ``bucket``; TooManyRequests when over the limit.

    While the count store (Redis) is unreachable the request is let through uncounted, with a warning in the
    log: the limits guard the workers' time, and a Redis outage must not turn every upload, training request
    and prediction into a server error (queued jobs reach the workers once the broker is back).
    """
    item = limit_for(settings, bucket)
    limiter = _limiter(settings.rate_limit_storage)
    try:
        with _MEMORY_COUNT if _in_memory(settings.rate_limit_storage) else nullcontext():
            if limiter.hit(item, bucket, user_id):
                return
            reset_at, _ = limiter.get_window_stats(item, bucket, user_id)
    except (RedisError, StorageError, OSError) as exc:
        log.warning("rate-limit storage unreachable (%s: %s); %s request of user %s not counted",
                    type(exc).__name__, exc, bucket, user_id)
        return
    retry_after = max(1, math.ceil(reset_at - time.time()))
    raise TooManyRequests(
        f"rate limit for {bucket} requests reached ({item}); retry in {retry_after} s", retry_after=retry_after
    )


def rate_limited(bucket: str) -> Callable[[CallerDep, SettingsDep], None]:
    """A dependency that counts the caller's request against ``bucket``."""

    def dependency(caller: CallerDep, settings: SettingsDep) -> None:
        hit(settings, bucket, caller.user_id)

    return dependency


def job_start_route() -> dict[str, Any]:
    """Route options shared by the endpoints that queue a training job (pretraining, fitting, evaluation):
    202 Accepted, counted against the caller's "train" limit, with its 429 documented."""
    return {
        "status_code": status.HTTP_202_ACCEPTED,
        "dependencies": [Depends(rate_limited("train"))],
        "responses": RATE_LIMITED,
    }
