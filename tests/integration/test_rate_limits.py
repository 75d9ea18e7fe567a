"""Rate limits counted in Redis (EXPRSSL_RATE_LIMIT_STORAGE=redis://...): shared by every API process."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app import ratelimit
from app.config import Settings, get_settings
from tests.app.test_full_loop import upload
from tests.integration.conftest import redis_client


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
