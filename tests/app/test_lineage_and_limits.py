"""Deleting cohorts keeps lineage (or, forced by an admin, takes the dependents along); retry; limits; the CLI."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app import cli
from app.auth import service as auth
from app.config import Settings, get_settings
from app.db import orm
from app.db.session import session_factory
from app.jobs import service as jobs
from tests.app.test_access import add_member, inline_body
from tests.app.test_full_loop import COHORT, start, upload
from tests.conftest import LabKey, lab_caller, wait_for_job


def fitted(client: TestClient, cohort_id: object) -> dict[str, object]:
    body = {"cohort_id": cohort_id, "label_column": "tissue", "head": "logistic_regression"}
    accepted = start(client, "/predictors", body)
    assert wait_for_job(client, accepted["job"]["id"])["state"] == "succeeded"
    return client.get(f"/predictors/{accepted['predictor']['id']}").json()


def test_deleting_a_cohort_with_models_is_refused_unless_an_admin_forces_it(
    client: TestClient, settings: Settings
) -> None:
    cohort = upload(client)
    predictor = fitted(client, cohort["id"])
    prediction = client.post(f"/predictors/{predictor['id']}/predictions", json=inline_body()).json()
    refused = client.delete(f"/cohorts/{cohort['id']}")
    assert refused.status_code == 409
    message = refused.json()["error"]["message"]
    assert f"predictor {predictor['id']} ({predictor['name']})" in message
    assert f"prediction {prediction['id']}" in message
    assert "force=true" in message
    # Nothing was lost: the cohort and its predictor still work.
    assert client.get(f"/cohorts/{cohort['id']}").status_code == 200
    assert client.post(f"/predictors/{predictor['id']}/predictions", json=inline_body()).status_code == 201

    artifacts = settings.resolved_artifact_dir
    files_before = {p for p in artifacts.rglob("*") if p.is_file()}
    assert client.delete(f"/cohorts/{cohort['id']}?force=true").status_code == 204
    for path in (f"/cohorts/{cohort['id']}", f"/predictors/{predictor['id']}", f"/predictions/{prediction['id']}"):
        assert client.get(path).status_code == 404, path
    left = {p for p in artifacts.rglob("*") if p.is_file()}
    gone = {p.relative_to(artifacts).parts[0] for p in files_before - left}
    assert gone == {"cohorts", "predictors"}
    assert not any("cohorts" in p.relative_to(artifacts).parts for p in left)  # the stored matrix went too
    assert client.get(f"/jobs/{predictor['job_id']}").json()["state"] == "succeeded"  # the history stays


def test_an_evaluation_using_the_cohorts_encoder_elsewhere_is_lineage_too(client: TestClient) -> None:
    cohort = upload(client)
    other = client.post("/cohorts", files={"expression": ("other.csv", other_cohort_csv())}, data={"name": "other"})
    assert other.status_code == 201, other.text
    accepted = start(client, "/encoders", {"cohort_id": cohort["id"], "params": {"epochs": 1, "batch_size": 64}})
    assert wait_for_job(client, accepted["job"]["id"])["state"] == "succeeded"
    encoder_id = accepted["encoder"]["id"]
    with session_factory()() as session:
        caller = lab_caller()
        job = jobs.create_job(session, caller, orm.JobKind.EVALUATE, {"cohort_id": other.json()["id"]})
        jobs.transition(session, job, orm.JobState.FAILED, message="stopped for the test")
        evaluation = orm.Evaluation(lab_id=caller.lab_id, name="uses E", cohort_id=other.json()["id"], job_id=job.id,
                                    label_column="tissue", config={"encoder_ids": [encoder_id]})
        session.add(evaluation)
        session.commit()
        evaluation_id, job_id = evaluation.id, job.id
    refused = client.delete(f"/cohorts/{cohort['id']}")
    assert refused.status_code == 409 and f"evaluation {evaluation_id} (uses E)" in refused.json()["error"]["message"]
    assert client.delete(f"/cohorts/{cohort['id']}?force=true").status_code == 204
    assert client.get(f"/evaluations/{evaluation_id}").status_code == 404
    assert client.get(f"/cohorts/{other.json()['id']}").status_code == 200  # the other cohort itself stays
    # Neither job can be retried: what they would make is gone.
    for gone in (job_id, accepted["job"]["id"]):
        with session_factory()() as session:
            session.get_one(orm.Job, gone).state = orm.JobState.FAILED
            session.commit()
        response = client.post(f"/jobs/{gone}/retry")
        assert response.status_code == 409 and "was deleted" in response.json()["error"]["message"]


def other_cohort_csv() -> str:
    import pandas as pd

    return pd.read_parquet(COHORT / "expression.parquet").iloc[:40].to_csv()


def test_an_identical_upload_keeps_the_shared_matrix_when_the_first_is_deleted(client: TestClient) -> None:
    first, second = upload(client), upload(client)
    assert second["duplicate_of"] == first["id"]
    assert client.delete(f"/cohorts/{first['id']}").status_code == 204
    assert fitted(client, second["id"])["status"] == "ready"  # its matrix is still stored


def test_deleting_the_original_of_identical_uploads_makes_the_oldest_remaining_one_theirs(client: TestClient) -> None:
    first, second, third = upload(client), upload(client), upload(client)
    assert second["duplicate_of"] == third["duplicate_of"] == first["id"]
    assert client.delete(f"/cohorts/{first['id']}").status_code == 204
    survivor, later = client.get(f"/cohorts/{second['id']}").json(), client.get(f"/cohorts/{third['id']}").json()
    assert survivor["duplicate_of"] is None and survivor["deduplicated"] is False
    assert later["duplicate_of"] == second["id"] and client.get(f"/cohorts/{later['duplicate_of']}").status_code == 200
    assert client.delete(f"/cohorts/{second['id']}").status_code == 204
    assert client.get(f"/cohorts/{third['id']}").json()["duplicate_of"] is None
    assert upload(client)["duplicate_of"] == third["id"]  # the next identical upload names the one left


def test_a_refused_cohort_deletion_leaves_its_duplicates_pointing_at_it(client: TestClient) -> None:
    first, second = upload(client), upload(client)
    fitted(client, first["id"])
    assert client.delete(f"/cohorts/{first['id']}").status_code == 409
    assert client.get(f"/cohorts/{second['id']}").json()["duplicate_of"] == first["id"]


def test_a_cohort_in_use_by_a_running_job_is_not_deleted_even_by_force(client: TestClient) -> None:
    cohort = upload(client)
    job = start(client, "/encoders", {"cohort_id": cohort["id"], "params": {"epochs": 400, "batch_size": 64}})["job"]
    refused = client.delete(f"/cohorts/{cohort['id']}?force=true")
    assert refused.status_code == 409 and job["id"] in refused.json()["error"]["message"]
    client.post(f"/jobs/{job['id']}/cancel")
    assert wait_for_job(client, job["id"])["state"] == "cancelled"


def test_a_cancelled_job_can_be_retried_and_then_succeeds(client: TestClient) -> None:
    cohort = upload(client)
    long = start(client, "/encoders", {"cohort_id": cohort["id"], "params": {"epochs": 2000, "batch_size": 64}})
    accepted = start(client, "/encoders", {"cohort_id": cohort["id"], "params": {"epochs": 3, "batch_size": 64}})
    job_id = accepted["job"]["id"]  # queued behind the long job: the one worker thread is busy
    assert client.post(f"/jobs/{job_id}/cancel").json()["state"] == "cancelled"
    client.post(f"/jobs/{long['job']['id']}/cancel")
    retried = client.post(f"/jobs/{job_id}/retry")
    assert retried.status_code == 200 and retried.json()["state"] in {"queued", "running", "succeeded"}
    job = wait_for_job(client, job_id)
    assert job["state"] == "succeeded" and any("retried by alice" in (e["message"] or "") for e in job["events"])
    encoder = client.get(f"/encoders/{accepted['encoder']['id']}").json()
    assert encoder["status"] == "ready" and len(encoder["loss_curve"]) == 3
    again = client.post(f"/jobs/{job_id}/retry")
    assert again.status_code == 409 and "only failed or cancelled" in again.json()["error"]["message"]


def test_upload_and_inline_limits_name_the_setting(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPRSSL_MAX_UPLOAD_SAMPLES", "100")
    get_settings.cache_clear()
    files = {"expression": ("e.parquet", (COHORT / "expression.parquet").read_bytes())}
    response = client.post("/cohorts", files=files)
    assert response.status_code == 422
    assert "189 samples" in response.json()["error"]["message"]
    assert "EXPRSSL_MAX_UPLOAD_SAMPLES" in response.json()["error"]["message"]
    monkeypatch.setenv("EXPRSSL_MAX_UPLOAD_SAMPLES", "1000")
    monkeypatch.setenv("EXPRSSL_MAX_UPLOAD_GENES", "400")
    get_settings.cache_clear()
    response = client.post("/cohorts", files=files)
    assert response.status_code == 422 and "500 genes" in response.json()["error"]["message"]
    assert client.get("/cohorts").json() == []  # nothing half-stored
    monkeypatch.setenv("EXPRSSL_MAX_UPLOAD_GENES", "1000")
    monkeypatch.setenv("EXPRSSL_MAX_INLINE_SAMPLES", "1")
    get_settings.cache_clear()
    predictor = fitted(client, upload(client)["id"])
    response = client.post(f"/predictors/{predictor['id']}/predictions", json=inline_body(2))
    assert response.status_code == 422 and "EXPRSSL_MAX_INLINE_SAMPLES" in response.json()["error"]["message"]
    monkeypatch.setenv("EXPRSSL_MAX_UPLOAD_GENES", "100")
    get_settings.cache_clear()
    response = client.post(f"/predictors/{predictor['id']}/predictions", json=inline_body(1))
    assert response.status_code == 422 and "500 genes; at most 100" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["e.parquet", "e.csv"])
def test_samples_times_genes_are_bounded_too(client: TestClient, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    monkeypatch.setenv("EXPRSSL_MAX_UPLOAD_CELLS", str(189 * 500 - 1))  # under each axis' limit, over their product
    get_settings.cache_clear()
    frame = pd.read_parquet(COHORT / "expression.parquet")
    data = frame.to_csv().encode() if path.endswith(".csv") else (COHORT / "expression.parquet").read_bytes()

    response = client.post("/cohorts", files={"expression": (path, data)})

    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert "samples x 500 genes" in message and "EXPRSSL_MAX_UPLOAD_CELLS" in message
    assert f"at most {189 * 500 - 1:,} in one cohort" in message
    assert client.get("/cohorts").json() == []
    monkeypatch.setenv("EXPRSSL_MAX_UPLOAD_CELLS", str(189 * 500))
    get_settings.cache_clear()
    assert client.post("/cohorts", files={"expression": (path, data)}).status_code == 201


def test_a_small_file_declaring_a_huge_matrix_is_refused_before_it_is_built(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EXPRSSL_MAX_UPLOAD_SAMPLES", "1000")
    monkeypatch.setenv("EXPRSSL_MAX_UPLOAD_GENES", "1000")
    get_settings.cache_clear()
    n = 200_000  # an empty 200,000 x 200,000 CSR matrix: 149 GiB once dense, a few hundred kB stored
    path = tmp_path / "huge.h5ad"
    with h5py.File(path, "w") as f:
        group = f.create_group("X")
        group.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": np.array([n, n])})
        group.create_dataset("data", data=np.zeros(0, np.float32))
        group.create_dataset("indices", data=np.zeros(0, np.int32))
        group.create_dataset("indptr", data=np.zeros(n + 1, np.int64), compression="gzip")
        for part, prefix in (("obs", "s"), ("var", "g")):
            index = f.create_group(part)
            index.attrs.update({"_index": "_index", "encoding-type": "dataframe", "encoding-version": "0.2.0"})
            names = np.array([f"{prefix}{i}".encode() for i in range(n)], dtype="S7")
            index.create_dataset("_index", data=names, compression="gzip")
    rows = "sample_id,A,B\n" + "".join(f"s{i},1,2\n" for i in range(5000))  # 5,000 samples, streamed
    huge_csv = gzip.compress(rows.encode())
    tall = pd.DataFrame(np.zeros((300_000, 40), np.float32), columns=[f"g{i}" for i in range(40)])
    buffer = io.BytesIO()
    tall.set_axis([f"s{i}" for i in range(300_000)]).rename_axis("sample_id").to_parquet(buffer)
    gct = b"#1.2\n200000\t2\nName\tDescription\tS1\tS2\nTP53\tna\t1\t2\n"  # its header declares 200,000 genes
    cases = {
        "huge.h5ad": (path.read_bytes(), "huge.h5ad: 200,000 samples; this server accepts at most 1,000"),
        "long.csv.gz": (huge_csv, "long.csv.gz: more than 1,000 samples; this server accepts at most 1,000"),
        "tall.parquet": (buffer.getvalue(), "tall.parquet: 300,000 samples; this server accepts at most 1,000"),
        "long.gct": (gct, "long.gct: 200,000 genes; this server accepts at most 1,000"),
    }

    def small_only(make: Any) -> Any:  # the readers must refuse before they allocate the matrix
        def made(shape: Any, *args: Any, **kwargs: Any) -> Any:
            assert np.prod(shape, dtype=np.float64) < 1e7, f"a {shape} array was allocated before the check"
            return make(shape, *args, **kwargs)
        return made

    monkeypatch.setattr(np, "empty", small_only(np.empty))
    monkeypatch.setattr(np, "zeros", small_only(np.zeros))
    for name, (content, message) in cases.items():
        assert len(content) < 2_000_000
        response = client.post("/cohorts", files={"expression": (name, content)})
        assert response.status_code == 422, (name, response.text[:300])
        assert response.json()["error"]["message"].startswith(message)
    assert client.get("/cohorts").json() == []


def test_a_long_file_name_is_cut_to_the_name_columns(client: TestClient) -> None:
    long_name = "x" * 400 + ".parquet"
    files = {"expression": (long_name, (COHORT / "expression.parquet").read_bytes())}

    cohort = client.post("/cohorts", files=files).json()

    assert len(cohort["name"]) == 200 and len(cohort["source_filename"]) == 300


def test_rate_limits_answer_429_with_retry_after_per_user(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    predictor = fitted(client, upload(client)["id"])
    monkeypatch.setenv("EXPRSSL_RATE_LIMIT_PREDICT", "2/minute")
    get_settings.cache_clear()
    url = f"/predictors/{predictor['id']}/predictions"
    assert [client.post(url, json=inline_body(1)).status_code for _ in range(2)] == [201, 201]
    limited = client.post(url, json=inline_body(1))
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
    assert "2 per 1 minute" in limited.json()["error"]["message"]
    _, member = add_member(client)
    assert client.post(url, json=inline_body(1), headers=member).status_code == 201  # counted per user
    monkeypatch.setenv("EXPRSSL_RATE_LIMIT_PREDICT", "often")
    with pytest.raises(ValueError, match="not a rate"):
        Settings()


def test_cli_creates_a_lab_whose_admin_key_works(client: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["admin", "create-lab", "genomics", "--admin", "root"])
    token = next(word for word in capsys.readouterr().out.split() if word.startswith("exs_"))
    me = client.get("/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert (me["lab_name"], me["user_name"], me["role"]) == ("genomics", "root", "admin")
    with pytest.raises(SystemExit, match="already exists"):
        cli.main(["admin", "create-lab", "genomics"])
    cli.main(["admin", "create-key", "--lab", "genomics", "--user", "root"])
    second = next(word for word in capsys.readouterr().out.split() if word.startswith("exs_"))
    assert second != token and client.get("/me", headers={"Authorization": f"Bearer {second}"}).status_code == 200


def test_first_start_of_the_embedded_default_prints_one_admin_key(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    token = cli.bootstrap_local_admin()
    assert token is not None and token in capsys.readouterr().out
    assert cli.bootstrap_local_admin() is None  # the second start makes no new lab or key
    with session_factory()() as session:
        caller = auth.authenticate(session, token)
    assert (caller.lab_name, caller.user_name, caller.is_admin) == ("local", "admin", True)


def test_rows_from_before_labs_are_reachable_after_the_upgrade(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from alembic import command
    from sqlalchemy import create_engine, text

    from app.main import create_app

    database = settings.data_dir / "exprssl.db"
    database.unlink()
    config = cli.alembic_config(settings.resolved_database_url)
    command.upgrade(config, "9b4e2f6a1c37")  # the last revision without labs
    engine = create_engine(settings.resolved_database_url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO job (id, kind, state, params, progress, attempts, cancel_requested, created_at) "
            "VALUES ('oldjob', 'evaluate', 'succeeded', '{}', '{}', 1, 0, '2026-01-01 00:00:00')"
        ))
    engine.dispose()
    command.upgrade(config, "head")
    token = cli.bootstrap_local_admin()  # what `exprssl serve` does at its next start
    assert token is not None and token in capsys.readouterr().out
    assert cli.bootstrap_local_admin() is None
    with TestClient(create_app(), headers={"Authorization": f"Bearer {token}"}) as client:
        assert client.get("/me").json()["lab_name"] == "default"
        assert [job["id"] for job in client.get("/jobs").json()] == ["oldjob"]


def test_deleting_a_cohort_or_a_predictor_drops_the_ridge_imputers_fitted_for_it() -> None:
    from app.predictions.imputation import RidgeCache, RidgeKey

    fits: list[RidgeKey] = []
    cache = RidgeCache(8)
    keys = [RidgeKey("p1", "s1", "matrix-a"), RidgeKey("p2", "s2", "matrix-a"), RidgeKey("p3", "s3", "matrix-b"),
            RidgeKey("p4", "s4", "matrix-b")]

    def fit(key: RidgeKey) -> object:
        fits.append(key)
        return key

    for key in keys:
        cache.imputer(key, lambda key=key: fit(key))  # type: ignore[misc]
    cache.discard_cohort("matrix-a")
    cache.discard_artifacts(["p3"])
    assert [key in cache for key in keys] == [False, False, False, True]
    for key in keys:
        cache.imputer(key, lambda key=key: fit(key))  # type: ignore[misc]
    assert fits == [*keys, *keys[:3]]  # matrix-a's and p3's were fitted again, p4's was kept


def test_lru_cache_keeps_the_most_recently_used_and_drops_on_request() -> None:
    from app.lru import LruCache

    made: list[str] = []
    cache: LruCache[str, str] = LruCache(2)

    def get(key: str) -> str:
        return cache.get(key, lambda: made.append(key) or key.upper())

    assert [get("a"), get("b"), get("a"), get("c")] == ["A", "B", "A", "C"]  # "b" was least recently used
    get("a"), get("b")
    assert made == ["a", "b", "c", "b"]
    cache.discard(lambda key: key == "a")
    get("a")
    assert made[-1] == "a" and LruCache(0).get("x", lambda: "made") == "made"


def test_a_json_body_over_the_limit_is_refused_before_it_is_parsed(
    settings: Settings, lab_a: LabKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPRSSL_MAX_JSON_BYTES", "2000")
    get_settings.cache_clear()
    from app.main import create_app

    body = json.dumps({"cohort_id": "x", "params": {"note": "n" * 3000}}).encode()
    with TestClient(create_app(), headers=lab_a.headers) as client:
        declared = client.post("/encoders", content=body, headers={"content-type": "application/json"})

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
            yield from (body[i : i + 500] for i in range(0, len(body), 500))

        streamed = client.post("/encoders", content=chunks(), headers={"content-type": "application/json"})
        small = client.post("/encoders", json={"cohort_id": "missing"})
        upload = client.post("/cohorts", files={"expression": ("m.csv", b"sample_id,TP53\ns1,1\ns2,2\n" * 1)})

    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["code"] == "payload_too_large" and "EXPRSSL_MAX_JSON_BYTES" in error["message"]
        assert "at most 2,000" in error["message"]
    assert "3,0" in declared.json()["error"]["message"]  # its declared size
    assert small.status_code == 404  # under the limit: read and answered as usual
    assert upload.status_code == 201  # cohort uploads have their own limit (EXPRSSL_MAX_UPLOAD_BYTES)


def test_a_parquet_file_at_the_sample_limit_with_an_annotation_column_is_accepted(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPRSSL_MAX_UPLOAD_SAMPLES", "24")
    get_settings.cache_clear()
    genes = [f"ENSG{i:011d}" for i in range(300)]
    frame = pd.DataFrame(np.arange(300 * 24, dtype=np.float32).reshape(300, 24), columns=[f"S{j}" for j in range(24)])
    frame.insert(0, "gene_name", [f"G{i}" for i in range(300)])
    frame.insert(0, "gene_id", genes)  # genes as rows: 24 samples and one annotation column
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)

    response = client.post("/cohorts", files={"expression": ("genes.parquet", buffer.getvalue())})

    assert response.status_code == 201, response.text
    assert (response.json()["n_samples"], response.json()["n_genes"]) == (24, 300)
    frame.insert(2, "S24", 1.0)  # one sample more than the limit is still refused, once annotations are known
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    refused = client.post("/cohorts", files={"expression": ("more.parquet", buffer.getvalue())})
    assert refused.status_code == 422 and "25 samples" in refused.json()["error"]["message"]
