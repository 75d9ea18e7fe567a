"""Who am I; users and API keys of the caller's lab; its audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from app.auth import service
from app.auth.deps import CallerDep
from app.auth.schemas import (
    AuditEventRead,
    KeyCreate,
    KeyCreated,
    KeyRead,
    MeRead,
    UserCreate,
    UserRead,
    UserUpdate,
)
from app.deps import SessionDep, UtcDateTime

router = APIRouter(tags=["access"])


@router.get("/me", response_model=MeRead)
def me(caller: CallerDep) -> MeRead:
    """Show the lab, user, role and key a request is made as."""
    return MeRead.model_validate(caller, from_attributes=True)


@router.get("/users", response_model=list[UserRead])
def list_users(session: SessionDep, caller: CallerDep) -> list[UserRead]:
    """List the users of the caller's lab."""
    return [UserRead.model_validate(u) for u in service.list_users(session, caller)]


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserRead)
def create_user(request: UserCreate, session: SessionDep, caller: CallerDep) -> UserRead:
    """Add a user to the lab (admins)."""
    return UserRead.model_validate(service.create_user(session, caller, name=request.name, role=request.role))


@router.patch("/users/{user_id}", response_model=UserRead)
def update_user(user_id: str, request: UserUpdate, session: SessionDep, caller: CallerDep) -> UserRead:
    """Change a user's role, or disable them, which stops all their keys at once (admins)."""
    user = service.update_user(session, caller, user_id, role=request.role, disabled=request.disabled)
    return UserRead.model_validate(user)


@router.post("/users/{user_id}/keys", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
def create_key(user_id: str, request: KeyCreate, session: SessionDep, caller: CallerDep) -> KeyCreated:
    """Make an API key for a user (admins; members for themselves). The response is the only time it is shown."""
    key, token = service.create_key(session, caller, user_id=user_id, name=request.name)
    return KeyCreated.model_validate({**KeyRead.model_validate(key).model_dump(), "key": token})


@router.get("/keys", response_model=list[KeyRead])
def list_keys(session: SessionDep, caller: CallerDep) -> list[KeyRead]:
    """List API keys (admins: the lab's; members: their own), without their secrets."""
    return [KeyRead.model_validate(k) for k in service.list_keys(session, caller)]


@router.delete("/keys/{key_id}", response_model=KeyRead)
def revoke_key(key_id: str, session: SessionDep, caller: CallerDep) -> KeyRead:
    """Revoke an API key at once (admins: any of the lab's; members: their own)."""
    return KeyRead.model_validate(service.revoke_key(session, caller, key_id))


@router.get("/audit", response_model=list[AuditEventRead])
def list_audit(
    session: SessionDep,
    caller: CallerDep,
    action: Annotated[str | None, Query(description="e.g. cohort.upload, cohort.delete, key.revoke")] = None,
    user_id: str | None = None,
    since: Annotated[UtcDateTime | None, Query(description="At or after (ISO 8601; UTC if no zone).")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> list[AuditEventRead]:
    """The lab's audit log, newest first: who uploaded, deleted, started, cancelled, made or revoked what (admins)."""
    events = service.list_audit(
        session, caller, action=action, user_id=user_id, since=since, limit=limit, offset=offset
    )
    return [AuditEventRead.model_validate(e) for e in events]
