"""Helpers shared by pipelines: reading a cohort's verified matrix and its samples, and the coverage gate."""

from __future__ import annotations

from dataclasses import dataclass

from app.cohorts import parsing
from app.cohorts import repository as cohorts
from app.db import orm
from app.errors import InvalidInput
from app.storage import ArtifactIntegrityError
from models.genes import AlignmentReport, level_percent
from worker.context import JobContext


@dataclass(frozen=True)
class CohortData:
    cohort_id: str
    group_column: str | None
    matrix: parsing.ExpressionMatrix
    labels: list[dict[str, str | None]]
    groups: list[str | None]
    value_kind: str = "log"  # counts | tpm | log, as detected or declared at upload

    def log1p(self, requested: str = "auto") -> bool:
        """Whether preprocessing applies log1p: as requested (yes/no), else by the cohort's value kind."""
        if requested in ("yes", "no"):
            return requested == "yes"
        return self.value_kind in ("counts", "tpm")


def load_cohort(ctx: JobContext, cohort_id: str) -> CohortData:
    """Read a cohort's stored matrix, verify it against the registry's checksum, and its samples' labels."""
    with ctx.session_factory() as session:
        cohort = session.get(orm.Cohort, cohort_id)
        if cohort is None:
            raise ArtifactIntegrityError(f"cohort {cohort_id} was deleted")
        samples: list[orm.CohortSample] = cohorts.samples(session, cohort_id)
        key, checksum, group_column = cohort.storage_key, cohort.checksum, cohort.group_column
        value_kind = cohort.value_kind
        # Stripped here too: cohorts uploaded before ingest trimmed them may hold "P1 " beside "P1".
        labels = [{k: v.strip() if isinstance(v, str) else v for k, v in s.labels.items()} for s in samples]
        groups = [s.group_id.strip() if s.group_id is not None else None for s in samples]
        stored_ids = [s.sample_id for s in samples]
    matrix = parsing.read_matrix(ctx.store.local_path(key))
    if parsing.matrix_checksum(matrix) != checksum or matrix.sample_ids != stored_ids:
        raise ArtifactIntegrityError(f"stored matrix of cohort {cohort_id} does not match its registry checksum")
    return CohortData(cohort_id, group_column, matrix, labels, groups, value_kind)


def require_coverage(ctx: JobContext, report: AlignmentReport, *, cohort_id: str, model: str, use: str) -> None:
    """Refuse a cohort covering less than EXPRSSL_MIN_GENE_COVERAGE of ``model``'s gene panel for ``use``."""
    if report.coverage < ctx.min_gene_coverage:
        raise InvalidInput(
            f"cohort {cohort_id} covers {report.coverage_percent} of {model}'s {report.n_panel} genes "
            f"({report.n_found} found); {use} needs at least {level_percent(ctx.min_gene_coverage)} "
            f"(EXPRSSL_MIN_GENE_COVERAGE). First missing: {', '.join(report.missing[:10])}"
        )
