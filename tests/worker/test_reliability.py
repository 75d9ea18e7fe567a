"""Job reliability without servers: heartbeats, the reaper, checkpoints and resumption, fenced writes."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import orm
from app.db.base import utcnow
from app.db.session import session_factory
from app.encoders import service as encoders
from app.encoders.schemas import EncoderCreate
from app.jobs import service as jobs
from app.storage import get_store
from tests.app.test_full_loop import upload
from tests.conftest import lab_caller
from worker import reaper
from worker.context import JobContext
from worker.heartbeat import beat
from worker.runner import run_job


class NoDispatch:
    """Jobs stay queued; the test runs them with run_job."""

    def submit(self, job_id: str) -> None: ...
    def cancel(self, job_id: str) -> None: ...
    def checks(self, timeout_s: float) -> dict[str, object]:
        return {}


def pretrain_job(client: TestClient, **params: object) -> tuple[str, str]:
    """A queued pretraining job on the tissue cohort; returns (job id, encoder id)."""
    cohort = upload(client)
    request = EncoderCreate(cohort_id=cohort["id"], params={"batch_size": 64, **params})
    with session_factory()() as session:
        encoder = encoders.start_pretraining(
            session=session, caller=lab_caller(), dispatcher=NoDispatch(), request=request
        )
        return encoder.job_id, encoder.id


def run(job_id: str, settings: Settings, **kwargs: object) -> orm.JobState | None:
    return run_job(job_id, session_factory=session_factory(), store=get_store(), settings=settings, **kwargs)


def job_row(job_id: str) -> orm.Job:
    with session_factory()() as session:
        job = session.get_one(orm.Job, job_id)
        _ = job.events
        return job


def stop_at_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Make the worker shut down when the pipeline reports ``epoch`` (as on SIGTERM)."""
    original = JobContext.report

    def report(self: JobContext, e: int, loss: float, **kwargs: object) -> None:
        if e == epoch:
            self.shutdown_event.set()
        original(self, e, loss, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(JobContext, "report", report)


def test_interrupted_pretraining_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.model_copy(update={"checkpoint_every_epochs": 2})
    reference_job, reference_encoder = pretrain_job(client, epochs=8)
    assert run(reference_job, settings) is orm.JobState.SUCCEEDED

    job_id, encoder_id = pretrain_job(client, epochs=8)
    with monkeypatch.context() as patch:
        stop_at_epoch(patch, 5)
        assert run(job_id, settings) is orm.JobState.QUEUED
    job = job_row(job_id)
    assert job.checkpoint is not None and job.checkpoint["epoch"] == 4
    checkpoint_key = job.checkpoint["key"]
    assert get_store().exists(checkpoint_key)

    assert run(job_id, settings) is orm.JobState.SUCCEEDED
    job = job_row(job_id)
    messages = [e.message for e in job.events]
    assert "resumed from checkpoint at epoch 4" in messages
    assert [e.to_state for e in job.events if e.to_state] == ["running", "queued", "running", "succeeded"]
    assert job.attempts == 2 and job.checkpoint is None
    assert not get_store().exists(checkpoint_key)
    resumed = client.get(f"/encoders/{encoder_id}").json()
    reference = client.get(f"/encoders/{reference_encoder}").json()
    # Each epoch is seeded from (seed, epoch): on CPU the resumed run is the uninterrupted one.
    assert resumed["status"] == "ready" and len(resumed["loss_curve"]) == 8
    assert resumed["loss_curve"] == reference["loss_curve"]
    with session_factory()() as session:
        assert len(session.scalars(select(orm.Encoder).where(orm.Encoder.job_id == job_id)).all()) == 1


def test_interrupted_continued_pretraining_resumes_like_an_uninterrupted_run(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.model_copy(update={"checkpoint_every_epochs": 2})
    parent_job, parent_id = pretrain_job(client, epochs=2, hidden_dim=32)
    assert run(parent_job, settings) is orm.JobState.SUCCEEDED
    cohort_id = client.get(f"/encoders/{parent_id}").json()["cohort_id"]

    def continued() -> tuple[str, str]:
        request = EncoderCreate(cohort_id=cohort_id, continue_from=parent_id, params={"epochs": 6})
        with session_factory()() as session:
            encoder = encoders.start_pretraining(
                session=session, caller=lab_caller(), dispatcher=NoDispatch(), request=request
            )
            return encoder.job_id, encoder.id

    reference_job, reference_id = continued()
    assert run(reference_job, settings) is orm.JobState.SUCCEEDED
    job_id, encoder_id = continued()
    with monkeypatch.context() as patch:
        stop_at_epoch(patch, 3)
        assert run(job_id, settings) is orm.JobState.QUEUED
    assert job_row(job_id).checkpoint["epoch"] == 2  # type: ignore[index]

    assert run(job_id, settings) is orm.JobState.SUCCEEDED
    assert "resumed from checkpoint at epoch 2" in [e.message for e in job_row(job_id).events]
    resumed = client.get(f"/encoders/{encoder_id}").json()
    reference = client.get(f"/encoders/{reference_id}").json()
    assert resumed["parent_encoder_id"] == parent_id and resumed["preprocessing"]["continued_from"] == parent_id
    assert resumed["loss_curve"] == reference["loss_curve"] and len(resumed["loss_curve"]) == 6


def test_unreadable_checkpoint_restarts_from_epoch_zero(client: TestClient, settings: Settings) -> None:
    job_id, encoder_id = pretrain_job(client, epochs=3)
    with session_factory()() as session:
        job = session.get_one(orm.Job, job_id)
        job.checkpoint = {"key": "checkpoints/missing.pt", "sha256": "0" * 64, "epoch": 2}
        session.commit()
    assert run(job_id, settings) is orm.JobState.SUCCEEDED
    messages = [e.message or "" for e in job_row(job_id).events]
    assert any("unusable" in m and "starts from epoch 0" in m for m in messages)
    assert len(client.get(f"/encoders/{encoder_id}").json()["loss_curve"]) == 3


def test_heartbeat_beats_during_a_long_epoch_and_stops_a_job_taken_away(
    client: TestClient, settings: Settings
) -> None:
    settings = settings.model_copy(update={"heartbeat_interval_s": 0.05, "progress_interval_s": 3600.0})
    job_id, encoder_id = pretrain_job(client, epochs=10_000)
    outcome: list[orm.JobState | None] = []
    thread = threading.Thread(target=lambda: outcome.append(run(job_id, settings)))
    thread.start()
    deadline = time.monotonic() + 30
    while (job := job_row(job_id)).state is orm.JobState.QUEUED:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first = job.heartbeat_at
    time.sleep(0.3)
    # Progress writes are an hour apart here: only the heartbeat thread moves heartbeat_at.
    assert job_row(job_id).heartbeat_at > first  # type: ignore[operator]

    # The reaper, an hour from now, finds it silent and re-queues it: the old attempt must let go.
    sweep = reaper.Sweep()
    with session_factory()() as session:
        reaper.reap_lost(session, settings, utcnow() + timedelta(hours=1), sweep)
    assert sweep.requeued == [job_id]
    thread.join(timeout=30)
    assert outcome == [None]
    job = job_row(job_id)
    assert job.state is orm.JobState.QUEUED and job.error is None
    assert client.get(f"/encoders/{encoder_id}").json()["status"] == "pending"
    assert not beat(session_factory(), job_id, attempt=1)


def make_running(kind: orm.JobKind = orm.JobKind.EVALUATE, *, silent_s: float = 3600) -> str:
    with session_factory()() as session:
        job_id = jobs.create_job(session, lab_caller(), kind, {}).id
        session.commit()
    with session_factory()() as session:
        job = jobs.claim(session, job_id, worker_id="gone:1")
        assert job is not None
        job.heartbeat_at = utcnow() - timedelta(seconds=silent_s)
        session.commit()
    return job_id


def sweep_now(settings: Settings) -> tuple[reaper.Sweep, list[str]]:
    sent: list[str] = []
    return reaper.sweep(session_factory=session_factory(), settings=settings, send=sent.append), sent


def test_reaper_requeues_lost_jobs_up_to_the_retry_limit_then_fails_them(
    client: TestClient, settings: Settings
) -> None:
    settings = settings.model_copy(update={"job_max_retries": 1})
    lost, alive = make_running(), make_running(silent_s=1)
    result, sent = sweep_now(settings)
    assert result.requeued == [lost] and sent == [lost]
    job = job_row(lost)
    assert job.state is orm.JobState.QUEUED
    assert job.events[-1].message == "worker lost: gone:1 sent no heartbeat for 3600 s; re-queued (retry 1 of 1)"
    assert job_row(alive).state is orm.JobState.RUNNING

    with session_factory()() as session:
        assert jobs.claim(session, lost, worker_id="gone:2") is not None
        session.get_one(orm.Job, lost).heartbeat_at = utcnow() - timedelta(hours=1)
        session.commit()
    result, sent = sweep_now(settings)
    assert result.failed == [lost] and sent == []
    job = job_row(lost)
    assert job.state is orm.JobState.FAILED
    assert job.error.startswith("worker lost 2 times; last: gone:2 sent no heartbeat")  # type: ignore[union-attr]

    # A user's retry starts the count afresh: the next lost worker re-queues the job again.
    with session_factory()() as session:
        job = session.get_one(orm.Job, lost)
        jobs.add_event(session, job, f"{jobs.RETRIED_BY} alice", to_state=orm.JobState.QUEUED)
        job.state = orm.JobState.QUEUED
        session.commit()
    with session_factory()() as session:
        assert jobs.claim(session, lost, worker_id="gone:3") is not None
        session.get_one(orm.Job, lost).heartbeat_at = utcnow() - timedelta(hours=1)
        session.commit()
    result, _ = sweep_now(settings)
    assert result.requeued == [lost] and job_row(lost).state is orm.JobState.QUEUED


def test_reaper_cancels_a_lost_job_whose_cancellation_was_requested(client: TestClient, settings: Settings) -> None:
    job_id = make_running()
    with session_factory()() as session:
        jobs.request_cancel(session, lab_caller(), job_id)
    result, sent = sweep_now(settings)
    assert result.cancelled == [job_id] and sent == []
    assert job_row(job_id).state is orm.JobState.CANCELLED


def test_a_model_file_whose_job_records_nothing_is_removed(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, encoder_id = pretrain_job(client, epochs=2)
    transition = jobs.transition

    def failing_success(session: Session, job: orm.Job, to: orm.JobState, **kwargs: object) -> None:
        if to is orm.JobState.SUCCEEDED:
            raise RuntimeError("the registry went away")
        transition(session, job, to, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jobs, "transition", failing_success)
    assert run(job_id, settings) is orm.JobState.FAILED
    with session_factory()() as session:
        assert session.get_one(orm.Encoder, encoder_id).artifact_key is None
    models = settings.resolved_artifact_dir / "encoders" / encoder_id
    assert not models.exists() or list(models.iterdir()) == []  # the trained weights went with the failure

    monkeypatch.setattr(jobs, "transition", transition)  # a retry stores them, and its row points at them
    with session_factory()() as session:
        jobs.retry(session, lab_caller(), job_id)
    assert run(job_id, settings) is orm.JobState.SUCCEEDED
    with session_factory()() as session:
        key = session.get_one(orm.Encoder, encoder_id).artifact_key
    assert key is not None and [f"encoders/{encoder_id}/{p.name}" for p in models.iterdir()] == [key]


def test_a_job_cancelled_while_its_worker_shuts_down_is_cancelled_not_queued_again(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, encoder_id = pretrain_job(client, epochs=6)
    original = JobContext.report

    def report(self: JobContext, e: int, loss: float, **kwargs: object) -> None:
        if e == 2:  # a user cancels, and the worker is told to shut down, before it looks at either
            with session_factory()() as session:
                jobs.request_cancel(session, lab_caller(), job_id)
            self.shutdown_event.set()
        original(self, e, loss, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(JobContext, "report", report)
    assert run(job_id, settings) is orm.JobState.CANCELLED
    job = job_row(job_id)
    assert job.state is orm.JobState.CANCELLED and "its cancellation was requested" in (job.events[-1].message or "")
    with session_factory()() as session:
        assert session.get_one(orm.Encoder, encoder_id).status is orm.ArtifactStatus.CANCELLED


def test_a_job_cancelled_in_process_records_the_epoch_it_stopped_at(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.model_copy(update={"progress_interval_s": 3600.0})  # only the first epoch is due
    job_id, _ = pretrain_job(client, epochs=6)
    original = JobContext.report

    def report(self: JobContext, e: int, loss: float, **kwargs: object) -> None:
        if e == 4:  # a user cancels; the dispatcher tells the running worker in process
            with session_factory()() as session:
                jobs.request_cancel(session, lab_caller(), job_id)
            self.cancel_event.set()
        original(self, e, loss, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(JobContext, "report", report)
    assert run(job_id, settings) is orm.JobState.CANCELLED
    job = job_row(job_id)
    assert "cancelled at pretrain epoch 4" in (job.events[-1].message or "")
    assert job.progress["epoch"] == 4 and job.progress["stage"] == "pretrain"


def test_a_worker_whose_job_was_taken_over_stops_at_its_next_progress_write(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, encoder_id = pretrain_job(client, epochs=6)
    original = JobContext.report
    seen: list[int] = []

    def report(self: JobContext, e: int, loss: float, **kwargs: object) -> None:
        seen.append(e)
        if e == 2:  # the reaper re-queues the job and another worker claims it as attempt 2
            with session_factory()() as session:
                job = session.get_one(orm.Job, job_id)
                jobs.add_event(session, job, "worker lost", to_state=orm.JobState.QUEUED)
                job.state = orm.JobState.QUEUED
                session.commit()
            with session_factory()() as session:
                taken = jobs.claim(session, job_id, worker_id="other:2")
                assert taken is not None
                taken.progress = {"stage": "attempt 2"}
                session.commit()
        original(self, e, loss, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(JobContext, "report", report)
    assert run(job_id, settings) is None  # its results are dropped
    assert seen == [1, 2]  # it stopped at the first write after the takeover, not at the end
    job = job_row(job_id)
    assert job.state is orm.JobState.RUNNING and job.attempts == 2 and job.worker_id == "other:2"
    assert job.progress == {"stage": "attempt 2"}  # attempt 1 overwrote nothing
    with session_factory()() as session:
        assert session.get_one(orm.Encoder, encoder_id).artifact_key is None


def test_a_failing_cleanup_after_the_commit_keeps_the_recorded_model(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, encoder_id = pretrain_job(client, epochs=3)
    store = get_store()
    delete = type(store).delete

    def refuse_checkpoints(self: object, key: str) -> None:
        if key.startswith("checkpoints/"):
            raise PermissionError(f"read-only: {key}")
        delete(self, key)  # type: ignore[arg-type]

    monkeypatch.setattr(type(store), "delete", refuse_checkpoints)
    every_2 = settings.model_copy(update={"checkpoint_every_epochs": 2})  # a checkpoint is left at the end
    assert run(job_id, every_2) is orm.JobState.SUCCEEDED
    with session_factory()() as session:
        encoder = session.get_one(orm.Encoder, encoder_id)
        assert encoder.status is orm.ArtifactStatus.READY and encoder.artifact_key is not None
        key, sha256 = encoder.artifact_key, encoder.artifact_sha256
    assert get_store().get_bytes(key, sha256=sha256 or "")  # the model its row points at is there


def test_a_job_claimed_while_its_cancellation_was_being_read_is_flagged_not_overwritten(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_factory()() as session:
        job_id = jobs.create_job(session, lab_caller(), orm.JobKind.EVALUATE, {}).id
        session.commit()
    read = jobs.get_job

    def read_then_claimed(session: Session, job_id: str, *, lab_id: str) -> orm.Job:
        job = read(session, job_id, lab_id=lab_id)  # the request sees it queued ...
        with session_factory()() as worker:  # ... and a worker takes it before the request writes
            assert jobs.claim(worker, job_id, worker_id="w:1") is not None
        return job

    monkeypatch.setattr(jobs, "get_job", read_then_claimed)
    with session_factory()() as session:
        answered = jobs.request_cancel(session, lab_caller(), job_id)
        assert answered.state is orm.JobState.RUNNING and answered.cancel_requested

    job = job_row(job_id)
    assert job.state is orm.JobState.RUNNING and job.cancel_requested and job.worker_id == "w:1"
    assert [(e.from_state, e.to_state) for e in job.events if e.to_state] == [("queued", "running")]  # no cancel
    assert job.events[-1].message.startswith("cancellation requested by")


def test_reaper_resends_jobs_queued_too_long(client: TestClient, settings: Settings) -> None:
    with session_factory()() as session:
        stale = jobs.create_job(session, lab_caller(), orm.JobKind.EVALUATE, {})
        stale.created_at = utcnow() - timedelta(hours=1)
        fresh = jobs.create_job(session, lab_caller(), orm.JobKind.EVALUATE, {})
        resent_recently = jobs.create_job(session, lab_caller(), orm.JobKind.EVALUATE, {})
        resent_recently.created_at = utcnow() - timedelta(hours=1)
        resent_recently.dispatched_at = utcnow()
        session.commit()
        ids = stale.id, fresh.id
    result, sent = sweep_now(settings)
    assert result.resent == [ids[0]] == sent


def test_reaper_sends_a_job_never_sent_within_two_sweeps_not_after_resend_queued_after_s(
    client: TestClient, settings: Settings
) -> None:
    """A job queued while the broker was down has no message anywhere: it waited ``resend_queued_after_s``
    (15 minutes) for the reaper, long after a broker outage of seconds was over."""
    assert (settings.resend_queued_after_s, settings.reaper_interval_s) == (900, 30)  # the defaults
    with session_factory()() as session:
        never_sent = jobs.create_job(session, lab_caller(), orm.JobKind.EVALUATE, {})
        never_sent.created_at = utcnow() - timedelta(seconds=61)
        just_queued = jobs.create_job(session, lab_caller(), orm.JobKind.EVALUATE, {})
        just_queued.created_at = utcnow() - timedelta(seconds=59)
        sent = jobs.create_job(session, lab_caller(), orm.JobKind.EVALUATE, {})
        sent.created_at = sent.dispatched_at = utcnow() - timedelta(seconds=61)
        session.commit()
        never_sent_id = never_sent.id
    result, sent_ids = sweep_now(settings)
    assert result.resent == [never_sent_id] == sent_ids
