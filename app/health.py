"""Liveness (``/health``: the process answers and its registry is reachable) and readiness (``/ready``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.db.session import session_factory
from app.deps import DispatcherDep, SessionDep, SettingsDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str


class CheckRead(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, CheckRead]


@router.get("/health", response_model=Health)
def health(session: SessionDep) -> Health:
    """Report whether the service and its database answer."""
    session.execute(text("SELECT 1"))
    return Health(status="ok", database="ok")


def _database() -> CheckRead:
    try:
        with session_factory()() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return CheckRead(ok=False, detail=f"unreachable ({type(getattr(exc, 'orig', None) or exc).__name__})")
    return CheckRead(ok=True, detail="reachable")


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
def ready(dispatcher: DispatcherDep, settings: SettingsDep) -> JSONResponse:
    """Report database, broker and workers; 503 when any of them is down."""
    checks = {"database": _database()}
    if not settings.broker_url:
        checks["broker"] = CheckRead(ok=True, detail="none configured: jobs run in the API process")
    for name, check in dispatcher.checks(settings.readiness_timeout_s).items():
        checks[name] = CheckRead(ok=check.ok, detail=check.detail)
    ok = all(c.ok for c in checks.values())
    body = Readiness(status="ready" if ok else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
