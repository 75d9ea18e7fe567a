"""Admin pages under /admin: jobs, cohorts, encoders, predictors, users and keys, audit log; login with an API key.

Every page goes through the same services as the REST API, scoped to the caller's lab; another lab's id is a
404 page. Form actions redirect back with a one-off flash message, kept in the admin session (post, redirect, get).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, TypeVar

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import RedirectResponse

from app import caches, ratelimit
from app.admin import service, views
from app.admin.access import SESSION_COOKIE, AdminRoute, FlashDep, PageCaller, end_session, start_session
from app.auth import service as auth
from app.auth.service import Caller
from app.cohorts import repository as cohorts
from app.cohorts import service as cohort_service
from app.db import orm, repository
from app.deps import DispatcherDep, SessionDep, SettingsDep, StoreDep
from app.encoders import service as encoders
from app.errors import Conflict, Forbidden, InvalidInput, TooManyRequests, Unauthorized
from app.evaluations import service as evaluations
from app.jobs import service as jobs
from app.lineage import repository as lineage
from app.predictions import service as predictions
from app.predictors import card
from app.predictors import service as predictors

router = APIRouter(prefix="/admin", include_in_schema=False, route_class=AdminRoute)

PAGE_SIZE = 25
AUDIT_PAGE_SIZE = 100
E = TypeVar("E", bound=StrEnum)
PageNumber = Annotated[int, Query(ge=1, le=2**31 - 1)]


@dataclass(frozen=True)
class Pager:
    """Page ``number`` of ``pages``, with links to its neighbours that keep the other query parameters."""

    number: int
    pages: int
    total: int
    prev_url: str | None
    next_url: str | None
    size: int = PAGE_SIZE

    @property
    def offset(self) -> int:
        """Rows before this page."""
        return (self.number - 1) * self.size


def _page_url(request: Request, number: int) -> str:
    url = request.url.include_query_params(page=number)
    return f"{url.path}?{url.query}"


def _pager(request: Request, number: int, total: int, size: int = PAGE_SIZE) -> Pager:
    pages = max(1, math.ceil(total / size))
    number = min(number, pages)
    prev_url = _page_url(request, number - 1) if number > 1 else None
    next_url = _page_url(request, number + 1) if number < pages else None
    return Pager(number, pages, total, prev_url, next_url, size)


def _redirect(path: str) -> Response:
    return RedirectResponse(path, status_code=303)


def _choice(enum: type[E], value: str | None, what: str) -> E | None:
    if not value:
        return None
    try:
        return enum(value)
    except ValueError:
        raise InvalidInput(f"{what}: unknown value {value!r}; one of {', '.join(m.value for m in enum)}") from None


def _day(value: str | None, what: str) -> datetime | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{what}: expected a date like 2024-05-31, got {value!r}") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@router.get("")
def home() -> Response:
    """Open the jobs list."""
    return _redirect("/admin/jobs")


@router.get("/login")
def login_form(request: Request) -> Response:
    """Show the login form."""
    return views.render(request, "login.html", {"caller": None, "error": None})


@router.post("/login")
def login(
    request: Request, session: SessionDep, settings: SettingsDep, api_key: Annotated[str, Form()] = ""
) -> Response:
    """Log in with an API key: it is checked, and a session acting with it is opened (the cookie holds the
    session's token, never the key)."""
    try:
        caller = auth.authenticate(session, api_key.strip())
    except Unauthorized as exc:
        return views.render(request, "login.html", {"caller": None, "error": exc.message}, status_code=401)
    lifetime = timedelta(hours=settings.admin_session_hours)
    token = auth.open_admin_session(
        session, caller, lifetime=lifetime, replacing=request.cookies.get(SESSION_COOKIE)
    )
    response = _redirect("/admin/jobs")
    secure = settings.admin_cookie_secure
    if secure is None:
        secure = request.url.scheme == "https"
    start_session(response, token, secure=secure, max_age=int(lifetime.total_seconds()))
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep) -> Response:
    """Log out: end the session in the registry and forget the cookie."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        auth.close_admin_session(session, token)
    response = _redirect("/admin/login")
    end_session(response)
    return response


@router.get("/jobs")
def list_jobs(
    request: Request,
    session: SessionDep,
    caller: PageCaller,
    state: str | None = None,
    kind: str | None = None,
    user: str | None = None,
    since: str | None = None,
    until: str | None = None,
    page: PageNumber = 1,
) -> Response:
    """List the lab's jobs, newest first, filtered by state, kind, user and creation date."""
    last_day = _day(until, "until")
    where = jobs.JobFilter(
        state=_choice(orm.JobState, state, "state"),
        kind=_choice(orm.JobKind, kind, "kind"),
        user_id=user or None,
        since=_day(since, "since"),
        until=None if last_day is None else last_day + timedelta(days=1),  # the whole "until" day
    )
    pager = _pager(request, page, jobs.count_jobs(session, lab_id=caller.lab_id, where=where))
    rows = jobs.list_jobs(
        session, lab_id=caller.lab_id, where=where, limit=PAGE_SIZE, offset=pager.offset
    )
    context = {
        "caller": caller, "nav": "jobs", "jobs": rows, "pager": pager,
        "users": auth.list_users(session, caller), "names": service.user_names(session, lab_id=caller.lab_id),
        "states": list(orm.JobState), "kinds": list(orm.JobKind),
        "filters": {"state": state or "", "kind": kind or "", "user": user or "", "since": since or "",
                    "until": until or ""},
    }
    return views.render(request, "jobs.html", context)


