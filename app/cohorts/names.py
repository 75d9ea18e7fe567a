"""Names in uploaded files (sample ids, gene names, phenotype column names): what one may hold, and how a
refusal quotes it. Shared by every reader (delimited text, GCT, Parquet, h5ad) and by label uploads."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from app.db.orm import NAME_LENGTH
from app.errors import InvalidInput

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NO_CONTROL = "ids and names may not hold control characters (U+0000-U+001F, U+007F: tabs, line breaks, NUL, escapes)"
MAX_LABEL_COLUMNS = 1000  # phenotype columns of one cohort, from a labels file or the matrix file's annotations
LISTED = 10  # names listed in a message before "and N more"


def check_names(
    names: list[str], filename: str, *, kind: str, at: Sequence[int] | None = None, place: str = "column"
) -> None:
    """Refuse empty and over-long column names, and duplicates unless they are genes (harmonisation decides
    those); ``at``: the names' 0-based positions in the file, by default from its second column on;
    ``place``: what a position counts, a header's ``column`` or, say, an h5ad's ``var row``."""
    at = at if at is not None else range(1, len(names) + 1)
    where = " of the header" if place == "column" else ""
    empty = [str(at[i] + 1) for i, name in enumerate(names) if name is None or not str(name).strip()]
    if empty:
        raise InvalidInput(f"{filename}: {kind} name missing in {place}(s) {listing(empty)}{where}")
    long = next((i for i, name in enumerate(names) if len(str(name)) > NAME_LENGTH), None)
    if long is not None:
        raise InvalidInput(
            f"{filename}: the {kind} name in {place} {at[long] + 1:,}{where} ({clip(str(names[long]))!r}) "
            f"is longer than {NAME_LENGTH} characters"
        )
    control = next((i for i, name in enumerate(names) if CONTROL.search(str(name))), None)
    if control is not None:
        raise InvalidInput(
            f"{filename}: the {kind} name in {place} {at[control] + 1:,}{where} "
            f"({clip(str(names[control]))!r}) holds a control character; {NO_CONTROL}"
        )
    if kind == "gene":
        return
    duplicated = [name for name, count in Counter(names).items() if count > 1]
    if duplicated:
        raise InvalidInput(f"{filename}: duplicate {kind} name(s): {listing([repr(n) for n in duplicated])}")


def check_label_names(names: Sequence[str], where: str) -> None:
    """Phenotype column names from any source (a labels file, a GCT's column metadata, an h5ad's obs):
    at most :data:`MAX_LABEL_COLUMNS` of them, each named, at most ``NAME_LENGTH`` characters, without
    control characters, as sample ids and gene names are."""
    if len(names) > MAX_LABEL_COLUMNS:
        raise InvalidInput(f"{where}: {len(names):,} phenotype columns; at most {MAX_LABEL_COLUMNS:,} are read")
    for name in names:
        why = ("is empty" if not name.strip() else f"is longer than {NAME_LENGTH} characters"
               if len(name) > NAME_LENGTH else f"holds a control character; {NO_CONTROL}"
               if CONTROL.search(name) else None)
        if why:
            raise InvalidInput(f"{where}: the phenotype column name {clip(name)!r} {why}")


def listing(items: Sequence[str]) -> str:
    """The first :data:`LISTED` of ``items``, joined, with how many more there are."""
    shown = ", ".join(items[:LISTED])
    return shown if len(items) <= LISTED else f"{shown} and {len(items) - LISTED} more"


def clip(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters, marked when cut."""
    return text if len(text) <= limit else text[:limit] + "..."


def brief(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), clipped for a refusal."""
    text = str(exc).strip()
    return clip(text.splitlines()[0] if text else type(exc).__name__, 300)
