"""The caller of a request: from its bearer key (REST) or its session cookie (admin pages)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth import service
from app.auth.service import Caller
from app.deps import SessionDep
from app.errors import Unauthorized

bearer = HTTPBearer(auto_error=False, description="An exprssl API key: `Authorization: Bearer exs_...`.")


def get_caller(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Caller:
    """The user behind the request's bearer key; 401 without a valid one."""
    return service.authenticate(session, bearer_key(credentials))


def bearer_key(credentials: HTTPAuthorizationCredentials | None) -> str:
    """The key a request's Authorization header carries; 401 without one."""
    if credentials is None:
        raise Unauthorized("missing API key: send the header 'Authorization: Bearer exs_...'")
    return credentials.credentials


CallerDep = Annotated[Caller, Depends(get_caller)]