@router.get("/jobs/{job_id}")
def job_page(job_id: str, request: Request, session: SessionDep, caller: PageCaller) -> Response:
    """Show a job: parameters, state, progress, error, events, loss curve, and its cancel or retry button."""
    job = jobs.get_job(session, job_id, lab_id=caller.lab_id)
    target = jobs.target(session, job)
    curve = getattr(target, "loss_curve", None) or []
    context = {
        "caller": caller, "nav": "jobs", "job": job, "target": target,
        "target_type": None if target is None else target.__tablename__,
        "names": service.user_names(session, lab_id=caller.lab_id), "loss_svg": views.loss_curve_svg(curve),
        "can_cancel": jobs.may_act_on(caller, job) and job.state in (orm.JobState.QUEUED, orm.JobState.RUNNING),
        "can_retry": jobs.may_act_on(caller, job) and job.state in (orm.JobState.FAILED, orm.JobState.CANCELLED),
    }
    return views.render(request, "job.html", context)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(
    job_id: str, session: SessionDep, caller: PageCaller, flash: FlashDep, dispatcher: DispatcherDep
) -> Response:
    """Cancel a job (your own; admins any of the lab's) and go back to its page."""
    try:
        job = jobs.request_cancel(session, caller, job_id)
    except Conflict as exc:
        return flash.redirect(f"/admin/jobs/{job_id}", "error", exc.message)
    dispatcher.cancel(job_id)
    done = job.state is orm.JobState.CANCELLED
    text = "Job cancelled." if done else "Cancellation requested: the job stops at its next epoch."
    return flash.redirect(f"/admin/jobs/{job_id}", "ok", text)


@router.post("/jobs/{job_id}/retry")
def retry_job(
    job_id: str,
    session: SessionDep,
    caller: PageCaller,
    flash: FlashDep,
    dispatcher: DispatcherDep,
    settings: SettingsDep,
) -> Response:
    """Queue a failed or cancelled job again (your own; admins any of the lab's) and go back to its page;
    counted against the caller's "train" limit, as the API's retry is."""
    try:
        ratelimit.hit(settings, "train", caller.user_id)
        job = jobs.retry(session, caller, job_id)
    except (Conflict, TooManyRequests) as exc:
        return flash.redirect(f"/admin/jobs/{job_id}", "error", exc.message)
    dispatcher.submit(job.id)
    resumes = f"; it resumes from its checkpoint at epoch {job.checkpoint['epoch']}" if job.checkpoint else ""
    return flash.redirect(f"/admin/jobs/{job_id}", "ok", f"Job queued again{resumes}.")


