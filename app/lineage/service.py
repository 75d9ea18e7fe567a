"""Deletion that keeps lineage whole.

Deleting a row is refused while anything made from it exists (the message names them) unless an admin forces
it, which deletes those too, newest lineage first; it is refused in every case while a queued or running job
reads the row or makes one of its dependents.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session

from app.auth import service as auth
from app.auth.service import Caller
from app.db import orm
from app.errors import Conflict
from app.lineage import repository
from app.lineage.repository import Dependents, Made, unfinished_jobs
from app.storage import ArtifactStore

log = logging.getLogger(__name__)

NAMED = 20  # rows a refusal names; the rest are counted


def _label(row: Made) -> str:
    name = getattr(row, "name", None)
    return f"{row.__tablename__} {row.id}" + (f" ({name})" if name else "")


def _counts(rows: Sequence[Made]) -> dict[str, int]:
    return dict(Counter(r.__tablename__ for r in rows))


def describe(rows: Sequence[Made]) -> str:
    """The first ``NAMED`` rows as ``table id (name)``, and how many of each table there are in all."""
    text = ", ".join(_label(r) for r in rows[:NAMED])
    if len(rows) > NAMED:
        counts = ", ".join(f"{n} {t}{'s' if n > 1 else ''}" for t, n in _counts(rows).items())
        text += f" and {len(rows) - NAMED} more (in all: {counts})"
    return text


def _how_to_delete(rows: Sequence[Made]) -> str:
    """The API calls that delete ``rows``, in an order that works: ``rows`` run from what was made first
    (encoders, parents before the encoders continued from them) to what was made from it (predictions), and
    each row can only go once nothing made from it is left, so the calls run the other way."""
    tables = list(dict.fromkeys(r.__tablename__ for r in reversed(rows)))
    calls = [f"DELETE /{table}s/{{id}}" for table in tables]
    if len(calls) == 1:
        return calls[0]
    return "these calls in this order: " + ", then ".join(calls)


def remove(
    *,
    session: Session,
    store: ArtifactStore,
    caller: Caller,
    target: orm.Cohort | Made,
    found: Dependents,
    running: Sequence[orm.Job],
    force: bool,
    keys: Sequence[str] = (),
    keep_file: Callable[[str], bool] = lambda _key: False,
    also: Callable[[], None] = lambda: None,
) -> list[str]:
    """Delete ``target`` and, with ``force``, ``found``; record it in the audit log. Commits.

    Refused (Conflict) while ``running`` jobs use them, and without ``force`` while ``found`` holds rows;
    nothing is changed before these checks. The artifacts (``keys``, the dependents' own, the checkpoints of
    the target's and the dependents' jobs) are deleted after the commit, so that a failed commit loses no
    file, except those ``keep_file`` keeps (looked at after the commit). ``also`` makes the target's other
    changes, after the checks and in the same transaction.

    Returns:
        Every artifact key deleted (for the API process's caches to drop).
    """
    what = f"{target.__tablename__} {target.id}"
    if running:
        jobs = ", ".join(f"{j.id} ({j.kind.value}, {j.state.value})" for j in running)
        raise Conflict(f"{what} is in use by unfinished job(s) {jobs}; cancel them or let them end first")
    rows = found.rows()
    if rows and not force:
        raise Conflict(
            f"{what} cannot be deleted: {describe(rows)} {'was' if len(rows) == 1 else 'were'} made from it. "
            f"Delete {'it' if len(rows) == 1 else 'them'} first with {_how_to_delete(rows)}, or ask an admin to "
            "delete with force=true, which deletes them too."
        )
    keys = [*keys, *found.artifact_keys()]
    own_job = getattr(target, "job_id", None)
    keys += repository.take_checkpoints(session, [*found.job_ids(), *([own_job] if own_job else [])])
    details = {"name": getattr(target, "name", None), "force": force, "counts": _counts(rows),
               # every row but predictions (there may be very many: the first NAMED of them)
               "deleted": [f"{r.__tablename__} {r.id}" for r in rows if not isinstance(r, orm.Prediction)]
               + [f"prediction {p.id}" for p in found.predictions[:NAMED]]}
    repository.delete_dependents(session, found)
    also()
    session.delete(target)
    auth.record(session, caller, f"{target.__tablename__}.delete", target, details)
    session.commit()
    removed = []
    for key in keys:
        try:  # committed already: the rows are gone, a file left behind is only disk space
            if not keep_file(key):
                store.delete(key)
                removed.append(key)
        except Exception:
            log.exception("artifact %s of deleted %s could not be removed", key, what)
    return removed


def remove_made(
    *,
    session: Session,
    store: ArtifactStore,
    caller: Caller,
    row: orm.Encoder | orm.Predictor | orm.Evaluation,
    found: Dependents,
    force: bool,
) -> list[str]:
    """Delete an encoder, predictor or evaluation (with ``force``, also ``found``). Commits.

    Members delete what their own jobs made; admins anything of the lab, and only admins force. Refused while
    the row's own job or a dependent's is unfinished (cancel it first).

    Returns:
        Every artifact key deleted.
    """
    job = session.get_one(orm.Job, row.job_id)
    what = f"{row.__tablename__} {row.id}"
    if job.created_by != caller.user_id:
        caller.require_admin(f"deleting {what}, which another user's job made")
    if force:
        caller.require_admin(f"forced deletion of {what} (which also deletes what was made from it)")
    keys = [row.artifact_key] if isinstance(row, orm.Encoder | orm.Predictor) and row.artifact_key else []
    running = unfinished_jobs(session, row.lab_id, [row.job_id, *found.job_ids()])
    return remove(
        session=session, store=store, caller=caller, target=row, found=found, running=running, force=force, keys=keys
    )
