"""Cohort use cases: ingest an upload into the store and the registry; describe cohorts."""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pandas as pd
from sqlalchemy.orm import Session

from app.cohorts import parsing, repository
from app.config import Settings
from app.db import orm
from app.errors import InvalidInput
from app.storage import ArtifactStore
from models.preprocessing import looks_like_counts

_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$", re.IGNORECASE)
_PROBE = re.compile(r"^(AFFX-)?[\w.-]*_(s_|x_|i_|f_|r_|g_|b_)?at$|^ILMN_\d+$|^A_\d+_P\d+$", re.IGNORECASE)
_SYMBOL = re.compile(r"^[A-Za-z][A-Za-z0-9.-]*$")


@dataclass(frozen=True)
class Upload:
    """A file as received: its client-side name and an open binary stream."""

    filename: str
    stream: BinaryIO


def detect_gene_id_type(genes: Sequence[str]) -> str:
    """Name the identifier kind most column names follow (ensembl, probe, symbol), else "other"."""
    for kind, pattern in (("ensembl", _ENSEMBL), ("probe", _PROBE), ("symbol", _SYMBOL)):
        if sum(bool(pattern.match(g)) for g in genes) >= 0.9 * len(genes):
            return kind
    return "other"


def spool(upload: Upload, staging: Path, *, limit: int) -> Path:
    """Copy an upload to a staging file in chunks, refusing more than ``limit`` bytes."""
    fd, name = tempfile.mkstemp(dir=staging, suffix=_suffix(upload.filename))
    path = Path(name)
    written = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := upload.stream.read(1 << 20):
            written += len(chunk)
            if written > limit:
                out.close()
                path.unlink(missing_ok=True)
                raise InvalidInput(f"{upload.filename}: upload exceeds the limit of {limit} bytes")
            out.write(chunk)
    return path


def _suffix(filename: str) -> str:
    suffixes = Path(filename).suffixes
    return "".join(suffixes[-2:]) if suffixes else ""


def summarise_labels(labels: pd.DataFrame) -> list[dict[str, object]]:
    """Per label column: how many samples have a value, and the count of each value."""
    summary = []
    for column in labels.columns:
        values = labels[column].dropna()
        counts = Counter(str(v) for v in values)
        summary.append({"name": str(column), "n_labelled": int(len(values)), "classes": dict(counts.most_common())})
    return summary


MAX_ID_LENGTH = 200


def _check_id_lengths(sample_ids: Sequence[str], labels: pd.DataFrame | None, group_column: str | None) -> None:
    """Sample and group ids are registry keys of bounded length."""
    long_ids = [s for s in sample_ids if len(s) > MAX_ID_LENGTH]
    if long_ids:
        raise InvalidInput(f"sample id {long_ids[0][:60]!r}... is longer than {MAX_ID_LENGTH} characters")
    if labels is not None and group_column:
        groups = labels[group_column].dropna().astype(str)
        long_groups = groups[groups.str.len() > MAX_ID_LENGTH]
        if len(long_groups):
            raise InvalidInput(
                f"group id of sample {long_groups.index[0]!r} in column {group_column!r} is longer than "
                f"{MAX_ID_LENGTH} characters"
            )


def _sample_rows(
    sample_ids: Sequence[str], labels: pd.DataFrame | None, group_column: str | None
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    records = {} if labels is None else labels.astype(object).where(labels.notna(), None).to_dict("index")
    for position, sample_id in enumerate(sample_ids):
        record = records.get(sample_id, {})
        group = record.get(group_column) if group_column else None
        rows.append(
            {
                "position": position,
                "sample_id": sample_id,
                "group_id": None if group is None else str(group),
                "labels": {str(k): (None if v is None else str(v)) for k, v in record.items()},
            }
        )
    return rows


def create_cohort(
    *,
    session: Session,
    store: ArtifactStore,
    settings: Settings,
    name: str | None,
    expression: Upload,
    labels: Upload | None,
    group_column: str | None,
) -> orm.Cohort:
    """Parse and validate an upload, store its matrix once, and register the cohort with its samples."""
    staging = store.staging_dir()
    spooled: list[Path] = []
    try:
        spooled.append(spool(expression, staging, limit=settings.max_upload_bytes))
        matrix = parsing.read_expression(spooled[-1], expression.filename)
        label_table = None
        if labels is not None:
            spooled.append(spool(labels, staging, limit=settings.max_upload_bytes))
            label_table = parsing.read_labels(spooled[-1], labels.filename)
            parsing.check_labels(label_table, matrix.sample_ids, group_column=group_column)
        elif group_column:
            raise InvalidInput(f"group_column {group_column!r} given but no labels file to find it in")
        _check_id_lengths(matrix.sample_ids, label_table, group_column)
        checksum = parsing.matrix_checksum(matrix)
        storage_key = repository.find_storage_key(session, checksum) or _store_matrix(store, matrix, checksum)
        label_summary = []
        if label_table is not None:
            label_summary = summarise_labels(label_table.drop(columns=[group_column] if group_column else []))
        rows = _sample_rows(matrix.sample_ids, label_table, group_column)
        cohort = orm.Cohort(
            name=name or Path(expression.filename).name,
            source_filename=expression.filename,
            n_samples=len(matrix.sample_ids),
            n_genes=len(matrix.genes),
            gene_id_type=detect_gene_id_type(matrix.genes),
            value_kind="counts" if looks_like_counts(matrix.values) else "continuous",
            checksum=checksum,
            storage_key=storage_key,
            label_columns=label_summary,
            group_column=group_column,
            n_groups=len({r["group_id"] for r in rows if r["group_id"] is not None}) if group_column else None,
            genes_preview=list(matrix.genes[:20]),
        )
        session.add(cohort)
        session.flush()
        repository.add_samples(session, cohort.id, rows)
        session.commit()
        return cohort
    finally:
        for path in spooled:
            path.unlink(missing_ok=True)


def _store_matrix(store: ArtifactStore, matrix: parsing.ExpressionMatrix, checksum: str) -> str:
    key = f"cohorts/{checksum}.arrow"
    if store.exists(key):  # written by an upload whose registry row was rolled back
        return key
    fd, name = tempfile.mkstemp(dir=store.staging_dir(), suffix=".arrow")
    os.close(fd)
    parsing.write_matrix(matrix, Path(name))
    try:
        store.put_file(key, Path(name))
    except FileExistsError:  # a concurrent upload of the same matrix won
        pass
    return key


def check_label_column(cohort: orm.Cohort, label_column: str) -> None:
    """Refuse a label column the cohort lacks, or one with fewer than two usable classes."""
    columns = {c["name"]: c for c in cohort.label_columns}
    if label_column not in columns:
        available = ", ".join(sorted(columns)) or "none (the cohort was uploaded without labels)"
        raise InvalidInput(f"label column {label_column!r} is not in cohort {cohort.id}; available: {available}")
    usable = [k for k, n in columns[label_column]["classes"].items() if n >= 2]
    if len(usable) < 2:
        raise InvalidInput(
            f"label column {label_column!r} needs at least two classes with two or more samples; "
            f"it has {columns[label_column]['classes']}"
        )