@router.get("/cohorts")
def list_cohorts(request: Request, session: SessionDep, caller: PageCaller, page: PageNumber = 1) -> Response:
    """List the lab's cohorts, newest first."""
    pager = _pager(request, page, repository.count(session, orm.Cohort, lab_id=caller.lab_id))
    rows = cohorts.list_all(session, lab_id=caller.lab_id, limit=PAGE_SIZE, offset=pager.offset)
    return views.render(request, "cohorts.html", {"caller": caller, "nav": "cohorts", "cohorts": rows, "pager": pager})


@router.get("/cohorts/{cohort_id}")
def cohort_page(cohort_id: str, request: Request, session: SessionDep, caller: PageCaller) -> Response:
    """Show a cohort: shape, values, gene ids, ingest report, class counts, and what was made from it."""
    cohort = cohorts.get(session, cohort_id, lab_id=caller.lab_id)
    made = lineage.of_cohort(session, cohort)
    context = {"caller": caller, "nav": "cohorts", "cohort": cohort, "made": made}
    return views.render(request, "cohort.html", context)


@router.get("/encoders")
def list_encoders(request: Request, session: SessionDep, caller: PageCaller, page: PageNumber = 1) -> Response:
    """List the lab's encoders, newest first."""
    pager = _pager(request, page, repository.count(session, orm.Encoder, lab_id=caller.lab_id))
    rows = repository.listing(session, orm.Encoder, lab_id=caller.lab_id, limit=PAGE_SIZE, offset=pager.offset)
    context = {
        "caller": caller, "nav": "encoders", "encoders": rows, "pager": pager,
        "cohort_names": service.cohort_names(session, lab_id=caller.lab_id, ids=[e.cohort_id for e in rows]),
    }
    return views.render(request, "encoders.html", context)


@router.get("/encoders/{encoder_id}")
def encoder_page(encoder_id: str, request: Request, session: SessionDep, caller: PageCaller) -> Response:
    """Show an encoder: method, parameters, status, loss curve, lineage and the predictors fitted on it."""
    encoder = encoders.get(session, encoder_id, lab_id=caller.lab_id)
    parent_id = encoder.parent_encoder_id
    context = {
        "caller": caller, "nav": "encoders", "encoder": encoder,
        "cohort": cohorts.get(session, encoder.cohort_id, lab_id=caller.lab_id),
        "parent": None if parent_id is None else encoders.get(session, parent_id, lab_id=caller.lab_id),
        "children": service.continued_encoders(session, encoder),
        "loss_svg": views.loss_curve_svg(encoder.loss_curve),
        "predictors": service.predictors_on_encoder(session, encoder),
    }
    return views.render(request, "encoder.html", context)


@router.get("/predictors")
def list_predictors(request: Request, session: SessionDep, caller: PageCaller, page: PageNumber = 1) -> Response:
    """List the lab's predictors, newest first."""
    pager = _pager(request, page, repository.count(session, orm.Predictor, lab_id=caller.lab_id))
    rows = repository.listing(session, orm.Predictor, lab_id=caller.lab_id, limit=PAGE_SIZE, offset=pager.offset)
    context = {
        "caller": caller, "nav": "predictors", "predictors": rows, "pager": pager,
        "cohort_names": service.cohort_names(session, lab_id=caller.lab_id, ids=[p.cohort_id for p in rows]),
        "methods": service.encoder_methods(session, lab_id=caller.lab_id, ids=[p.encoder_id for p in rows]),
    }
    return views.render(request, "predictors.html", context)


@router.get("/predictors/{predictor_id}")
def predictor_page(predictor_id: str, request: Request, session: SessionDep, caller: PageCaller) -> Response:
    """Show a predictor: head, status, test metrics, confusion matrix, calibration, label-efficiency plot."""
    predictor = predictors.get(session, predictor_id, lab_id=caller.lab_id)
    encoder = None if predictor.encoder_id is None else encoders.get(session, predictor.encoder_id,
                                                                     lab_id=caller.lab_id)
    context = {
        "caller": caller, "nav": "predictors", "predictor": predictor, "encoder": encoder,
        "cohort": cohorts.get(session, predictor.cohort_id, lab_id=caller.lab_id),
        "confusion": views.confusion_matrix(predictor.classes, predictor.metrics.get("confusion_matrix")),
        "evaluation": card.newest_evaluation(session, predictor.cohort_id, predictor.label_column),
        "predictions": predictions.list_for_predictor(
            session, predictor.id, lab_id=caller.lab_id, limit=PAGE_SIZE, offset=0
        ),
        "n_predictions": repository.count(
            session, orm.Prediction, lab_id=caller.lab_id, where=[orm.Prediction.predictor_id == predictor.id]
        ),
        "names": service.user_names(session, lab_id=caller.lab_id),
    }
    return views.render(request, "predictor.html", context)


