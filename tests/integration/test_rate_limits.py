"""Rate limits counted in Redis (EXPRSSL_RATE_LIMIT_STORAGE=redis://...): shared by every API process."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from app import ratelimit
from app.config import Settings, get_settings
from tests.app.test_full_loop import start, upload
from tests.conftest import make_lab, wait_for_job
from tests.integration.conftest import PrivateRedis, Worker, redis_client


def test_upload_limit_is_counted_in_redis_across_processes(
    api: TestClient, distributed: Settings, broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPRSSL_RATE_LIMIT_STORAGE", broker_url)
    monkeypatch.setenv("EXPRSSL_RATE_LIMIT_UPLOAD", "2/minute")
    get_settings.cache_clear()
    ratelimit._limiter.cache_clear()

    first, second = upload(api), upload(api)
    ratelimit._limiter.cache_clear()  # as another API process: no counts of its own in memory
    refused = api.post("/cohorts", files={"expression": ("x.csv", b"sample_id,TP53\ns1,1.0\n")})

    assert first["id"] != second["id"]
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    assert "upload" in refused.json()["error"]["message"] and "2 per 1 minute" in refused.json()["error"]["message"]
    assert any(b"upload" in key for key in redis_client(broker_url).keys("*"))
    assert len(api.get("/cohorts").json()) == 2  # the refused upload stored nothing
    ratelimit._limiter.cache_clear()


def test_redis_down_lets_requests_through_uncounted_and_the_job_runs_once_it_is_back(
    distributed: Settings,
    private_redis: PrivateRedis,
    start_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """docker-compose.yml keeps the broker and the rate-limit counts in one Redis. While it is down, uploads and
    training requests used to answer a bare 500 (the count store raised); they are accepted uncounted now."""
    from app.main import create_app

    monkeypatch.setenv("EXPRSSL_BROKER_URL", private_redis.url)
    monkeypatch.setenv("EXPRSSL_RATE_LIMIT_STORAGE", private_redis.url.removesuffix("/0") + "/1")
    get_settings.cache_clear()
    ratelimit._limiter.cache_clear()
    try:
        with TestClient(create_app(), headers=make_lab("lab-a").headers) as api:
            start_worker("w1", broker=private_redis.url)
            upload(api)  # counted in Redis
            private_redis.stop()

            cohort = upload(api)
            body = {"cohort_id": cohort["id"], "label_column": "tissue", "head": "logistic_regression"}
            job_id = start(api, "/predictors", body)["job"]["id"]
            job = api.get(f"/jobs/{job_id}").json()
            assert job["state"] == "queued" and job["dispatched_at"] is None  # not sent: the broker is down
            ready = api.get("/ready")
            assert ready.status_code == 503 and not ready.json()["checks"]["broker"]["ok"]
            assert "rate-limit storage unreachable" in caplog.text and "upload request" in caplog.text

            private_redis.start()
            job = wait_for_job(api, job_id, timeout=120)
            assert job["state"] == "succeeded", job["error"]
    finally:
        ratelimit._limiter.cache_clear()
