"""Errors that carry a user-facing message and map to one HTTP status."""

from __future__ import annotations


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
