"""Labs, users and API keys: create them, authenticate a bearer key, and record who did what.

A key is ``exs_<prefix>_<secret>``: 32 random bytes of secret, so a plain SHA-256 of the whole key is a
safe digest to store (there is nothing to brute-force, unlike a password). The prefix is not secret; it
finds the row and names the key in lists and in the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from app.db import orm, repository
from app.db.base import utcnow
from app.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized

KEY_PREFIX = "exs"
LAST_USED_RESOLUTION = timedelta(minutes=1)  # at most one write per key per minute


@dataclass(frozen=True)
class Caller:
    """Who is asking: the user behind a valid key, their lab and role."""

    lab_id: str
    lab_name: str
    user_id: str
    user_name: str
    role: orm.Role
    key_id: str

    @classmethod
    def of(cls, user: orm.User, key_id: str) -> Caller:
        """The caller acting as ``user`` with the key ``key_id`` (a key's id, or a tag such as "cli")."""
        return cls(user.lab_id, user.lab.name, user.id, user.name, user.role, key_id)

    @property
    def is_admin(self) -> bool:
        return self.role is orm.Role.ADMIN

    def require_admin(self, action: str) -> None:
        """Forbidden unless the caller is an admin of their lab; ``action`` names what was refused."""
        if not self.is_admin:
            raise Forbidden(f"{action} needs the admin role; user {self.user_name} is a member of lab {self.lab_name}")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> tuple[str, str]:
    prefix = secrets.token_hex(6)
    return prefix, f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"


# What a request needs of a key, its user and lab: plain columns in one query, built once. Loading the three
# rows as ORM objects (joined eager loads) took about twice as long, on every request.
_KEY_BY_PREFIX = (
    select(
        orm.ApiKey.id, orm.ApiKey.prefix, orm.ApiKey.secret_sha256, orm.ApiKey.revoked_at, orm.ApiKey.last_used_at,
        orm.User.id.label("user_id"), orm.User.name.label("user_name"), orm.User.role, orm.User.disabled,
        orm.User.lab_id, orm.Lab.name.label("lab_name"),
    )
    .join(orm.User, orm.User.id == orm.ApiKey.user_id)
    .join(orm.Lab, orm.Lab.id == orm.User.lab_id)
    .where(orm.ApiKey.prefix == bindparam("prefix"))
)


def authenticate(session: Session, token: str) -> Caller:
    """The caller a bearer key belongs to; Unauthorized for a malformed, unknown or revoked key. Commits."""
    parts = token.split("_", 2)  # the secret itself may contain "_"
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        raise Unauthorized("malformed API key: expected 'Authorization: Bearer exs_...'")
    key = session.execute(_KEY_BY_PREFIX, {"prefix": parts[1]}).one_or_none()
    if key is None or not hmac.compare_digest(key.secret_sha256, digest(token)):
        raise Unauthorized("unknown API key")
    _check_active(key.prefix, key.revoked_at, user_name=key.user_name, disabled=key.disabled)
    _mark_used(session, key.id, key.last_used_at, utcnow())
    return Caller(lab_id=key.lab_id, lab_name=key.lab_name, user_id=key.user_id, user_name=key.user_name,
                  role=key.role, key_id=key.id)


def _mark_used(session: Session, key_id: str, last_used_at: datetime | None, now: datetime) -> None:
    """Record the key's last use, at most once per LAST_USED_RESOLUTION (commits when it writes)."""
    if last_used_at is None or now - last_used_at > LAST_USED_RESOLUTION:
        session.execute(update(orm.ApiKey).where(orm.ApiKey.id == key_id).values(last_used_at=now))
        session.commit()


def _check_active(prefix: str, revoked_at: datetime | None, *, user_name: str, disabled: bool) -> None:
    """Unauthorized if the key ``prefix`` was revoked or its user disabled."""
    if revoked_at is not None:
        raise Unauthorized(f"API key {prefix} was revoked at {revoked_at.isoformat()}")
    if disabled:
        raise Unauthorized(f"user {user_name} is disabled")


def _admin_session(session: Session, token: str) -> orm.AdminSession | None:
    return session.scalar(select(orm.AdminSession).where(orm.AdminSession.token_sha256 == digest(token)))


def open_admin_session(
    session: Session, caller: Caller, *, lifetime: timedelta, replacing: str | None = None
) -> str:
    """Open an admin-pages session acting with the caller's key; return its token (stored as SHA-256). Commits.

    ``replacing``, the token of the browser's previous session, is ended; expired sessions are dropped.
    """
    now = utcnow()
    session.execute(delete(orm.AdminSession).where(orm.AdminSession.expires_at <= now))
    if replacing:
        session.execute(delete(orm.AdminSession).where(orm.AdminSession.token_sha256 == digest(replacing)))
    token = secrets.token_urlsafe(32)
    row = orm.AdminSession(key_id=caller.key_id, token_sha256=digest(token), created_at=now, expires_at=now + lifetime)
    session.add(row)
    session.flush()
    record(session, caller, "admin.login", row, {"expires_at": row.expires_at.isoformat()})
    session.commit()
    return token


def admin_session_caller(session: Session, token: str) -> Caller:
    """The caller an admin-pages session acts as; Unauthorized when it is unknown, ended or expired, or its key
    was revoked or its user disabled since."""
    row = _admin_session(session, token)
    if row is None:
        raise Unauthorized("unknown or ended admin session")
    now = utcnow()
    if row.expires_at <= now:
        session.delete(row)
        session.commit()
        raise Unauthorized("admin session expired")
    key = row.key
    _check_active(key.prefix, key.revoked_at, user_name=key.user.name, disabled=key.user.disabled)
    _mark_used(session, key.id, key.last_used_at, now)
    return Caller.of(key.user, key.id)


def set_admin_flash(session: Session, token: str, flash: dict[str, str]) -> None:
    """Keep ``flash`` for the next page of an admin-pages session (replacing any unshown one). Rolls back
    what the request left uncommitted (an action refused midway), then commits."""
    session.rollback()
    row = _admin_session(session, token)
    if row is not None:
        row.flash = flash
        session.commit()


def take_admin_flash(session: Session, token: str) -> dict[str, str] | None:
    """The message kept for an admin-pages session's next page, now cleared (commits when there is one)."""
    row = _admin_session(session, token)
    if row is None or row.flash is None:
        return None
    flash, row.flash = row.flash, None
    session.commit()
    return flash


def close_admin_session(session: Session, token: str) -> None:
    """End an admin-pages session (logging out); an unknown token is ignored. Commits."""
    row = _admin_session(session, token)
    if row is None:
        return
    record(session, Caller.of(row.key.user, row.key_id), "admin.logout", row)
    session.delete(row)
    session.commit()


def record(
    session: Session, caller: Caller, action: str, obj: Any, details: dict[str, Any] | None = None
) -> None:
    """Append an audit event for ``action`` on ``obj`` (a registry row). Does not commit."""
    session.add(
        orm.AuditEvent(
            lab_id=caller.lab_id,
            user_id=caller.user_id,
            key_id=caller.key_id,
            action=action,
            object_type=obj.__tablename__,
            object_id=getattr(obj, "id", None),
            details=details or {},
        )
    )


def _clean_name(name: str, what: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > orm.NAME_LENGTH:
        raise InvalidInput(f"{what}: give 1 to {orm.NAME_LENGTH} characters, got {len(cleaned)}")
    return cleaned


def _add_key(session: Session, user: orm.User, name: str) -> tuple[orm.ApiKey, str]:
    prefix, token = _new_token()
    key = orm.ApiKey(user_id=user.id, lab_id=user.lab_id, name=name, prefix=prefix, secret_sha256=digest(token))
    session.add(key)
    session.flush()
    return key, token


def create_lab(session: Session, *, name: str, admin_name: str) -> tuple[orm.Lab, orm.User, str]:
    """A new lab with its first admin and that admin's key (the only time the key is seen). Commits."""
    name = _clean_name(name, "lab name")
    if session.scalar(select(orm.Lab).where(orm.Lab.name == name)) is not None:
        raise Conflict(f"a lab named {name!r} already exists")
    lab = orm.Lab(name=name)
    session.add(lab)
    session.flush()
    admin = orm.User(lab_id=lab.id, name=_clean_name(admin_name, "admin name"), role=orm.Role.ADMIN)
    session.add(admin)
    session.flush()
    key, token = _add_key(session, admin, "first admin key")
    caller = Caller.of(admin, key.id)
    record(session, caller, "lab.create", lab, {"admin": admin.name})
    record(session, caller, "key.create", key, {"prefix": key.prefix, "user": admin.name})
    session.commit()
    return lab, admin, token


def count_labs(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(orm.Lab)) or 0


def keyless_admin(session: Session, *, lab_name: str) -> orm.User | None:
    """An admin of lab ``lab_name`` when the lab has no API key at all (nobody can log in to it)."""
    lab = session.scalar(select(orm.Lab).where(orm.Lab.name == lab_name))
    if lab is None or session.scalar(select(orm.ApiKey.id).where(orm.ApiKey.lab_id == lab.id).limit(1)):
        return None
    admins = select(orm.User).where(orm.User.lab_id == lab.id, orm.User.role == orm.Role.ADMIN)
    return session.scalars(admins.order_by(orm.User.created_at)).first()


def get_lab_by_name(session: Session, name: str) -> orm.Lab:
    lab = session.scalar(select(orm.Lab).where(orm.Lab.name == name))
    if lab is None:
        raise NotFound(f"lab {name!r} not found")
    return lab


def get_user_by_name(session: Session, *, lab_name: str, user_name: str) -> orm.User:
    """User ``user_name`` of lab ``lab_name``; NotFound names whichever is missing."""
    lab = get_lab_by_name(session, lab_name)
    user = session.scalar(select(orm.User).where(orm.User.lab_id == lab.id, orm.User.name == user_name))
    if user is None:
        raise NotFound(f"lab {lab_name!r} has no user named {user_name!r}")
    return user


def get_user(session: Session, caller: Caller, user_id: str) -> orm.User:
    return repository.get_or_404(session, orm.User, user_id, lab_id=caller.lab_id)


def list_users(session: Session, caller: Caller) -> list[orm.User]:
    query = select(orm.User).where(orm.User.lab_id == caller.lab_id).order_by(orm.User.created_at, orm.User.id)
    return list(session.scalars(query))


def create_user(session: Session, caller: Caller, *, name: str, role: orm.Role) -> orm.User:
    """Add a user to the caller's lab (admins only). Commits."""
    caller.require_admin("creating users")
    name = _clean_name(name, "user name")
    taken = select(orm.User).where(orm.User.lab_id == caller.lab_id, orm.User.name == name)
    if session.scalar(taken) is not None:
        raise Conflict(f"lab {caller.lab_name} already has a user named {name!r}")
    user = orm.User(lab_id=caller.lab_id, name=name, role=role)
    session.add(user)
    session.flush()
    record(session, caller, "user.create", user, {"name": name, "role": role.value})
    session.commit()
    return user


def update_user(
    session: Session, caller: Caller, user_id: str, *, role: orm.Role | None, disabled: bool | None
) -> orm.User:
    """Change a user's role or disable them (admins only; not themselves). Commits."""
    caller.require_admin("changing users")
    user = get_user(session, caller, user_id)
    if user.id == caller.user_id:
        raise Conflict("admins cannot change their own role or disable themselves; ask another admin")
    changes: dict[str, Any] = {}
    if role is not None and role is not user.role:
        changes["role"] = [user.role.value, role.value]
        user.role = role
    if disabled is not None and disabled != user.disabled:
        changes["disabled"] = [user.disabled, disabled]
        user.disabled = disabled
        if disabled:  # their admin-page logins end with their keys
            keys = select(orm.ApiKey.id).where(orm.ApiKey.user_id == user.id)
            session.execute(delete(orm.AdminSession).where(orm.AdminSession.key_id.in_(keys)))
    record(session, caller, "user.update", user, {"name": user.name, **changes})
    session.commit()
    return user


def create_key(session: Session, caller: Caller, *, user_id: str, name: str) -> tuple[orm.ApiKey, str]:
    """A new key for a user: admins for anyone of their lab, members for themselves. Commits."""
    user = get_user(session, caller, user_id)
    if user.id != caller.user_id:
        caller.require_admin("creating keys for other users")
    if user.disabled:
        raise Conflict(f"user {user.name} is disabled; enable them before giving them a key")
    key, token = _add_key(session, user, _clean_name(name, "key name"))
    record(session, caller, "key.create", key, {"prefix": key.prefix, "user": user.name})
    session.commit()
    return key, token


def list_keys(session: Session, caller: Caller) -> list[orm.ApiKey]:
    """Admins see every key of their lab, members their own."""
    query = select(orm.ApiKey).where(orm.ApiKey.lab_id == caller.lab_id)
    if not caller.is_admin:
        query = query.where(orm.ApiKey.user_id == caller.user_id)
    return list(session.scalars(query.order_by(orm.ApiKey.created_at, orm.ApiKey.id)))


def revoke_key(session: Session, caller: Caller, key_id: str) -> orm.ApiKey:
    """Revoke a key at once: admins any of their lab's, members their own. Commits."""
    key = repository.get_or_404(session, orm.ApiKey, key_id, lab_id=caller.lab_id)
    if key.user_id != caller.user_id:
        caller.require_admin("revoking other users' keys")
    if key.revoked_at is not None:
        raise Conflict(f"API key {key.prefix} is already revoked")
    key.revoked_at = utcnow()
    session.execute(delete(orm.AdminSession).where(orm.AdminSession.key_id == key.id))  # its logins end too
    record(session, caller, "key.revoke", key, {"prefix": key.prefix, "user": key.user.name})
    session.commit()
    return key


def list_audit(
    session: Session,
    caller: Caller,
    *,
    action: str | None,
    user_id: str | None,
    since: datetime | None,
    limit: int,
    offset: int,
) -> list[orm.AuditEvent]:
    """The lab's audit log, newest first (admins only)."""
    caller.require_admin("reading the audit log")
    query = select(orm.AuditEvent).where(orm.AuditEvent.lab_id == caller.lab_id)
    if action:
        query = query.where(orm.AuditEvent.action == action)
    if user_id:
        query = query.where(orm.AuditEvent.user_id == user_id)
    if since:
        query = query.where(orm.AuditEvent.at >= since)
    query = query.order_by(orm.AuditEvent.at.desc(), orm.AuditEvent.id.desc())
    return list(session.scalars(query.limit(limit).offset(offset)))
