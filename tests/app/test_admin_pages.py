"""Admin pages through TestClient: login, lab scoping, roles, CSRF, job filters and paging, cancel and retry."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.admin import views
from app.admin.service import EfficiencyPoint
from app.auth import service as auth
from app.auth.service import Caller
from app.config import Settings, get_settings
from app.db import orm
from app.db.session import session_factory
from app.encoders import service as encoders
from app.encoders.schemas import EncoderCreate
from app.jobs import service as jobs
from tests.app.test_full_loop import upload
from tests.conftest import LabKey, lab_caller, make_lab, wait_for_job


@pytest.fixture
def pages(settings: Settings, lab_a: LabKey) -> Iterator[TestClient]:
    """The app with no bearer header, logged in to the admin pages as lab A's admin."""
    from app.main import create_app

    with TestClient(create_app()) as test_client:
        login(test_client, lab_a.key)
        yield test_client


def login(client: TestClient, key: str) -> None:
    client.cookies.clear()
    response = client.post("/admin/login", data={"api_key": key}, follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/admin/jobs"


def add_member(lab: LabKey, name: str = "bob") -> tuple[Caller, str]:
    """A member of the lab and their API key."""
    admin = lab_caller_for(lab)
    with session_factory()() as session:
        user = auth.create_user(session, admin, name=name, role=orm.Role.MEMBER)
        key, token = auth.create_key(session, admin, user_id=user.id, name="k")
        caller = Caller.of(user, key.id)
    return caller, token


def lab_caller_for(lab: LabKey) -> Caller:
    with session_factory()() as session:
        name = session.get_one(orm.Lab, lab.lab_id).name
    return lab_caller(name)


def queued_job(caller: Caller, kind: orm.JobKind = orm.JobKind.PRETRAIN, **params: object) -> str:
    """A job that stays queued: it is registered but never handed to the worker."""
    with session_factory()() as session:
        job = jobs.create_job(session, caller, kind, {"cohort_id": "none", **params})
        session.commit()
        return job.id


def failed_job(caller: Caller, message: str) -> str:
    job_id = queued_job(caller)
    with session_factory()() as session:
        job = session.get_one(orm.Job, job_id)
        jobs.transition(session, job, orm.JobState.RUNNING)
        jobs.transition(session, job, orm.JobState.FAILED, message=message)
        session.commit()
    return job_id


def job_state(job_id: str) -> orm.JobState:
    with session_factory()() as session:
        return session.get_one(orm.Job, job_id).state


def job_rows(html: str) -> list[tuple[str, str]]:
    return re.findall(r'data-job-id="(\w+)" data-state="(\w+)"', html)


def test_login_cookie_logout(settings: Settings, lab_a: LabKey) -> None:
    from app.main import create_app

    with TestClient(create_app()) as client:
        response = client.get("/admin/jobs", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/admin/login"
        assert 'name="api_key"' in client.get("/admin/login").text

        wrong = client.post("/admin/login", data={"api_key": "exs_nope_nope"})
        assert wrong.status_code == 401
        assert 'id="login-error"' in wrong.text and "unknown API key" in wrong.text
        assert "exprssl_session" not in wrong.headers.get("set-cookie", "")

        response = client.post("/admin/login", data={"api_key": lab_a.key}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/admin/jobs"
        cookie = response.headers["set-cookie"].lower()
        assert cookie.startswith("exprssl_session=") and "httponly" in cookie
        assert "samesite=strict" in cookie and "path=/admin" in cookie
        page = client.get("/admin/jobs")
        assert page.status_code == 200 and "alice (admin)" in page.text and "Users &amp; keys" in page.text
        # The cookie opens the admin pages only, not the REST API.
        assert client.get("/jobs").status_code == 401

        # The cookie holds a session token, not the key; the registry keeps only the token's SHA-256.
        token = client.cookies["exprssl_session"]
        secret = lab_a.key.split("_", 2)[2]  # the key's secret part (it may itself hold "_")
        assert lab_a.key not in token and secret not in token
        with session_factory()() as session:
            stored = session.scalars(select(orm.AdminSession)).one()
            assert stored.token_sha256 == auth.digest(token) and token not in stored.token_sha256
            assert timedelta(hours=11.9) < stored.expires_at - stored.created_at <= timedelta(hours=12)
        assert "max-age=43200" in cookie

        assert client.post("/admin/logout", follow_redirects=False).status_code == 303
        assert client.get("/admin/jobs", follow_redirects=False).status_code == 303
        # Logging out ended the session in the registry: the old cookie, replayed, opens nothing.
        client.cookies.set("exprssl_session", token, path="/admin")
        response = client.get("/admin/jobs", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/admin/login"
        with session_factory()() as session:
            assert session.scalars(select(orm.AdminSession)).all() == []
            actions = [e.action for e in session.scalars(select(orm.AuditEvent).order_by(orm.AuditEvent.id))]
        assert actions[-2:] == ["admin.login", "admin.logout"]


@pytest.mark.parametrize(("setting", "base_url", "secure"), [
    (None, "http://testserver", False), (None, "https://testserver", True),
    ("true", "http://testserver", True),  # behind a TLS proxy that forwards plain HTTP
    ("false", "https://testserver", False),
])
def test_the_session_cookie_is_secure_over_https_or_when_set(
    settings: Settings, lab_a: LabKey, monkeypatch: pytest.MonkeyPatch, setting: str | None, base_url: str,
    secure: bool,
) -> None:
    from app.main import create_app

    if setting is not None:
        monkeypatch.setenv("EXPRSSL_ADMIN_COOKIE_SECURE", setting)
    get_settings.cache_clear()
    with TestClient(create_app(), base_url=base_url) as client:
        response = client.post("/admin/login", data={"api_key": lab_a.key}, follow_redirects=False)
    assert response.status_code == 303
    assert ("; secure" in response.headers["set-cookie"].lower()) is secure


def test_an_expired_session_goes_back_to_the_login_page(pages: TestClient) -> None:
    assert pages.get("/admin/jobs", follow_redirects=False).status_code == 200
    with session_factory()() as session:
        stored = session.scalars(select(orm.AdminSession)).one()
        stored.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        session.commit()

    response = pages.get("/admin/jobs", follow_redirects=False)

    assert response.status_code == 303 and response.headers["location"] == "/admin/login"
    with session_factory()() as session:
        assert session.scalars(select(orm.AdminSession)).all() == []  # dropped when found expired


def admin_sessions() -> list[orm.AdminSession]:
    with session_factory()() as session:
        return list(session.scalars(select(orm.AdminSession)))


def test_logging_in_again_ends_the_previous_session_and_drops_expired_ones(pages: TestClient, lab_a: LabKey) -> None:
    member, key = add_member(lab_a)
    other = TestClient(pages.app)
    login(other, key)  # another browser, soon expired
    with session_factory()() as session:
        expired = session.scalars(select(orm.AdminSession).where(orm.AdminSession.key_id == member.key_id)).one()
        expired.expires_at = datetime.now(UTC) - timedelta(minutes=1)
        session.commit()
    first = pages.cookies["exprssl_session"]

    response = pages.post("/admin/login", data={"api_key": lab_a.key}, follow_redirects=False)

    assert response.status_code == 303
    second = pages.cookies["exprssl_session"]
    assert second != first and [s.token_sha256 for s in admin_sessions()] == [auth.digest(second)]
    replay = TestClient(pages.app, cookies={"exprssl_session": first})
    assert replay.get("/admin/jobs", follow_redirects=False).headers["location"] == "/admin/login"


def test_using_the_pages_marks_the_key_used(pages: TestClient, lab_a: LabKey) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=3)
    with session_factory()() as session:
        key = session.scalars(select(orm.ApiKey).where(orm.ApiKey.lab_id == lab_a.lab_id)).one()
        key.last_used_at = long_ago
        session.commit()

    assert pages.get("/admin/jobs").status_code == 200

    with session_factory()() as session:
        key = session.scalars(select(orm.ApiKey).where(orm.ApiKey.lab_id == lab_a.lab_id)).one()
        assert key.last_used_at is not None and key.last_used_at > long_ago + timedelta(days=2)


def test_a_disabled_user_is_logged_out(pages: TestClient, lab_a: LabKey) -> None:
    member, key = add_member(lab_a)
    login(pages, key)
    assert pages.get("/admin/jobs", follow_redirects=False).status_code == 200
    sessions = {s.key_id for s in admin_sessions()}
    assert member.key_id in sessions and len(sessions) == 2  # the fixture's admin login and the member's
    with session_factory()() as session:
        auth.update_user(session, lab_caller_for(lab_a), member.user_id, role=None, disabled=True)

    response = pages.get("/admin/jobs", follow_redirects=False)

    assert response.status_code == 303 and response.headers["location"] == "/admin/login"
    assert {s.key_id for s in admin_sessions()} == sessions - {member.key_id}  # the member's login ended


def test_revoked_key_ends_the_session(pages: TestClient, lab_a: LabKey) -> None:
    with session_factory()() as session:
        key = session.scalars(select(orm.ApiKey).where(orm.ApiKey.lab_id == lab_a.lab_id)).one()
        auth.revoke_key(session, lab_caller("lab-a"), key.id)
    response = pages.get("/admin/cohorts", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/admin/login"
    assert admin_sessions() == []  # revoking the key ended its logins in the registry too


def test_another_labs_rows_are_404_pages(pages: TestClient, lab_a: LabKey) -> None:
    lab_b = make_lab("lab-b", "beth")
    other = queued_job(lab_caller("lab-b"))
    response = pages.get(f"/admin/jobs/{other}")
    assert response.status_code == 404 and "Not found" in response.text
    assert pages.post(f"/admin/jobs/{other}/cancel").status_code == 404
    assert job_state(other) is orm.JobState.QUEUED
    # Lab B's cohort, encoder and predictor (and the plots drawn from them) are 404 pages for lab A.
    pages.headers.update(lab_b.headers)
    cohort = upload(pages)
    fit = pages.post("/predictors", json={"cohort_id": cohort["id"], "label_column": "tissue",
                                          "head": "logistic_regression"}).json()
    pretrain = pages.post("/encoders", json={"cohort_id": cohort["id"], "params": {"epochs": 1, "batch_size": 64}})
    for job in (fit["job"], pretrain.json()["job"]):
        assert wait_for_job(pages, job["id"])["state"] == "succeeded"
    del pages.headers["Authorization"]
    for path in (f"cohorts/{cohort['id']}", f"encoders/{pretrain.json()['encoder']['id']}",
                 f"predictors/{fit['predictor']['id']}", f"predictors/{fit['predictor']['id']}/label-efficiency.svg"):
        response = pages.get(f"/admin/{path}")
        assert response.status_code == 404, (path, response.text[:200])
    assert cohort["id"] not in pages.get("/admin/cohorts").text
    for path in (f"cohorts/{cohort['id']}", f"encoders/{pretrain.json()['encoder']['id']}",
                 f"predictors/{fit['predictor']['id']}"):
        response = pages.post(f"/admin/{path}/delete", data={"force": "true"})
        assert response.status_code == 404, (path, response.text[:200])
    # Lab B's own admin sees it; lab A's list does not show it.
    assert other not in pages.get("/admin/jobs").text
    login(pages, lab_b.key)
    assert pages.get(f"/admin/jobs/{other}").status_code == 200


def test_members_cannot_manage_or_touch_others_jobs(pages: TestClient, lab_a: LabKey) -> None:
    admin_job = queued_job(lab_caller("lab-a"))
    member, token = add_member(lab_a)
    own_job = queued_job(member)
    login(pages, token)
    listing = pages.get("/admin/jobs")
    assert listing.status_code == 200 and "Users &amp; keys" not in listing.text
    assert {job for job, _ in job_rows(listing.text)} == {admin_job, own_job}
    for path in ("/admin/users", "/admin/audit"):
        response = pages.get(path)
        assert response.status_code == 403 and "admin role" in response.text
    assert pages.post("/admin/users", data={"name": "eve"}).status_code == 403

    page = pages.get(f"/admin/jobs/{admin_job}")
    assert page.status_code == 200 and 'id="cancel-job"' not in page.text
    refused = pages.post(f"/admin/jobs/{admin_job}/cancel")
    assert refused.status_code == 403 and "another user's job" in html.unescape(refused.text)
    assert job_state(admin_job) is orm.JobState.QUEUED

    assert 'id="cancel-job"' in pages.get(f"/admin/jobs/{own_job}").text
    assert pages.post(f"/admin/jobs/{own_job}/cancel").status_code == 200
    assert job_state(own_job) is orm.JobState.CANCELLED


def test_cross_site_posts_are_refused(pages: TestClient) -> None:
    job_id = queued_job(lab_caller("lab-a"))
    for origin in ("http://evil.example", "null", "http://testserver:8080"):
        response = pages.post(f"/admin/jobs/{job_id}/cancel", headers={"Origin": origin})
        assert response.status_code == 403 and "cross-site" in response.text
    assert pages.post("/admin/logout", headers={"Origin": "http://evil.example"}).status_code == 403
    # A browser that sends no Origin still says where the post came from.
    response = pages.post(f"/admin/jobs/{job_id}/cancel", headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403 and "Sec-Fetch-Site" in response.text
    assert job_state(job_id) is orm.JobState.QUEUED
    response = pages.post(f"/admin/jobs/{job_id}/cancel", headers={"Origin": "http://testserver"})
    assert response.status_code == 200 and job_state(job_id) is orm.JobState.CANCELLED


def test_jobs_filters_and_paging(pages: TestClient, lab_a: LabKey) -> None:
    admin = lab_caller("lab-a")
    member, _ = add_member(lab_a)
    pretrain = [queued_job(admin) for _ in range(27)]
    fits = [queued_job(member, orm.JobKind.FIT) for _ in range(3)]
    failed = failed_job(member, "ValueError: boom")
    with session_factory()() as session:  # one job from last year
        old = session.get_one(orm.Job, pretrain[0])
        old.created_at = datetime(2020, 3, 4, 12, tzinfo=UTC)
        session.commit()

    first = pages.get("/admin/jobs")
    assert "page 1 of 2" in first.text and "(31 in all)" in first.text and len(job_rows(first.text)) == 25
    second = pages.get("/admin/jobs?page=2")
    assert "page 2 of 2" in second.text and len(job_rows(second.text)) == 6
    assert {j for j, _ in job_rows(first.text)} | {j for j, _ in job_rows(second.text)} == {*pretrain, *fits, failed}
    assert pages.get("/admin/jobs?page=9").text.count("page 2 of 2") == 1  # clamped to the last page

    rows = job_rows(pages.get("/admin/jobs?state=failed").text)
    assert rows == [(failed, "failed")]
    assert "ValueError: boom" in pages.get("/admin/jobs?state=failed").text
    by_member = pages.get(f"/admin/jobs?user={member.user_id}&kind=fit").text
    assert {j for j, _ in job_rows(by_member)} == set(fits)
    assert f'<option value="{member.user_id}" selected>bob</option>' in by_member
    assert job_rows(pages.get("/admin/jobs?since=2020-03-01&until=2020-03-04").text) == [(pretrain[0], "queued")]
    # 28 pretraining jobs (the failed one too), one of them before the 5th of March 2020.
    assert len(job_rows(pages.get("/admin/jobs?since=2020-03-05&kind=pretrain&page=2").text)) == 2
    # Filters are kept by the pager's links.
    assert "page=2" in first.text and "state=queued&amp;page=2" in pages.get("/admin/jobs?state=queued").text

    assert pages.get("/admin/jobs?state=bogus").status_code == 422
    assert pages.get("/admin/jobs?since=yesterday").status_code == 422
    assert pages.get("/admin/jobs?page=0").status_code == 422


def test_the_jobs_and_audit_apis_read_times_without_a_zone_as_utc(pages: TestClient, lab_a: LabKey) -> None:
    admin = lab_caller("lab-a")
    old, new = queued_job(admin), queued_job(admin)
    with session_factory()() as session:
        session.get_one(orm.Job, old).created_at = datetime(2020, 3, 4, 12, tzinfo=UTC)
        session.commit()

    def listed(**params: str) -> list[str]:
        response = pages.get("/jobs", params=params, headers=lab_a.headers)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()]

    assert listed(until="2020-03-04T12:00:01") == listed(until="2020-03-04T13:00:01+01:00") == [old]
    assert listed(until="2020-03-04T11:59:59") == listed(until="2020-03-04T12:59:59+01:00") == []
    assert listed(since="2020-03-05") == [new] and listed(since="2020-03-04", until="2020-03-05") == [old]
    assert pages.get("/jobs", params={"since": "yesterday"}, headers=lab_a.headers).status_code == 422
    audit = pages.get("/audit", params={"since": "2020-01-01T00:00:00"}, headers=lab_a.headers)
    assert audit.status_code == 200 and "job.create.pretrain" in {e["action"] for e in audit.json()}


def test_failed_job_page_shows_its_error_and_retry(pages: TestClient) -> None:
    job_id = failed_job(lab_caller("lab-a"), "ArtifactIntegrityError: stored matrix <b>does not match</b>")
    page = pages.get(f"/admin/jobs/{job_id}").text
    assert '<pre class="error" id="job-error">ArtifactIntegrityError: stored matrix &lt;b&gt;' in page
    assert 'id="retry-job"' in page and 'id="cancel-job"' not in page
    assert "<td>running</td><td>failed</td>" in page  # the events table
    assert '"cohort_id": "none"' in html.unescape(page)  # parameters as JSON


class HeldDispatcher:
    """Takes jobs and runs none of them, so that they stay queued."""

    def submit(self, job_id: str) -> None:
        pass

    def cancel(self, job_id: str) -> None:
        pass

    def checks(self, timeout_s: float) -> dict[str, object]:
        return {}


def test_cancel_and_retry_through_the_forms(pages: TestClient, lab_a: LabKey) -> None:
    rest = TestClient(pages.app, headers=lab_a.headers)
    cohort = upload(rest)
    with session_factory()() as session:
        request = EncoderCreate(cohort_id=cohort["id"], method="scarf", params={"epochs": 3})
        encoder = encoders.start_pretraining(
            session=session, caller=lab_caller("lab-a"), dispatcher=HeldDispatcher(), request=request
        )
        job_id = encoder.job_id
    assert job_state(job_id) is orm.JobState.QUEUED

    page = pages.post(f"/admin/jobs/{job_id}/cancel")
    assert page.status_code == 200 and str(page.url).endswith(f"/admin/jobs/{job_id}")
    assert 'id="flash"' in page.text and "Job cancelled." in page.text
    assert job_state(job_id) is orm.JobState.CANCELLED and 'id="retry-job"' in page.text
    assert 'id="flash"' not in pages.get(f"/admin/jobs/{job_id}").text  # shown once

    again = pages.post(f"/admin/jobs/{job_id}/cancel")
    assert "already ended" in again.text and "flash-error" in again.text

    retried = pages.post(f"/admin/jobs/{job_id}/retry")
    assert retried.status_code == 200 and "queued again" in retried.text
    assert wait_for_job(rest, job_id, timeout=120)["state"] == "succeeded"
    page = pages.get(f"/admin/jobs/{job_id}").text
    assert '<svg id="loss-curve"' in page and "<polyline" in page and "epoch 3" in page
    assert "retried by alice" in page and 'id="retry-job"' not in page
    encoder_page = pages.get(f"/admin/encoders/{encoder.id}").text
    assert '<svg id="loss-curve"' in encoder_page and "scarf" in encoder_page
    audit = pages.get("/admin/audit?action=job.retry").text
    assert audit.count('data-action="job.retry"') == 1 and 'data-action="job.cancel"' not in audit


def test_the_retry_message_says_resumes_only_for_a_job_with_a_checkpoint(pages: TestClient, lab_a: LabKey) -> None:
    from app.deps import get_dispatcher

    pages.app.dependency_overrides[get_dispatcher] = HeldDispatcher  # type: ignore[attr-defined]
    cohort = upload(TestClient(pages.app, headers=lab_a.headers))
    caller = lab_caller("lab-a")
    with session_factory()() as session:
        pretraining = encoders.start_pretraining(
            session=session, caller=caller, dispatcher=HeldDispatcher(),
            request=EncoderCreate(cohort_id=cohort["id"], params={"epochs": 30}),
        )
        checkpointed, bare = pretraining.job_id, queued_job(caller, kind=orm.JobKind.FIT, cohort_id=cohort["id"])
        session.add(orm.Predictor(lab_id=caller.lab_id, name="p", cohort_id=cohort["id"], job_id=bare,
                                  label_column="tissue", head="logistic_regression", label_fraction=1.0, params={}))
        for job_id in (checkpointed, bare):
            job = session.get_one(orm.Job, job_id)
            jobs.transition(session, job, orm.JobState.RUNNING)
            jobs.transition(session, job, orm.JobState.FAILED, message="ValueError: boom")
        session.get_one(orm.Job, checkpointed).checkpoint = {"key": "checkpoints/x", "epoch": 20}
        session.commit()

    resumed = pages.post(f"/admin/jobs/{checkpointed}/retry").text
    assert "Job queued again; it resumes from its checkpoint at epoch 20." in resumed
    fresh = pages.post(f"/admin/jobs/{bare}/retry").text
    assert "Job queued again." in fresh and "resumes" not in fresh and "checkpoint" not in fresh
    assert job_state(bare) is orm.JobState.QUEUED


def test_retries_from_the_pages_count_against_the_train_limit(
    pages: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPRSSL_RATE_LIMIT_TRAIN", "1/hour")
    get_settings.cache_clear()
    job_id = failed_job(lab_caller("lab-a"), "ValueError: boom")

    first = pages.post(f"/admin/jobs/{job_id}/retry")  # counted, though this job cannot run again
    second = pages.post(f"/admin/jobs/{job_id}/retry")

    assert "cannot be retried" in first.text
    assert "rate limit for train requests reached (1 per 1 hour)" in second.text and "flash-error" in second.text
    assert job_state(job_id) is orm.JobState.FAILED


def test_cohort_encoder_and_predictor_pages(pages: TestClient, lab_a: LabKey) -> None:
    rest = TestClient(pages.app, headers=lab_a.headers)
    cohort = upload(rest)
    fits = []
    for fraction in (1.0, 0.5):
        body = {"cohort_id": cohort["id"], "label_column": "tissue", "head": "logistic_regression",
                "label_fraction": fraction}
        response = rest.post("/predictors", json=body)
        assert response.status_code == 202, response.text
        fits.append(response.json())
    for fit in fits:
        assert wait_for_job(rest, fit["job"]["id"], timeout=120)["state"] == "succeeded"
    predictor = rest.get(f"/predictors/{fits[0]['predictor']['id']}").json()

    cohort_page = pages.get(f"/admin/cohorts/{cohort['id']}").text
    assert "189 samples × 500 genes" in cohort_page and 'data-column="tissue"' in cohort_page
    assert "of 500 columns resolved with gene table" in cohort_page
    assert re.search(r"<td>kidney</td><td class=\"num\">39</td>", cohort_page)
    assert "tissues" in pages.get("/admin/cohorts").text
    assert "data-predictions" not in cohort_page
    for _ in range(2):
        made = rest.post(f"/predictors/{predictor['id']}/predictions", json={"cohort_id": cohort["id"]})
        assert made.status_code == 201, made.text
    cohort_page = pages.get(f"/admin/cohorts/{cohort['id']}").text
    assert '<tr data-predictions="2"><td>predictions</td><td>2 stored' in cohort_page

    page = pages.get(f"/admin/predictors/{predictor['id']}").text
    matrix = page.split('<table id="confusion-matrix">')[1].split("</table>")[0]
    header = re.findall(r'<th scope="col">([^<]+)</th>', matrix)
    rows = re.findall(r'<th scope="row">([^<]+)</th>', matrix)
    assert header == rows == predictor["classes"] and "kidney" in header
    counts = [int(c) for c in re.findall(r">(\d+)</td>", matrix)]
    assert sum(counts) == predictor["split"]["n_test"]
    assert 'id="label-efficiency-plot" src="/admin/predictors/' in page
    assert "balanced accuracy" in page and "ECE" in page

    plot = pages.get(f"/admin/predictors/{predictor['id']}/label-efficiency.svg")
    assert plot.status_code == 200 and plot.headers["content-type"].startswith("image/svg+xml")
    assert plot.text.count("<circle") == 3 and "logistic_regression" in plot.text  # two dots and the ring
    listing = pages.get("/admin/predictors").text
    assert listing.count("data-predictor-id=") == 2 and "page 1 of 1" in listing
    assert "No encoders yet" in pages.get("/admin/encoders").text


def test_users_page_creates_users_and_keys_and_revokes(pages: TestClient) -> None:
    assert pages.post("/admin/users", data={"name": "carol", "role": "member"}).status_code == 200
    page = pages.get("/admin/users").text
    assert "carol" in page and 'id="flash"' not in page
    carol = re.search(r'data-user-id="(\w+)"><td>carol</td>', page)
    assert carol is not None
    duplicate = pages.post("/admin/users", data={"name": "carol"})
    assert "already has a user named" in duplicate.text

    created = pages.post("/admin/keys", data={"user_id": carol.group(1), "name": "laptop"})
    assert created.headers["cache-control"] == "no-store"
    token = re.search(r'<pre id="new-key">(exs_[^<]+)</pre>', created.text)
    assert token is not None
    assert 'id="new-key"' not in pages.get("/admin/users").text  # shown once

    with session_factory()() as session:
        key = session.scalars(select(orm.ApiKey).where(orm.ApiKey.name == "laptop")).one()
    assert pages.post(f"/admin/keys/{key.id}/revoke").status_code == 200
    with session_factory()() as session:
        assert session.get_one(orm.ApiKey, key.id).revoked_at is not None
    assert pages.post("/admin/login", data={"api_key": token.group(1)}).status_code == 401
    audit = pages.get("/admin/audit").text
    assert all(f'data-action="{a}"' in audit for a in ("user.create", "key.create", "key.revoke"))


def test_users_page_changes_roles_and_disables_users(pages: TestClient, lab_a: LabKey) -> None:
    member, token = add_member(lab_a)
    promoted = pages.post(f"/admin/users/{member.user_id}", data={"role": "admin"})
    assert promoted.status_code == 200 and f"User {member.user_name} is now admin, enabled." in promoted.text
    disabled = pages.post(f"/admin/users/{member.user_id}", data={"disabled": "yes"})
    assert "is now admin, disabled." in disabled.text
    with session_factory()() as session:
        user = session.get_one(orm.User, member.user_id)
        assert (user.role, user.disabled) == (orm.Role.ADMIN, True)
    # A disabled user's key stops at once, on the pages as on the REST API.
    assert pages.post("/admin/login", data={"api_key": token}).status_code == 401
    assert pages.get("/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    pages.post(f"/admin/users/{member.user_id}", data={"disabled": "no"})
    assert pages.get("/me", headers={"Authorization": f"Bearer {token}"}).json()["role"] == "admin"
    # Nobody changes their own role; nonsense values are refused with a message.
    own = pages.post(f"/admin/users/{lab_a.admin_id}", data={"role": "member"})
    assert "cannot change their own role" in own.text
    refused = pages.post(f"/admin/users/{member.user_id}", data={"role": "owner"})
    assert "unknown value 'owner'" in html.unescape(refused.text)
    refused = pages.post(f"/admin/users/{member.user_id}", data={"disabled": "maybe"})
    assert "disabled must be yes or no" in html.unescape(refused.text)


def test_loss_curve_svg_and_label_efficiency_svg() -> None:
    assert views.loss_curve_svg([]) is None and views.loss_curve_svg([float("nan")]) is None
    svg = str(views.loss_curve_svg([3.0, 2.0, 1.5]))
    assert 'points="64.0,14.0 344.0,' in svg and svg.count(" ") > 10 and "epoch 3" in svg
    points = [
        EfficiencyPoint("logistic_regression", 0.1, 0.5),
        EfficiencyPoint("logistic_regression", 1.0, 0.9, current=True),
        EfficiencyPoint("linear_probe on <scarf>", 0.1, 0.7),
    ]
    plot = views.label_efficiency_svg(points, title="tissue")
    assert plot.startswith("<svg") and 'width="760"' in plot and "&lt;scarf&gt;" in plot
    assert plot.count("<polyline") == 2 and plot.count('r="7"') == 1
    assert "No ready predictor" in views.label_efficiency_svg([], title="t")
    assert views.confusion_matrix(["a", "b"], [[1, 0]]) is None
    matrix = views.confusion_matrix(["a", "b"], [[3, 1], [0, 2]])
    assert matrix is not None and matrix.rows[0][0].share == 0.75


def test_login_page_needs_no_cookie_and_unknown_pages(pages: TestClient) -> None:
    assert pages.get("/admin", follow_redirects=False).headers["location"] == "/admin/jobs"
    assert pages.get("/admin/jobs/nope").status_code == 404
    since = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert pages.get(f"/admin/jobs?since={since}").status_code == 200
    assert "/admin/" not in str(pages.app.openapi()["paths"])  # type: ignore[attr-defined]


def test_models_and_cohorts_are_deleted_from_their_pages(pages: TestClient, lab_a: LabKey) -> None:
    rest = TestClient(pages.app, headers=lab_a.headers)
    cohort = upload(rest)
    accepted = rest.post("/encoders", json={"cohort_id": cohort["id"], "params": {"epochs": 1, "hidden_dim": 16,
                                                                                   "batch_size": 64}}).json()
    assert wait_for_job(rest, accepted["job"]["id"])["state"] == "succeeded"
    encoder_id = accepted["encoder"]["id"]
    fit = rest.post("/predictors", json={"cohort_id": cohort["id"], "encoder_id": encoder_id, "label_column": "tissue",
                                         "head": "linear_probe", "params": {"max_epochs": 2}}).json()
    assert wait_for_job(rest, fit["job"]["id"])["state"] == "succeeded"
    page = pages.get(f"/admin/encoders/{encoder_id}").text
    assert f'action="/admin/encoders/{encoder_id}/delete"' in page and 'id="delete-force"' in page

    refused = pages.post(f"/admin/encoders/{encoder_id}/delete")
    assert "flash-error" in refused.text and f"predictor {fit['predictor']['id']}" in refused.text
    assert rest.get(f"/encoders/{encoder_id}").status_code == 200

    done = pages.post(f"/admin/encoders/{encoder_id}/delete", data={"force": "true"})
    assert f"Deleted encoder {encoder_id}." in done.text and done.url.path == "/admin/encoders"
    assert rest.get(f"/encoders/{encoder_id}").status_code == 404
    assert rest.get(f"/predictors/{fit['predictor']['id']}").status_code == 404
    done = pages.post(f"/admin/cohorts/{cohort['id']}/delete")
    assert f"Deleted cohort {cohort['id']}." in done.text and rest.get("/cohorts").json() == []


def test_a_member_sees_no_force_box_and_cannot_delete_others_models(pages: TestClient, lab_a: LabKey) -> None:
    rest = TestClient(pages.app, headers=lab_a.headers)
    cohort = upload(rest)
    fit = rest.post("/predictors", json={"cohort_id": cohort["id"], "label_column": "tissue",
                                         "head": "logistic_regression"}).json()
    assert wait_for_job(rest, fit["job"]["id"])["state"] == "succeeded"
    _, key = add_member(lab_a)
    login(pages, key)
    page = pages.get(f"/admin/predictors/{fit['predictor']['id']}").text
    assert 'id="delete"' in page and 'id="delete-force"' not in page

    refused = pages.post(f"/admin/predictors/{fit['predictor']['id']}/delete")

    # Refused, as a message on the predictor's page (it was an error page of its own).
    assert refused.url.path == f"/admin/predictors/{fit['predictor']['id']}" and "flash-error" in refused.text
    assert "another user's job" in html.unescape(refused.text)
    assert rest.get(f"/predictors/{fit['predictor']['id']}").status_code == 200


def test_a_member_deletes_their_predictions_from_the_predictor_page_and_then_the_predictor(
    pages: TestClient, lab_a: LabKey
) -> None:
    rest = TestClient(pages.app, headers=lab_a.headers)
    cohort = upload(rest)
    caller, key = add_member(lab_a)
    member = TestClient(pages.app, headers={"Authorization": f"Bearer {key}"})
    fit = member.post("/predictors", json={"cohort_id": cohort["id"], "label_column": "tissue",
                                           "head": "logistic_regression"}).json()
    assert wait_for_job(rest, fit["job"]["id"])["state"] == "succeeded"
    predictor_id = fit["predictor"]["id"]
    own = member.post(f"/predictors/{predictor_id}/predictions", json={"cohort_id": cohort["id"]}).json()
    admins = rest.post(f"/predictors/{predictor_id}/predictions", json={"cohort_id": cohort["id"]}).json()
    login(pages, key)

    page = pages.get(f"/admin/predictors/{predictor_id}").text
    assert f'data-prediction="{own["id"]}"' in page and f'data-prediction="{admins["id"]}"' in page
    assert f'action="/admin/predictions/{own["id"]}/delete"' in page  # a member: only their own
    assert f'action="/admin/predictions/{admins["id"]}/delete"' not in page and "<td>bob</td>" in page
    refused = pages.post(f"/admin/predictors/{predictor_id}/delete")
    assert "flash-error" in refused.text and "DELETE /predictions/{id}" in html.unescape(refused.text)
    forbidden = pages.post(f"/admin/predictions/{admins['id']}/delete")  # a stale page's button, say
    assert forbidden.url.path == f"/admin/predictors/{predictor_id}" and "flash-error" in forbidden.text
    assert "another user requested" in forbidden.text and rest.get(f"/predictions/{admins['id']}").status_code == 200

    done = pages.post(f"/admin/predictions/{own['id']}/delete")
    assert done.url.path == f"/admin/predictors/{predictor_id}" and f"Deleted prediction {own['id']}." in done.text
    assert rest.get(f"/predictions/{own['id']}").status_code == 404
    assert rest.delete(f"/predictions/{admins['id']}").status_code == 204
    assert 'id="no-predictions"' in pages.get(f"/admin/predictors/{predictor_id}").text
    done = pages.post(f"/admin/predictors/{predictor_id}/delete")
    assert f"Deleted predictor {predictor_id}." in done.text and caller.user_name == "bob"


def test_a_long_refusal_is_shown_whole_and_kept_out_of_cookies(pages: TestClient, lab_a: LabKey) -> None:
    rest = TestClient(pages.app, headers=lab_a.headers)
    cohort = upload(rest)
    fit = rest.post("/predictors", json={"cohort_id": cohort["id"], "label_column": "tissue",
                                         "head": "logistic_regression"}).json()
    assert wait_for_job(rest, fit["job"]["id"])["state"] == "succeeded"
    predictor_id = fit["predictor"]["id"]
    with session_factory()() as session:  # 25 stored predictions: the refusal names 20 and counts the rest
        for _ in range(25):
            session.add(orm.Prediction(lab_id=lab_a.lab_id, predictor_id=predictor_id, n_samples=1))
        session.commit()
    message = rest.delete(f"/predictors/{predictor_id}").json()["error"]["message"]
    assert len(message) > 900 and message.endswith("which deletes them too.")

    refused = pages.post(f"/admin/predictors/{predictor_id}/delete", follow_redirects=False)
    assert refused.status_code == 303 and "exprssl_flash" not in refused.headers.get("set-cookie", "")
    page = pages.get(refused.headers["location"])
    shown = re.search(r'<div class="flash flash-error" id="flash" role="status">(.*?)</div>', page.text, re.S)
    assert shown is not None and html.unescape(shown.group(1)) == message
    assert 'id="flash"' not in pages.get(f"/admin/predictors/{predictor_id}").text  # shown once

