"""The prediction endpoint's own route (app.predictors.router.PredictionRoute): its dependencies' errors in
their order, all of a request's work in one worker thread, and the OpenAPI operation it still declares."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app import ratelimit
from app.auth import service as auth
from app.config import get_settings
from app.inputs import parse_json_body
from app.predictions import service as predictions
from app.predictors import router
from tests.app.test_access import add_member, inline_body
from tests.app.test_full_loop import upload
from tests.app.test_lineage_and_limits import fitted

MALFORMED = b'{"genes": ["A"], "samples": [{"sample_id": "s0", "values": ["not a number"]}]}'


@pytest.fixture
def url(client: TestClient) -> str:
    return f"/predictors/{fitted(client, upload(client)['id'])['id']}/predictions"


def _post(client: TestClient, url: str, headers: dict[str, str] | None = None, body: bytes = MALFORMED) -> Any:
    return client.post(url, content=body, headers={"content-type": "application/json", **(headers or {})})


def test_errors_come_in_the_order_the_dependencies_declare(
    client: TestClient, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = _post(client, url, {"Authorization": ""})
    assert missing.status_code == 401 and "missing API key" in missing.json()["error"]["message"]
    unknown = _post(client, url, {"Authorization": "Bearer exs_0123456789ab_" + "x" * 43})
    assert unknown.status_code == 401 and unknown.json()["error"]["message"] == "unknown API key"

    invalid = _post(client, url)  # a valid key: the body's own error, in FastAPI's shape
    assert invalid.status_code == 422
    (error,) = invalid.json()["error"]["details"]
    assert error["loc"] == ["body", "samples", 0, "values", 0] and error["type"] == "float_parsing"

    monkeypatch.setenv("EXPRSSL_RATE_LIMIT_PREDICT", "2/minute")
    get_settings.cache_clear()
    _, member = add_member(client)
    assert _post(client, url, member, b'{"genes": ["A"], "samples": []}').status_code == 422  # counted: 1
    assert _post(client, url.replace("/predictors/", "/predictors/x"), member).status_code == 422  # 2
    limited = _post(client, url, member)  # over the limit before the body is parsed
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1

    unknown_predictor = client.post(url.replace("/predictors/", "/predictors/x"), json=inline_body(1))
    assert unknown_predictor.status_code == 404 and "predictor x" in unknown_predictor.json()["error"]["message"]
    assert client.put(url).status_code == 405 and "POST" in client.put(url).headers["allow"]


def test_a_requests_checks_parse_and_prediction_run_on_one_worker_thread(
    client: TestClient, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, int] = {}

    def recorded(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            threads[name] = threading.get_ident()
            return function(*args, **kwargs)

        return wrapper

    bearer = router.bearer

    async def loop_side(request: Any) -> Any:
        threads["loop"] = threading.get_ident()
        return await bearer(request)

    monkeypatch.setattr(router, "bearer", loop_side)
    monkeypatch.setattr(auth, "authenticate", recorded("key", auth.authenticate))
    monkeypatch.setattr(ratelimit, "hit", recorded("rate limit", ratelimit.hit))
    monkeypatch.setattr(router, "parse_json_body", recorded("parse", parse_json_body))
    monkeypatch.setattr(predictions, "predict", recorded("prediction", predictions.predict))

    response = client.post(url, json=inline_body(3))

    assert response.status_code == 201 and [r["sample_id"] for r in response.json()["results"]] == ["s0", "s1", "s2"]
    assert client.get(f"/predictions/{response.json()['id']}").json()["n_samples"] == 3  # stored
    loop = threads.pop("loop")
    assert set(threads) == {"key", "rate limit", "parse", "prediction"}
    assert len(set(threads.values())) == 1 and loop not in threads.values()


def test_the_operation_is_documented_as_declared(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/predictors/{predictor_id}/predictions"]["post"]
    assert set(operation["responses"]) >= {"201", "401", "404", "422", "429"}
    assert operation["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictionRead")
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"cohort_id", "genes", "samples"} <= set(body["properties"]) and operation["requestBody"]["required"]
    assert [p["name"] for p in operation["parameters"]] == ["predictor_id"]
    assert operation["security"] == [{"HTTPBearer": []}]
