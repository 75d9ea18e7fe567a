"""The access log without secrets: a client that puts an API key or a session token in a URL's query string
(it is refused: keys travel in the Authorization header) must not leave it in the server's log."""

from __future__ import annotations

import logging
import re

# Query parameters whose values are never logged: anything naming a key, token, secret, password or auth.
_SECRET = re.compile(r"(?i)([?&][^=&]*(?:key|token|secret|passw|auth)[^=&]*=)[^&\s]*")


def redact(path: str) -> str:
    """``path`` (with its query string) with the values of secret-looking parameters replaced."""
    return _SECRET.sub(r"\1[redacted]", path)


class RedactSecrets(logging.Filter):
    """A filter for uvicorn's access logger, whose records carry the path with its query string as their
    third argument (client, method, path, HTTP version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact(args[2]), *args[3:])
        return True


def redact_access_log() -> None:
    """Put :class:`RedactSecrets` on uvicorn's access logger itself, however the server was started
    (``exprssl serve``, or ``uvicorn app.main:create_app --factory`` as docker-compose.yml's api): uvicorn
    configures its logging before it calls the factory, which calls this."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecrets) for f in access.filters):
        access.addFilter(RedactSecrets())

