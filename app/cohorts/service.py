"""Cohort use cases: ingest an upload into the store and the registry; describe cohorts."""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from sqlalchemy.orm import Session

from app.auth import service as auth
from app.auth.service import Caller
from app.cohorts import names, parsing, repository, values
from app.cohorts.parsing import ExpressionMatrix, ParsedExpression
from app.config import Settings
from app.db import orm
from app.errors import InvalidInput
from app.lineage import repository as lineage
from app.lineage import service as deletion
from app.storage import ArtifactStore
from models.conformal import UNCERTAIN
from models.gene_table import Resolution, default_table, gene_table_version, resolve_genes, summarise_resolutions
from models.genes import (
    GeneHarmonisation,
    GeneIdSummary,
    distinct_ensembl_genes,
    harmonise_keys,
    normalise_gene_id,
    summarise_gene_ids,
)

_REPORTED = 50  # names kept per list in the ingest report


@dataclass(frozen=True)
class StagedUpload:
    """An uploaded file already on disk: its client-side name and its staging path."""

    filename: str
    path: Path


@dataclass(frozen=True)
class IngestOptions:
    """How to read an upload; see :class:`app.cohorts.schemas.CohortUploadForm`."""

    orientation: str = "auto"
    values: str = "auto"
    duplicate_genes: str | None = None  # refuse | sum | mean; None: the server's setting


@dataclass(frozen=True)
class ResolvedColumns:
    """Each column name's resolution with the shipped gene table, and the Ensembl alternates among them."""

    resolutions: list[Resolution]
    alternates: dict[str, list[str]]  # see ensembl_alternates

    @classmethod
    def of(cls, names: Sequence[str]) -> ResolvedColumns:
        resolutions = resolve_genes(names)
        return cls(resolutions, ensembl_alternates(resolutions))

    @property
    def keys(self) -> list[str]:
        """Match key of each column: the canonical key, or its own Ensembl id for an Ensembl alternate."""
        return [normalise_gene_id(r.name) if r.key in self.alternates else r.key for r in self.resolutions]


def harmonise(
    matrix: ExpressionMatrix, policy: str, resolved: ResolvedColumns | None = None
) -> tuple[ExpressionMatrix, GeneHarmonisation]:
    """Refuse, sum or average columns that resolve to the same gene (``policy``: refuse | sum | mean).

    Names are resolved with the shipped gene table (``resolved``, computed when None): version suffixes,
    case, previous symbols, aliases, Ensembl and NCBI ids of one gene give one key. A merged column is named
    by its gene's current symbol (or its key when the symbol is not unique).
    """
    resolved = resolved if resolved is not None else ResolvedColumns.of(matrix.genes)
    harmonised = harmonise_keys(matrix.genes, resolved.keys)
    if not harmonised.duplicates:
        return matrix, harmonised
    labels = _merged_labels(harmonised.duplicates)
    if policy not in ("sum", "mean"):
        groups = list(harmonised.duplicates.items())
        shown = "; ".join(f"{labels[key]}: {', '.join(repr(n) for n in names)}" for key, names in groups[:10])
        more = f" and {len(groups) - 10} more" if len(groups) > 10 else ""
        raise InvalidInput(
            f"{len(groups)} duplicate gene id(s) once ids are resolved to genes (Ensembl version suffixes dropped, "
            f"symbols compared case-insensitively, previous symbols and aliases mapped to the current gene): "
            f"{shown}{more}. Remove the duplicates, or upload with duplicate_genes=sum (or mean) to sum (or "
            "average) each group into one gene"
        )
    names = [labels.get(key, name) for key, name in zip(harmonised.keys, harmonised.names, strict=True)]
    harmonised = replace(harmonised, names=names, duplicates={labels[k]: v for k, v in harmonised.duplicates.items()})
    merged = harmonised.merge(matrix.values, how=policy)
    return ExpressionMatrix(values=merged, sample_ids=matrix.sample_ids, genes=harmonised.names), harmonised


def ensembl_alternates(resolutions: Sequence[Resolution]) -> dict[str, list[str]]:
    """Keys several distinct Ensembl gene ids of the file resolve to (alternate haplotypes and patches of one
    NCBI gene, e.g. the MHC copies of BAG6), with those ids. They are different Ensembl genes, not one column
    twice: each keeps its own Ensembl id as key, and none is merged."""
    groups: dict[str, list[str]] = {}
    for r in resolutions:
        groups.setdefault(r.key, []).append(r.name)
    return {key: names for key, names in groups.items() if distinct_ensembl_genes(names)}


