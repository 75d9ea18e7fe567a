"""Liveness: the process answers and its registry is reachable."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from app.deps import SessionDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str


@router.get("/health", response_model=Health)
def health(session: SessionDep) -> Health:
    """Report whether the service and its database answer."""
    session.execute(text("SELECT 1"))
    return Health(status="ok", database="ok")
