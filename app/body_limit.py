"""A bound on request bodies other than cohort uploads (which stream to disk under their own limit): a JSON
body is read whole and parsed in memory, so an unbounded one could exhaust the API process."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body

# Routes whose body has its own limit: the multipart cohort upload (EXPRSSL_MAX_UPLOAD_BYTES).
EXEMPT = frozenset({("POST", "/cohorts")})


def _too_large(size: str, limit: int) -> str:
    return (f"the request body is {size} bytes; this server reads at most {limit:,} (EXPRSSL_MAX_JSON_BYTES): "
            "send a larger input as a cohort upload and refer to it by cohort_id")


class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, by its Content-Length before anything is read,
    or, sent without one, as soon as the bytes received pass the limit."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in EXEMPT:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            refused = error_body("payload_too_large", _too_large(f"{int(declared):,}", self.limit))
            await JSONResponse(refused, status_code=413)(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, _too_large(f"more than {self.limit:,}", self.limit))
            return message

        return counted
