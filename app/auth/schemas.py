"""Pydantic schemas of labs, users, API keys and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.db.orm import NAME_LENGTH, Role


class MeRead(BaseModel):
    lab_id: str
    lab_name: str
    user_id: str
    user_name: str
    role: Role
    key_id: str


class UserCreate(BaseModel):
    name: str = Field(min_length=1, max_length=NAME_LENGTH)
    role: Role = Role.MEMBER


class UserUpdate(BaseModel):
    role: Role | None = None
    disabled: bool | None = None


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    role: Role
    disabled: bool
    created_at: datetime


class KeyCreate(BaseModel):
    name: str = Field(default="api key", min_length=1, max_length=NAME_LENGTH, description="What the key is for.")


class KeyRead(BaseModel):
    """A key as listed: never its secret, which is shown once, at creation."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    user_id: str
    name: str
    prefix: str = Field(description="The non-secret part after 'exs_' that names the key.")
    created_at: datetime
    last_used_at: datetime | None = Field(description="To the minute.")
    revoked_at: datetime | None


class KeyCreated(KeyRead):
    key: str = Field(description="The key itself. Store it now: it is not stored and cannot be shown again.")


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    user_id: str | None
    key_id: str | None
    action: str
    object_type: str
    object_id: str | None
    details: dict[str, Any]
