"""The prediction endpoint's own route (app.predictors.router.PredictionRoute): its dependencies' errors in
their order, refusals before the body is read, two worker-thread hops (the key and the rate limit, then the
parse and the prediction), every declared dependency resolved, and the OpenAPI operation it still declares."""

from __future__ import annotations

import gc
import inspect
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import anyio.to_thread
import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import event

from app import ratelimit
from app.auth import service as auth
from app.config import get_settings
from app.db import orm, repository
from app.db.session import session_factory
from app.errors import NotFound
from app.inputs import parse_json_body
from app.jobs import service as jobs
from app.predictions import service as predictions
from app.predictors import router
from tests.app.test_access import add_member, inline_body
from tests.app.test_full_loop import upload
from tests.app.test_lineage_and_limits import fitted
from tests.conftest import LabKey, lab_caller

UNKNOWN_KEY = {"Authorization": "Bearer exs_0123456789ab_" + "x" * 43}
MALFORMED = b'{"genes": ["A"], "samples": [{"sample_id": "s0", "values": ["not a number"]}]}'


@pytest.fixture
def url(client: TestClient) -> str:
    return f"/predictors/{fitted(client, upload(client)['id'])['id']}/predictions"


@contextmanager
def sql_statements() -> Iterator[list[str]]:
    """The SQL statements the registry's engine runs inside the block, as sent."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    engine = session_factory().kw["bind"]
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _post(client: TestClient, url: str, headers: dict[str, str] | None = None, body: bytes = MALFORMED) -> Any:
    return client.post(url, content=body, headers={"content-type": "application/json", **(headers or {})})


def test_errors_come_in_the_order_the_dependencies_declare_them(
    client: TestClient, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = _post(client, url, {"Authorization": ""})
    assert missing.status_code == 401 and "missing API key" in missing.json()["error"]["message"]
    unknown = _post(client, url, UNKNOWN_KEY)
    assert unknown.status_code == 401 and unknown.json()["error"]["message"] == "unknown API key"
    assert unknown.headers["www-authenticate"] == "Bearer"

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


def test_a_request_makes_two_worker_thread_hops_key_and_limit_then_parse_and_prediction(
    client: TestClient, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops: list[int] = []  # the worker thread each hop ran on, in order
    steps: dict[str, int] = {}  # the hop each step ran in
    run_sync = anyio.to_thread.run_sync

    async def counted(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def hop() -> Any:
            hops.append(threading.get_ident())
            return function(*args)

        return await run_sync(hop, **kwargs)

    def recorded(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            steps[name] = len(hops)
            return function(*args, **kwargs)

        return wrapper

    with monkeypatch.context() as patch:  # for this request only; the fixtures' settings stay
        patch.setattr(auth, "authenticate", recorded("key", auth.authenticate))
        patch.setattr(ratelimit, "hit", recorded("rate limit", ratelimit.hit))
        patch.setattr(router, "parse_json_body", recorded("parse", parse_json_body))
        patch.setattr(predictions, "predict", recorded("prediction", predictions.predict))
        patch.setattr(anyio.to_thread, "run_sync", counted)
        response = client.post(url, json=inline_body(3))

    assert response.status_code == 201 and [r["sample_id"] for r in response.json()["results"]] == ["s0", "s1", "s2"]
    assert steps == {"key": 1, "rate limit": 1, "parse": 2, "prediction": 2} and len(hops) == 2
    assert client.get(f"/predictions/{response.json()['id']}").json()["n_samples"] == 3  # stored


def test_an_unknown_key_or_a_limited_user_is_refused_before_the_body_is_read(
    settings: Any, lab_a: LabKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPRSSL_MAX_JSON_BYTES", "2000")
    monkeypatch.setenv("EXPRSSL_RATE_LIMIT_PREDICT", "1/minute")
    get_settings.cache_clear()
    from app.main import create_app

    def chunks() -> Iterator[bytes]:  # 5,000 bytes without a Content-Length: only reading them finds the excess
        yield from (b" " * 500 for _ in range(10))

    url = "/predictors/x/predictions"
    with TestClient(create_app(), headers=lab_a.headers) as client:
        unknown = client.post(url, content=chunks(), headers=UNKNOWN_KEY)
        small = {"genes": ["TP53"], "samples": [{"sample_id": "s0", "values": [1.0]}]}
        assert client.post(url, json=small).status_code == 404  # counted: the limit is reached
        limited = client.post(url, content=chunks())
        _, member = add_member(client)
        too_large = client.post(url, content=chunks(), headers=member)  # a key under its limit: the body is read
    assert unknown.status_code == 401 and unknown.headers["www-authenticate"] == "Bearer"
    assert limited.status_code == 429
    assert too_large.status_code == 413 and "EXPRSSL_MAX_JSON_BYTES" in too_large.json()["error"]["message"]


def test_every_refusal_returns_its_database_connection(client: TestClient, url: str) -> None:
    pool = session_factory().kw["bind"].pool
    unknown_predictor = url.replace("/predictors/", "/predictors/x")
    refusals = [  # refused in hop 1, in hop 2's parse, and in hop 2's endpoint with its session open
        lambda: _post(client, url, UNKNOWN_KEY),
        lambda: _post(client, url),
        lambda: client.post(unknown_predictor, json=inline_body(1)),
    ]
    gc.disable()  # a session left open would otherwise be collected, and its connection returned, by chance
    try:
        statuses = []
        for refuse in refusals:
            statuses.append(refuse().status_code)
            assert pool.checkedout() == 0, f"a connection is still out after the refusal with {statuses[-1]}"
    finally:
        gc.enable()
    assert statuses == [401, 422, 404]


def test_the_route_resolves_every_dependency_the_endpoint_declares(client: TestClient) -> None:
    """PredictionRoute resolves these itself: one added to the endpoint or where its router is included must
    be added there too."""

    def calls(dependant: Any) -> Iterator[str]:
        for sub in dependant.dependencies:
            yield getattr(sub.call, "__qualname__", type(sub.call).__name__)
            yield from calls(sub)

    (route,) = [c for c in iter_route_contexts(client.app.routes)  # type: ignore[attr-defined]
                if c.path == "/predictors/{predictor_id}/predictions" and "POST" in (c.methods or ())]
    assert isinstance(route.original_route, router.PredictionRoute)
    declared = [sub.call for sub in route.dependant.dependencies]
    assert Counter(getattr(call, "__qualname__", "") for call in declared) == Counter({
        "get_caller": 2,  # where the router is included, and the endpoint's caller
        "rate_limited.<locals>.dependency": 1, "json_body.<locals>.parse": 1, "get_session": 1, "get_store": 1,
        "settings_dependency": 1,
    })
    (limit,) = [call for call in declared if call.__qualname__ == "rate_limited.<locals>.dependency"]
    assert inspect.getclosurevars(limit).nonlocals["bucket"] == router.PREDICT
    assert set(calls(route.dependant)) == {  # and what those depend on
        "HTTPBearer", "get_session", "get_caller", "rate_limited.<locals>.dependency", "settings_dependency",
        "json_body.<locals>.parse", "get_store",
    }


def test_the_operation_is_documented_as_declared(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/predictors/{predictor_id}/predictions"]["post"]
    assert set(operation["responses"]) >= {"201", "401", "404", "422", "429"}
    assert operation["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictionRead")
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"cohort_id", "genes", "samples"} <= set(body["properties"]) and operation["requestBody"]["required"]
    assert [p["name"] for p in operation["parameters"]] == ["predictor_id"]
    assert operation["security"] == [{"HTTPBearer": []}]


def test_the_prediction_answered_is_the_one_stored(client: TestClient, url: str) -> None:
    answered = client.post(url, json=inline_body(3))
    assert answered.status_code == 201
    body = answered.json()
    stored = client.get(f"/predictions/{body['id']}").json()
    assert stored == body  # every field: ids, who asked, coverage, uncertainty, drift, results, time
    assert body["n_samples"] == 3 and body["drift"]["n_samples"] == 3 and body["cohort_id"] is None
    assert body["created_by"] == client.get("/me").json()["user_id"]
    listed = client.get(url).json()
    assert [p["id"] for p in listed] == [body["id"]] and listed[0]["created_at"] == body["created_at"]


def test_a_prediction_reads_its_predictor_and_its_encoders_cohort_in_one_query(
    client: TestClient, lab_a: LabKey
) -> None:
    own, pretrained_on = upload(client), upload(client)
    linear_id = str(fitted(client, own["id"])["id"])
    with session_factory()() as session:
        linear = session.get_one(orm.Predictor, linear_id)
        pretrain, fit = (jobs.create_job(session, lab_caller(), kind, {}) for kind in (orm.JobKind.PRETRAIN,
                                                                                         orm.JobKind.FIT))
        encoder = orm.Encoder(lab_id=linear.lab_id, name="e", cohort_id=pretrained_on["id"], job_id=pretrain.id,
                              method="scarf", n_genes=3, status=orm.ArtifactStatus.READY)
        session.add(encoder)
        session.flush()
        with_encoder = orm.Predictor(lab_id=linear.lab_id, name="p", cohort_id=own["id"], job_id=fit.id,
                                     encoder_id=encoder.id, label_column="tissue", head="finetune", label_fraction=1.0)
        session.add(with_encoder)
        session.flush()
        with sql_statements() as queries:
            row = repository.predictor_to_predict(session, with_encoder.id, lab_id=linear.lab_id)
        assert (row.cohort_id, row.fitted_on) == (own["id"], pretrained_on["id"]) and len(queries) == 1
        row = repository.predictor_to_predict(session, linear.id, lab_id=linear.lab_id)
        assert (row.cohort_id, row.fitted_on) == (own["id"], own["id"])
        assert (row.status, row.artifact_key) == (orm.ArtifactStatus.READY, linear.artifact_key)
        for predictor_id, lab_id in ((linear.id, "another lab"), ("no-such-predictor", linear.lab_id)):
            with pytest.raises(NotFound, match=f"^predictor {predictor_id} not found$"):
                repository.predictor_to_predict(session, predictor_id, lab_id=lab_id)
        session.rollback()


def test_an_inline_prediction_runs_three_sql_statements(
    client: TestClient, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The key's last use is written at most once a minute: not during this test, however long the fit took.
    monkeypatch.setattr(auth, "LAST_USED_RESOLUTION", timedelta(days=1))
    assert client.post(url, json=inline_body(2)).status_code == 201  # loads the predictor into the cache
    with sql_statements() as sent:
        assert client.post(url, json=inline_body(2)).status_code == 201
    statements = [" ".join(statement.split()[:4]) for statement in sent]
    # The key with its user and lab, the predictor with its encoder's cohort, the prediction: nothing loaded
    # row by row, no second read of a row already read.
    assert [s.split()[0] for s in statements] == ["SELECT", "SELECT", "INSERT"], statements
    assert "api_key" in statements[0] and "predictor" in statements[1] and "prediction" in statements[2]
