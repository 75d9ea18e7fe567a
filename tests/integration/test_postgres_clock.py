"""Heartbeats, send times and the reaper's cutoffs read PostgreSQL's clock, so hosts whose clocks disagree
cannot reap a healthy job or re-send a queued one at once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.db import base, orm
from app.db.session import session_factory
from app.jobs import service as jobs
from tests.conftest import lab_caller
from worker import dispatch, reaper
from worker.heartbeat import beat


def test_a_host_whose_clock_runs_ahead_does_not_reap_a_healthy_job(
    api: TestClient, distributed: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_factory()() as session:
        job_id = jobs.create_job(session, lab_caller(), orm.JobKind.EVALUATE, {}).id
        session.commit()
    with session_factory()() as session:
        assert jobs.claim(session, job_id, worker_id="w:1") is not None  # the worker's host
    assert beat(session_factory(), job_id, 1)

    # Another process sweeps from a host whose clock is an hour ahead of the worker's.
    ahead = base.utcnow() + timedelta(hours=1)
    monkeypatch.setattr(base, "utcnow", lambda: ahead)
    monkeypatch.setattr(reaper, "utcnow", lambda: ahead, raising=False)
    result = reaper.sweep(session_factory=session_factory(), settings=distributed, send=lambda _: None)

    assert result.requeued == [] and result.failed == []
    with session_factory()() as session:
        assert session.get_one(orm.Job, job_id).state is orm.JobState.RUNNING


def test_a_job_sent_from_a_host_whose_clock_runs_behind_is_not_sent_again_at_once(
    api: TestClient, distributed: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_factory()() as session:
        job_id = jobs.create_job(session, lab_caller(), orm.JobKind.EVALUATE, {}).id
        session.commit()

    # The API host that sends the job's id to the broker runs an hour behind.
    correct = base.utcnow
    behind = correct() - timedelta(hours=1)
    monkeypatch.setattr(base, "utcnow", lambda: behind)
    monkeypatch.setattr(dispatch, "utcnow", lambda: behind, raising=False)
    dispatcher = dispatch.CeleryDispatcher(session_factory=session_factory(), settings=distributed)
    try:
        dispatcher.submit(job_id)
    finally:
        dispatcher.shutdown()
    monkeypatch.setattr(base, "utcnow", correct)

    # A sweep right away, within resend_queued_after_s of the send, has nothing to re-send.
    result = reaper.sweep(session_factory=session_factory(), settings=distributed, send=lambda _: None)

    assert result.resent == []
    with session_factory()() as session:
        job = session.get_one(orm.Job, job_id)
        assert job.state is orm.JobState.QUEUED and job.dispatched_at is not None
        assert abs(job.dispatched_at - correct()) < timedelta(minutes=1)
