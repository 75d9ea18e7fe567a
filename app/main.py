"""Application factory: routers, error bodies, and the job dispatcher (in-process, or Celery when configured)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from app.access_log import redact_access_log
from app.admin.router import router as admin_router
from app.api import api_router
from app.body_limit import BodyLimit
from app.config import get_settings
from app.db.session import session_factory
from app.errors import ExprsslError, TooManyRequests, Unauthorized, error_body
from app.memory import keep_freed_memory
from app.storage import get_store
from worker.dispatch import make_dispatcher

log = logging.getLogger(__name__)
# Staged files this old at start-up were left by a process killed mid-upload: no write takes 6 hours.
STALE_STAGING_S = 6 * 3600


def _location(loc: tuple[object, ...]) -> str:
    return ".".join(str(part) for part in loc if part not in ("body", "query", "path", "form"))


async def _exprssl_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ExprsslError)
    headers = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status_code, headers=headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    message = "; ".join(f"{_location(e['loc']) or 'body'}: {e['msg']}" for e in errors)
    details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
    return JSONResponse(error_body("invalid_request", message, details), status_code=422)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    """Framework errors (an unparsable JSON body, an unknown route or method) in the same error body."""
    assert isinstance(exc, HTTPException)
    codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
    code = codes.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


def _unreachable(exc: Exception) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


async def _database_error(_: Request, exc: Exception) -> JSONResponse:
    """A registry that cannot be reached is a 503 with a clear body, never a stack trace."""
    if not _unreachable(exc):
        raise exc  # a real bug (integrity, data): the server error it is
    cause = type(getattr(exc, "orig", None) or exc).__name__
    message = "the registry database is unreachable; try again shortly"
    body = error_body("database_unavailable", message, {"cause": cause})
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


async def _server_error(_: Request, exc: Exception) -> JSONResponse:
    """Any other exception is a bug: the error body's shape, no internals (the server's log has the traceback,
    which Starlette logs after this answer)."""
    message = "internal server error; the server's log has the details"
    return JSONResponse(error_body("internal_error", message, {"cause": type(exc).__name__}), status_code=500)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    store = get_store()
    swept = store.sweep_staging(STALE_STAGING_S)
    if swept:
        log.info("removed %d staged file(s) older than %d hours, left by interrupted uploads", swept,
                 STALE_STAGING_S // 3600)
    dispatcher = make_dispatcher(session_factory=session_factory(), store=store, settings=settings)
    app.state.dispatcher = dispatcher
    dispatcher.start()
    try:
        yield
    finally:
        dispatcher.shutdown()


def create_app() -> FastAPI:
    """Build the FastAPI application. The schema must exist: run ``alembic upgrade head`` first."""
    redact_access_log()  # whichever command serves it (exprssl serve, uvicorn --factory)
    keep_freed_memory(get_settings().heap_keep_bytes)  # in the serving process, whichever command started it
    app = FastAPI(
        title="exprssl",
        summary="Self-supervised representation learning on bulk gene-expression data.",
        version="0.1.0",
        lifespan=_lifespan,
    )
    app.add_exception_handler(ExprsslError, _exprssl_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    for database_error in (DBAPIError, PoolTimeout):
        app.add_exception_handler(database_error, _database_error)
    app.add_exception_handler(Exception, _server_error)
    app.include_router(api_router)
    app.include_router(admin_router)
    app.add_middleware(BodyLimit, limit=get_settings().max_json_bytes)
    return app