def _merged_labels(duplicates: dict[str, list[str]]) -> dict[str, str]:
    """Name of each merged key: its gene's current symbol where that symbol resolves back to it, else the key."""
    table = default_table()
    labels = {}
    for key in duplicates:
        symbol = table.symbol(key)
        labels[key] = symbol if symbol is not None and table.resolve_one(symbol).key == key else key
    return labels


def resolution_report(resolved: ResolvedColumns, merged: dict[str, object]) -> dict[str, object]:
    """Counts per rule, ambiguous names with candidates, unresolved names (first 50 each), merged columns
    (``merged``, from :func:`merge_report`) and Ensembl alternates."""
    table = default_table()
    resolutions = resolved.resolutions
    alternates = {table.symbol(k) or k: names for k, names in resolved.alternates.items()}
    ambiguous = [r for r in resolutions if r.ambiguous]
    unresolved = [r.name for r in resolutions if r.rule == "unresolved"]
    return {
        "version": table.version,
        "n_columns": len(resolutions),
        "n_resolved": sum(r.resolved for r in resolutions),
        "rules": summarise_resolutions(resolutions),
        "n_ambiguous": len(ambiguous),
        "ambiguous": [
            {"name": r.name, "candidates": [{"key": k, "symbol": table.symbol(k)} for k in r.candidates]}
            for r in ambiguous[:_REPORTED]
        ],
        "n_unresolved": len(unresolved),
        "unresolved": unresolved[:_REPORTED],
        "merged": merged,
        "ensembl_alternates": {
            "n_groups": len(alternates),
            "groups": dict(list(alternates.items())[:_REPORTED]),
            "note": "distinct Ensembl genes (alternate haplotypes, patches) of one NCBI gene: kept apart, each "
            "keyed by its Ensembl id; an input naming the gene by symbol matches none of them",
        },
    }


def merge_report(harmonised: GeneHarmonisation, policy: str) -> dict[str, object]:
    """Columns merged because they name one gene, with the policy used."""
    return {
        "policy": policy,
        "n_groups": len(harmonised.duplicates),
        "n_genes_merged": sum(len(v) for v in harmonised.duplicates.values()),
        "groups": dict(list(harmonised.duplicates.items())[:_REPORTED]),
    }


def gene_keys(resolutions: Sequence[Resolution], harmonised: GeneHarmonisation) -> dict[str, object]:
    """Canonical key and rule of each stored column, in order, and the original names of merged columns."""
    rules = [resolutions[g[0]].rule for g in harmonised.groups]  # a merged column: its first name's rule
    merged = {str(k): [resolutions[j].name for j in g] for k, g in enumerate(harmonised.groups) if len(g) > 1}
    return {"keys": list(harmonised.keys), "rules": rules, "merged": merged}


def summarise_labels(labels: pd.DataFrame) -> list[dict[str, object]]:
    """Per label column: how many samples have a value, and the count of each value."""
    summary = []
    for column in labels.columns:
        present = labels[column].dropna()
        counts = Counter(str(v) for v in present)
        summary.append({"name": str(column), "n_labelled": int(len(present)), "classes": dict(counts.most_common())})
    return summary


