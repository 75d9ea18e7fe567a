"""FastAPI dependencies shared by the routers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Query, Request
from pydantic import AfterValidator
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.db.orm import ArtifactStatus
from app.db.session import get_session
from app.storage import ArtifactStore, get_store
from worker.dispatch import Dispatcher


async def settings_dependency() -> Settings:
    """The process-wide settings. Async because FastAPI runs a sync dependency on its thread pool, a hop each
    way, and this one only reads a cached object."""
    return get_settings()


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(settings_dependency)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]  # sync: it makes the store's folder


def get_dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
# A list's keyset cursor: continue after this row (repository.newest).
AfterQuery = Annotated[
    str | None,
    Query(max_length=32, description="Id of the previous page's last row: the rows listed after it, a walk "
          "that rows added meanwhile cannot shift, as they shift offset pages."),
]
# A list's status filter (query parameter "status"; the name would shadow fastapi.status in routers).
StatusQuery = Annotated[ArtifactStatus | None, Query(alias="status", description="Only rows in this status.")]


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# A time filter: ISO 8601, a date or a date and time; without a zone it is read as UTC, the registry's zone.
UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]
