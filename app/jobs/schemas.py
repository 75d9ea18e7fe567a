"""Pydantic schemas of the job endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.db.orm import JobKind, JobState


class JobEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    from_state: str | None
    to_state: str | None
    message: str | None


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    created_by: str | None
    kind: JobKind
    state: JobState
    params: dict[str, Any]
    progress: dict[str, Any]
    attempts: int
    cancel_requested: bool
    error: str | None
    worker_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    dispatched_at: datetime | None
    checkpoint: dict[str, Any] | None


class JobDetail(JobRead):
    events: list[JobEventRead]