FILENAME_LENGTH = orm.Cohort.source_filename.type.length or 300
MAX_ID_LENGTH = orm.NAME_LENGTH  # sample and group ids share the name columns' width


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
    caller: Caller,
    store: ArtifactStore,
    settings: Settings,
    name: str | None,
    expression: StagedUpload,
    labels: StagedUpload | None,
    group_column: str | None,
    options: IngestOptions | None = None,
) -> orm.Cohort:
    """Parse, harmonise and check an upload, store its matrix once, and register the cohort with its samples."""
    options = options or IngestOptions()
    limits = parsing.SizeLimits(settings.max_upload_samples, settings.max_upload_genes, settings.max_upload_cells)
    parsed = parsing.parse_expression(
        expression.path, expression.filename, orientation=options.orientation, limits=limits
    )
    policy = options.duplicate_genes or settings.duplicate_genes
    gene_ids = summarise_gene_ids(parsed.matrix.genes)
    resolved = ResolvedColumns.of(parsed.matrix.genes)
    matrix, harmonised = harmonise(parsed.matrix, policy, resolved)
    parsed = replace(parsed, matrix=matrix)  # drop the unmerged matrix as soon as it is merged
    label_table, label_source = _labels(labels, parsed, matrix.sample_ids, group_column)
    _check_id_lengths(matrix.sample_ids, label_table, group_column)
    summary = values.summarise(matrix.values)
    value_kind, value_source = values.resolve_kind(options.values, summary, matrix.sample_ids, matrix.genes)
    checksum = parsing.matrix_checksum(matrix)
    # Locked, the original's row cannot be deleted (with the file this upload shares) until this one commits.
    original = repository.find_by_checksum(session, checksum, lab_id=caller.lab_id, lock=True)
    storage_key = original.storage_key if original else _store_matrix(
        store, matrix, f"cohorts/{caller.lab_id}/{checksum}.arrow"
    )
    label_summary = []
    if label_table is not None:
        label_summary = summarise_labels(label_table.drop(columns=[group_column] if group_column else []))
    rows = _sample_rows(matrix.sample_ids, label_table, group_column)
    merged = merge_report(harmonised, policy)
    report = _ingest_report(parsed, gene_ids, merged, label_source, expression.path)
    report["gene_resolution"] = resolution_report(resolved, merged)
    report["values"] = {"kind": value_kind, "source": value_source, **_value_report(summary, matrix)}
    cohort = orm.Cohort(
        lab_id=caller.lab_id,
        created_by=caller.user_id,
        name=name or Path(expression.filename).name[: orm.NAME_LENGTH],
        source_filename=expression.filename[:FILENAME_LENGTH],
        n_samples=len(matrix.sample_ids),
        n_genes=len(matrix.genes),
        gene_id_type=gene_ids.id_type,
        value_kind=value_kind,
        value_kind_source=value_source,
        orientation=parsed.orientation,
        checksum=checksum,
        storage_key=storage_key,
        duplicate_of=original.id if original else None,
        label_columns=label_summary,
        group_column=group_column,
        n_groups=len({r["group_id"] for r in rows if r["group_id"] is not None}) if group_column else None,
        genes_preview=list(matrix.genes[:20]),
        ingest=report,
        gene_table_version=gene_table_version(),
        gene_keys=gene_keys(resolved.resolutions, harmonised),
    )
    session.add(cohort)
    session.flush()
    repository.add_samples(session, cohort.id, rows)
    details = {"name": cohort.name, "n_samples": cohort.n_samples, "n_genes": cohort.n_genes, "checksum": checksum}
    auth.record(session, caller, "cohort.upload", cohort, details)
    session.commit()
    if not store.exists(storage_key):  # SQLite locks no row: the original was deleted with its file meanwhile
        _store_matrix(store, matrix, storage_key)
    return cohort


def _labels(
    labels: StagedUpload | None, parsed: ParsedExpression, sample_ids: Sequence[str], group_column: str | None
) -> tuple[pd.DataFrame | None, str | None]:
    """The label table and where it came from: the labels file, else text columns of the matrix file."""
    if labels is not None:
        table = parsing.read_labels(labels.path, labels.filename, max_rows=len(sample_ids))
        source = "file"
    elif parsed.annotations is not None and len(parsed.annotations.columns):
        table, source = parsed.annotations, f"{parsed.file_format} annotations"
    elif group_column:
        raise InvalidInput(f"group_column {group_column!r} given but no labels file to find it in")
    else:
        return None, None
    where = labels.filename if labels is not None else f"the expression file's {source}"
    names.check_label_names([str(c) for c in table.columns], where)  # a file's were checked as it was read
    parsing.check_labels(table, sample_ids, group_column=group_column)
    _check_label_values(table, group_column)
    return table, source


# Control characters other than tab and line breaks: NUL cannot be stored in a PostgreSQL text or JSON value,
# and terminal escapes would reach whoever prints the labels. Free text of any length is a label value too.
_LABEL_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _check_label_values(table: pd.DataFrame, group_column: str | None) -> None:
    """Refuse, in one pass over each column, a label value holding a control character (naming its sample),
    and a class named like the label predictions give when no single class is the answer (group ids may)."""
    for column in table.columns:
        values = table[column].dropna().astype(str)
        bad = values[values.str.contains(_LABEL_CONTROL)]
        if not bad.empty:
            raise InvalidInput(f"label column {str(column)!r}, sample {str(bad.index[0])!r}: the value holds a "
                               "control character (only tabs and line breaks are allowed)")
        if column != group_column and (values == UNCERTAIN).any():
            raise InvalidInput(
                f"label column {str(column)!r} has a class named {UNCERTAIN!r}, the label predictions give when "
                "no single class is the answer; rename that class"
            )


