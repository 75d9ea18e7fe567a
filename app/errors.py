"""Errors that carry a user-facing message and map to one HTTP status."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ExprsslError(Exception):
    """Base class: ``status_code`` and ``code`` decide the HTTP error body."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ExprsslError):
    """The request's data is malformed: a file, a column, a parameter."""

    status_code = 422
    code = "invalid_input"


class Unauthorized(ExprsslError):
    """No API key, or one that is unknown, revoked, or belongs to a disabled user."""

    status_code = 401
    code = "unauthorized"


class Forbidden(ExprsslError):
    """The caller is known but their role does not allow the action."""

    status_code = 403
    code = "forbidden"


class TooManyRequests(ExprsslError):
    """A rate limit on an expensive endpoint was reached; ``retry_after`` is in seconds."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFound(ExprsslError):
    status_code = 404
    code = "not_found"


class Conflict(ExprsslError):
    """The request is valid but clashes with the registry's state."""

    status_code = 409
    code = "conflict"


class PayloadTooLarge(ExprsslError):
    """The request body exceeds the configured upload limit."""

    status_code = 413
    code = "payload_too_large"


class ErrorRead(BaseModel):
    code: str = Field(description="Machine-readable: invalid_input, invalid_request, not_found, conflict ...")
    message: str = Field(description="What is wrong, naming the field, file, sample or gene at fault.")
    details: Any = Field(default=None, description="Per-field validation errors, or the cause of an outage.")


class ErrorBody(BaseModel):
    """The body of every error response (built by :func:`error_body`)."""

    error: ErrorRead


def error_body(code: str, message: str, details: object = None) -> dict[str, object]:
    """Every error the API returns has this shape."""
    return {"error": {"code": code, "message": message, "details": details}}