@router.get("/predictors/{predictor_id}/label-efficiency.svg")
def label_efficiency_plot(predictor_id: str, session: SessionDep, caller: PageCaller) -> Response:
    """Draw balanced accuracy against label fraction for the lab's ready predictors on this cohort and label."""
    predictor = predictors.get(session, predictor_id, lab_id=caller.lab_id)
    title = f"Label efficiency: {predictor.label_column}"
    svg = views.label_efficiency_svg(service.efficiency_points(session, predictor), title=title)
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@router.get("/evaluations/{evaluation_id}/plot.png")
def evaluation_plot(evaluation_id: str, session: SessionDep, caller: PageCaller) -> Response:
    """Draw a ready evaluation's label-efficiency curves as a PNG."""
    evaluation = evaluations.get(session, evaluation_id, lab_id=caller.lab_id)
    return Response(evaluations.plot_png(evaluation), media_type="image/png")


def _users_page(request: Request, session: SessionDep, caller: Caller, new_key: str | None = None) -> Response:
    caller.require_admin("the users and keys page")
    context = {
        "caller": caller, "nav": "users", "users": auth.list_users(session, caller),
        "keys": auth.list_keys(session, caller), "names": service.user_names(session, lab_id=caller.lab_id),
        "roles": list(orm.Role), "new_key": new_key,
    }
    response = views.render(request, "users.html", context)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/users")
def users_page(request: Request, session: SessionDep, caller: PageCaller) -> Response:
    """Show the lab's users and their keys, with forms to add users and keys and to revoke keys (admins)."""
    return _users_page(request, session, caller)


@router.post("/users")
def create_user(
    session: SessionDep,
    caller: PageCaller,
    flash: FlashDep,
    name: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "member",
) -> Response:
    """Add a user to the lab (admins)."""
    caller.require_admin("creating users")
    try:
        user = auth.create_user(session, caller, name=name, role=_choice(orm.Role, role, "role") or orm.Role.MEMBER)
    except (Conflict, InvalidInput) as exc:
        return flash.redirect("/admin/users", "error", exc.message)
    return flash.redirect("/admin/users", "ok", f"User {user.name} ({user.role.value}) created.")


@router.post("/users/{user_id}")
def update_user(
    user_id: str,
    session: SessionDep,
    caller: PageCaller,
    flash: FlashDep,
    role: Annotated[str, Form()] = "",
    disabled: Annotated[str, Form()] = "",
) -> Response:
    """Change a user's role, or disable or enable them (admins; a disabled user's keys stop at once)."""
    caller.require_admin("changing users")
    flags = {"yes": True, "no": False}
    if disabled and disabled not in flags:
        return flash.redirect("/admin/users", "error", f"disabled must be yes or no, got {disabled!r}")
    try:
        user = auth.update_user(
            session, caller, user_id, role=_choice(orm.Role, role, "role"), disabled=flags.get(disabled)
        )
    except (Conflict, InvalidInput) as exc:
        return flash.redirect("/admin/users", "error", exc.message)
    state = "disabled" if user.disabled else "enabled"
    return flash.redirect("/admin/users", "ok", f"User {user.name} is now {user.role.value}, {state}.")


@router.post("/keys")
def create_key(
    request: Request,
    session: SessionDep,
    caller: PageCaller,
    flash: FlashDep,
    user_id: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "api key",
) -> Response:
    """Make an API key for a user of the lab and show it, this once (admins)."""
    caller.require_admin("creating keys on the users page")
    try:
        _, token = auth.create_key(session, caller, user_id=user_id, name=name)
    except (Conflict, InvalidInput) as exc:
        return flash.redirect("/admin/users", "error", exc.message)
    return _users_page(request, session, caller, new_key=token)