def _ingest_report(
    parsed: ParsedExpression,
    gene_ids: GeneIdSummary,
    merged: dict[str, object],
    label_source: str | None,
    path: Path,
) -> dict[str, object]:
    return {
        "format": parsed.file_format,
        "bytes": path.stat().st_size,
        "orientation": parsed.orientation,
        "orientation_source": "detected" if parsed.orientation_detected else "declared",
        "skipped_columns": parsed.skipped_columns[:_REPORTED],
        "gene_ids": gene_ids.to_dict(),
        "duplicate_genes": merged,  # the same as gene_resolution.merged, kept where clients first found it
        "labels": label_source,
    }


def _value_report(summary: values.ValueSummary, matrix: ExpressionMatrix) -> dict[str, object]:
    n_cells = max(1, matrix.values.size)
    return {**summary.to_dict(), "zero_fraction": round(summary.n_zero / n_cells, 6)}


def _store_matrix(store: ArtifactStore, matrix: parsing.ExpressionMatrix, key: str) -> str:
    if store.exists(key):  # written by an upload whose registry row was rolled back
        return key
    fd, name = tempfile.mkstemp(dir=store.staging_dir(), suffix=".arrow")
    os.close(fd)
    try:
        parsing.write_matrix(matrix, Path(name))
        store.put_file(key, Path(name))
    except FileExistsError:  # a concurrent upload of the same matrix won
        pass
    finally:
        Path(name).unlink(missing_ok=True)
    return key


def check_label_column(cohort: orm.Cohort, label_column: str, *, test_size: float | None = None) -> None:
    """Refuse a label column the cohort lacks, one with fewer than two usable classes, or (given the test
    split's share) one where the test split would take every sample of a usable class: the head would never
    see that class, yet be scored on it."""
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
    counts = {k: n for k, n in columns[label_column]["classes"].items() if n >= 2}
    if test_size is not None:
        _check_training_left(label_column, counts, test_size)


def _check_training_left(label_column: str, counts: dict[str, int], test_size: float) -> None:
    """Refuse a ``test_size`` that leaves a class (of ``counts`` samples) less than one training sample."""
    # The tolerance keeps 5 x (1 - 0.8) = 0.9999999999999998 from refusing a split that leaves one sample.
    emptied = sorted((n, k) for k, n in counts.items() if n * (1.0 - test_size) < 1.0 - 1e-9)
    if emptied:
        named = ", ".join(f"{k!r} ({n} samples)" for n, k in emptied[:5])
        smallest = emptied[0][0]
        largest_allowed = math.floor((1 - 1 / smallest) * 100 + 1e-9) / 100  # rounded down: itself allowed
        raise InvalidInput(
            f"test_size {test_size:g} would hold out every sample of {label_column!r} class(es) {named}, "
            f"leaving none to train on; with {smallest} samples in the smallest class, test_size must be at "
            f"most {largest_allowed:.2f}"
        )


class Removed(NamedTuple):
    """What a cohort deletion took away, for the caches of the API process to drop."""

    artifact_keys: list[str]
    checksum: str  # of the deleted cohort's matrix


def delete_cohort(*, session: Session, store: ArtifactStore, caller: Caller, cohort_id: str, force: bool) -> Removed:
    """Delete a cohort; with ``force`` (admins) also everything made from it. Commits.

    Refused while a job still reads it or makes one of its dependents, and, without ``force``, while any
    encoder, predictor, evaluation or prediction was made from it (the message names them: lineage is
    kept). Cohorts deduplicated against it then name the oldest of them in ``duplicate_of`` (that one none).
    """
    cohort = repository.get(session, cohort_id, lab_id=caller.lab_id)
    if cohort.created_by != caller.user_id:
        caller.require_admin("deleting a cohort another user uploaded")
    if force:
        caller.require_admin("forced deletion (which also deletes the models made from the cohort)")
    found = lineage.of_cohort(session, cohort)
    running = lineage.unfinished_jobs(
        session, cohort.lab_id, found.job_ids(), reads=lambda job: job.params.get("cohort_id") == cohort.id
    )
    own = [] if repository.storage_shared(session, cohort) else [cohort.storage_key]
    checksum = cohort.checksum

    def still_shared(key: str) -> bool:
        # An identical upload may have taken the matrix meanwhile: look again before deleting it.
        return key == cohort.storage_key and repository.storage_shared(session, cohort)

    keys = deletion.remove(
        session=session, store=store, caller=caller, target=cohort, found=found, running=running, force=force,
        keys=own, keep_file=still_shared, also=lambda: repository.repoint_duplicates(session, cohort),
    )
    return Removed(keys, checksum)
