"""Who is using the admin pages (a server-side session opened with an API key), and the checks every admin
request passes.

The cookie holds a random session token (the registry keeps its SHA-256 only), HttpOnly and
SameSite=Strict, scoped to /admin; never the API key. The session expires after
``EXPRSSL_ADMIN_SESSION_HOURS`` and ends at logout, or when its key is revoked or its user disabled. A form
post whose Origin header names another host is refused (403) before the route runs, whatever the cookie.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from app.admin import views
from app.auth import service as auth
from app.auth.service import Caller
from app.deps import SessionDep
from app.errors import ExprsslError, Forbidden, Unauthorized

SESSION_COOKIE = "exprssl_session"
LOGIN_PATH = "/admin/login"


class LoginRequired(Exception):
    """No session cookie, or one whose key no longer authenticates."""


def start_session(response: Response, token: str, *, secure: bool, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, path=views.COOKIE_PATH, httponly=True, samesite="strict", secure=secure,
        max_age=max_age,
    )


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=views.COOKIE_PATH, httponly=True, samesite="strict")


def page_caller(request: Request, session: SessionDep) -> Caller:
    """The user behind the session cookie; LoginRequired (a redirect to the login page) without a live one.

    A page (a GET) takes the session's flash message, if any, for :func:`app.admin.views.render` to show.
    """
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise LoginRequired
    try:
        caller = auth.admin_session_caller(session, token)
    except Unauthorized as exc:
        raise LoginRequired from exc
    if request.method == "GET":
        request.state.flash = views.Flash.of(auth.take_admin_flash(session, token))
    return caller


PageCaller = Annotated[Caller, Depends(page_caller)]


@dataclass(frozen=True)
class Flasher:
    """Redirects after a form action with a one-off message for the next page, kept in the admin session
    (server-side: a cookie would cut a long message)."""

    session: Session
    token: str

    def redirect(self, path: str, kind: str, text: str) -> Response:
        auth.set_admin_flash(self.session, self.token, {"kind": kind, "text": text})
        return RedirectResponse(path, status_code=303)


def flasher(request: Request, session: SessionDep, _caller: PageCaller) -> Flasher:
    return Flasher(session, request.cookies.get(SESSION_COOKIE, ""))


FlashDep = Annotated[Flasher, Depends(flasher)]


def check_origin(request: Request) -> None:
    """Forbidden when a request carries an Origin header naming another host than this app's (CSRF)."""
    if request.headers.get("sec-fetch-site") == "cross-site":  # browsers send it even without Origin
        raise Forbidden("cross-site form post refused (Sec-Fetch-Site: cross-site)")
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    if urlsplit(origin).netloc.lower() != host.lower():
        raise Forbidden(f"cross-site form post refused: Origin {origin!r} is not this site ({host})")


def _login_redirect() -> Response:
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    end_session(response)
    return response


def _error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    context = {"caller": None, "title": title, "message": message}
    return views.render(request, "error.html", context, status_code=status_code)


class AdminRoute(APIRoute):
    """Admin routes answer in HTML: the login page when not logged in, an error page for refused requests."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def admin_handler(request: Request) -> Response:
            try:
                if request.method == "POST":
                    check_origin(request)
                return await handler(request)
            except LoginRequired:
                return _login_redirect()
            except ExprsslError as exc:
                title = {403: "Forbidden", 404: "Not found", 409: "Conflict"}.get(exc.status_code, "Error")
                return _error_page(request, exc.status_code, title, exc.message)
            except RequestValidationError as exc:
                message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                return _error_page(request, 422, "Invalid request", message)

        return admin_handler