@router.post("/keys/{key_id}/revoke")
def revoke_key(key_id: str, session: SessionDep, caller: PageCaller, flash: FlashDep) -> Response:
    """Revoke an API key of the lab at once (admins)."""
    caller.require_admin("revoking keys on the users page")
    try:
        key = auth.revoke_key(session, caller, key_id)
    except Conflict as exc:
        return flash.redirect("/admin/users", "error", exc.message)
    return flash.redirect("/admin/users", "ok", f"Key {key.prefix} revoked.")


@router.get("/audit")
def audit_page(
    request: Request, session: SessionDep, caller: PageCaller, action: str | None = None, page: PageNumber = 1
) -> Response:
    """Show the lab's audit log, newest first, optionally one action only (admins)."""
    offset = (page - 1) * AUDIT_PAGE_SIZE
    events = auth.list_audit(
        session, caller, action=action or None, user_id=None, since=None, limit=AUDIT_PAGE_SIZE + 1, offset=offset
    )
    context = {
        "caller": caller, "nav": "audit", "events": events[:AUDIT_PAGE_SIZE], "action": action or "",
        "actions": service.audit_actions(session, lab_id=caller.lab_id),
        "names": service.user_names(session, lab_id=caller.lab_id), "page": page,
        "prev_url": _page_url(request, page - 1) if page > 1 else None,
        "next_url": _page_url(request, page + 1) if len(events) > AUDIT_PAGE_SIZE else None,
    }
    return views.render(request, "audit.html", context)


@router.post("/predictions/{prediction_id}/delete")
def delete_prediction(
    prediction_id: str, session: SessionDep, store: StoreDep, caller: PageCaller, flash: FlashDep
) -> Response:
    """Delete a stored prediction (your own; admins any of the lab's) and go back to its predictor's page."""
    predictor_id = predictions.get(session, prediction_id, lab_id=caller.lab_id).predictor_id
    try:
        predictions.delete_prediction(session=session, store=store, caller=caller, prediction_id=prediction_id)
    except (Conflict, Forbidden) as exc:  # a refusal is a message on the page the button was on
        return flash.redirect(f"/admin/predictors/{predictor_id}", "error", exc.message)
    return flash.redirect(f"/admin/predictors/{predictor_id}", "ok", f"Deleted prediction {prediction_id}.")


ForceBox = Annotated[str, Form(description="'true' (an admin's checkbox): also delete what was made from it")]


class Deletable(StrEnum):
    """What the admin pages delete: the list pages' paths."""

    COHORTS = "cohorts"
    ENCODERS = "encoders"
    PREDICTORS = "predictors"


@router.post("/{kind}/{row_id}/delete")
def delete_row(
    kind: Deletable,
    row_id: str,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    caller: PageCaller,
    flash: FlashDep,
    force: ForceBox = "",
) -> Response:
    """Delete a cohort, encoder or predictor (with the box ticked, an admin also deletes what was made from
    it); a refusal comes back as a message on its page."""
    forced, checksum = force == "true", None
    try:
        if kind is Deletable.COHORTS:
            removed = cohort_service.delete_cohort(
                session=session, store=store, caller=caller, cohort_id=row_id, force=forced
            )
            keys, checksum = removed.artifact_keys, removed.checksum
        elif kind is Deletable.ENCODERS:
            keys = encoders.delete_encoder(session=session, store=store, caller=caller, encoder_id=row_id, force=forced)
        else:
            keys = predictors.delete_predictor(
                session=session, store=store, caller=caller, predictor_id=row_id, force=forced
            )
    except (Conflict, Forbidden) as exc:  # made from it, or not the caller's to delete
        return flash.redirect(f"/admin/{kind}/{row_id}", "error", exc.message)
    caches.forget(settings, keys, cohort_checksum=checksum)
    return flash.redirect(f"/admin/{kind}", "ok", f"Deleted {kind.value[:-1]} {row_id}.")
