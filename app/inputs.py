"""Samples a request brings: a stored cohort of the lab, or inline samples with the gene names their values
follow (predictions and embeddings take either)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, GetPydanticSchema, ValidationError, model_validator
from pydantic_core import core_schema
from sqlalchemy.orm import Session

from app.auth.service import Caller
from app.cohorts import parsing
from app.cohorts import repository as cohorts
from app.cohorts.values import LOG1P_KINDS
from app.config import Settings
from app.db import orm
from app.errors import Conflict, InvalidInput
from app.storage import ArtifactStore
from models.gene_table import align_by_gene_key
from models.genes import AlignmentReport, PanelError
from models.preprocessing import Preprocessor


def _float32_vector(values: list[float]) -> np.ndarray:
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused with its sample and gene
        return np.fromiter(values, dtype=np.float32, count=len(values))


def _float32_vector_schema(_source: Any, _handler: Any) -> core_schema.CoreSchema:
    """A JSON array of numbers, validated by pydantic-core, kept as a float32 vector.

    Each sample's list of Python floats becomes an array as soon as it is validated, so the lists die one by
    one during the parse: a cyclic garbage collection that falls during a request no longer walks every value
    of the body (100 samples x 2,000 genes: about 2 ms per collection), and the matrix is stacked from arrays.
    Models holding one compare by identity of their arrays only: ``==`` between two of them raises, as for
    numpy arrays; nothing compares requests.
    """
    return core_schema.no_info_after_validator_function(
        _float32_vector,
        core_schema.list_schema(core_schema.float_schema()),
        serialization=core_schema.plain_serializer_function_ser_schema(lambda a: a.tolist()),
    )


Float32Vector = Annotated[np.ndarray, GetPydanticSchema(_float32_vector_schema)]


class InlineSample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_id: str = Field(min_length=1, max_length=orm.NAME_LENGTH)
    values: Float32Vector = Field(description="Expression values in the order of `genes`.")


class SamplesInput(BaseModel):
    """Either a stored cohort, or inline samples with the gene names their values follow."""

    model_config = ConfigDict(extra="forbid")

    cohort_id: str | None = Field(default=None, description="A stored cohort, every sample of it.")
    genes: list[str] | None = Field(default=None, description="Gene names of the inline values, in order.")
    samples: list[InlineSample] | None = Field(default=None, description="Inline samples, values in gene order.")

    @model_validator(mode="after")
    def _one_source(self) -> SamplesInput:
        inline = self.genes is not None or self.samples is not None
        if (self.cohort_id is not None) == inline:
            raise ValueError("give either cohort_id, or genes and samples")
        if inline and (not self.genes or not self.samples):
            raise ValueError("inline input needs non-empty genes and samples")
        return self


Body = TypeVar("Body", bound=BaseModel)
PARSE_ON_THE_LOOP_BYTES = 64 * 1024  # smaller bodies parse faster than a hop to a worker thread takes


def json_body(model: type[Body]) -> Callable[[Request], Awaitable[Body]]:
    """A dependency that parses and validates a JSON body of ``model`` in one pass, with pydantic-core.

    FastAPI's own body handling (``json.loads``, then validation) takes several times longer on an inline
    matrix: 100 samples x 2,000 genes cost 60 ms that way against 10 ms here. Errors keep FastAPI's 422 body.
    A body of :data:`PARSE_ON_THE_LOOP_BYTES` or more is parsed on a worker thread, not on the event loop,
    which would otherwise stop serving every other connection for as long (15 ms for 3.8 MB, 150 ms for ten
    times that); side by side, a 100-sample prediction's p50 was also about 1 ms shorter (bench/RESULTS.md).
    Declare the route's ``openapi_extra={"requestBody": openapi_json_body(model)}`` for the documentation.
    """

    async def parse(request: Request) -> Body:
        body = await request.body()
        if len(body) < PARSE_ON_THE_LOOP_BYTES:
            return parse_json_body(model, body)
        return await run_in_threadpool(parse_json_body, model, body)

    return parse


def parse_json_body(model: type[Body], body: bytes) -> Body:
    """``body`` parsed and validated as ``model`` by pydantic-core; errors as FastAPI's 422 ("body", ...)."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from exc


def openapi_json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that parses ``model`` itself (:func:`json_body`), its schema
    self-contained (no references into components the route does not declare)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    return {"required": True, "content": {"application/json": {"schema": _inline_refs(schema, defs)}}}


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline_refs(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    return node


def samples_matrix(
    *, session: Session, caller: Caller, store: ArtifactStore, settings: Settings, request: SamplesInput, use: str
) -> tuple[np.ndarray, list[str], list[str]]:
    """Return the request's samples as ``(values, genes, sample_ids)``: a stored cohort's matrix, or the inline
    samples checked and stacked (at most EXPRSSL_MAX_INLINE_SAMPLES; ``use`` names the endpoint's verb)."""
    if request.cohort_id is not None:
        cohort = cohorts.get(session, request.cohort_id, lab_id=caller.lab_id)
        matrix = parsing.read_matrix(store.local_path(cohort.storage_key))
        return matrix.values, matrix.genes, matrix.sample_ids
    n_inline, n_genes = len(request.samples or []), len(request.genes or [])
    if n_genes > settings.max_upload_genes:
        raise InvalidInput(
            f"genes: {n_genes:,} genes; at most {settings.max_upload_genes:,} (EXPRSSL_MAX_UPLOAD_GENES)"
        )
    if n_inline > settings.max_inline_samples:
        raise InvalidInput(
            f"samples: {n_inline:,} inline samples; at most {settings.max_inline_samples:,} per request "
            f"(EXPRSSL_MAX_INLINE_SAMPLES): upload them as a cohort and {use} it with cohort_id"
        )
    return inline_matrix(request)


def inline_matrix(request: SamplesInput) -> tuple[np.ndarray, list[str], list[str]]:
    """Check inline samples and stack them as a float32 matrix (samples x genes)."""
    genes = [g.strip() for g in request.genes or []]
    samples = request.samples or []
    if duplicate_genes := _duplicates(genes):
        raise InvalidInput(f"genes: duplicate gene names {duplicate_genes[:10]}")
    if "" in genes:
        raise InvalidInput(f"genes: empty gene name at position {genes.index('')}")
    sample_ids = [s.sample_id for s in samples]
    if duplicate_ids := _duplicates(sample_ids):
        raise InvalidInput(f"samples: duplicate sample ids {duplicate_ids[:10]}")
    for sample in samples:
        if len(sample.values) != len(genes):
            raise InvalidInput(
                f"sample {sample.sample_id!r} has {len(sample.values)} values but {len(genes)} genes were given"
            )
    values = np.stack([s.values for s in samples])
    if (cell := _first_cell(~np.isfinite(values))) is not None:
        row, col = cell
        raise InvalidInput(f"sample {sample_ids[row]!r}, gene {genes[col]!r}: value is not a finite number")
    return values, genes, sample_ids


def _duplicates(names: list[str]) -> list[str]:
    """The names given more than once, sorted. A set's size tells first whether there is any: none is the usual
    case, on every inline request, and the set takes less than half the time of counting (2,000 genes: 0.08 ms
    against 0.2)."""
    if len(set(names)) == len(names):
        return []
    return sorted(name for name, n in Counter(names).items() if n > 1)


def _first_cell(mask: np.ndarray) -> tuple[int, int] | None:
    """``(row, column)`` of the first True of a 2-D mask, row by row; None if there is none."""
    if not mask.any():
        return None
    row, col = np.argwhere(mask)[0]
    return int(row), int(col)


def refuse_negative_counts(
    aligned: np.ndarray, sample_ids: list[str], panel: list[str], *, log1p: bool, model: str
) -> None:
    """Refuse negative values for a model that takes log1p of its input (it was fitted on counts or TPM):
    they cannot be counts, most likely log-scale values sent to a counts model."""
    negative = aligned < 0 if log1p else None  # missing genes (NaN) compare False
    if negative is None or (cell := _first_cell(negative)) is None:
        return
    row, col = cell
    raise InvalidInput(
        f"sample {sample_ids[row]!r}, gene {panel[col]!r}: value {aligned[row, col]:g} is negative "
        f"({int(negative.sum())} negative values in all), but {model} was fitted on counts or TPM and takes "
        "log1p of its input: send raw counts or TPM, not log-scale values"
    )


# The largest |z-score| a model is given: beyond it float32 arithmetic through the 4 encoder layers (at most
# 20,000 inputs each) could overflow. No expression value is a trillion standard deviations from its gene's mean.
MAX_ABS_Z = 1e15


def refuse_out_of_range(
    x: np.ndarray, aligned: np.ndarray, sample_ids: list[str], panel: list[str], *, model: str
) -> None:
    """Refuse standardised input ``x`` (rows of ``aligned``, named by ``sample_ids``) beyond :data:`MAX_ABS_Z`
    or not finite: the model's outputs would be infinite or NaN."""
    if (cell := _first_cell(~(np.abs(x) <= MAX_ABS_Z))) is None:  # NaN and inf are beyond too
        return
    row, col = cell
    raise InvalidInput(
        f"sample {sample_ids[row]!r}, gene {panel[col]!r}: value {aligned[row, col]:g} is {abs(float(x[row, col])):g} "
        f"standard deviations from the mean of {model}'s training data, beyond the {MAX_ABS_Z:g} it computes "
        "with: check the values' scale"
    )


def refuse_other_scale(
    session: Session, request: SamplesInput, fitted_on: str, *, lab_id: str, model: str
) -> None:
    """Refuse a stored cohort whose values are on another scale than the cohort ``model``'s standardisation was
    fitted on (counts or TPM against log values): log1p would be applied twice, or not at all."""
    if request.cohort_id is None:
        return
    given = cohorts.get(session, request.cohort_id, lab_id=lab_id)
    fitted = session.get(orm.Cohort, fitted_on)
    if fitted is None or (given.value_kind in LOG1P_KINDS) == (fitted.value_kind in LOG1P_KINDS):
        return
    raise InvalidInput(
        f"cohort {given.id} holds {given.value_kind} values ({given.value_kind_source}), but {model} was "
        f"standardised on {fitted.value_kind} values (cohort {fitted.id}): its input would be on another scale. "
        "Upload the cohort's values on the model's scale, or declare their kind at upload (values=counts, tpm "
        "or log) if it was detected wrongly"
    )


def align_input(
    values: np.ndarray, genes: list[str], panel: list[str], *, model: str, inline: bool = False
) -> tuple[np.ndarray, AlignmentReport]:
    """Align request input to a model's panel by gene key; the input's faults are InvalidInput, the panel's a
    Conflict naming ``model``. Inline input naming one panel gene twice is refused (a stored cohort's
    synonyms were merged or refused at upload, as its ``duplicate_genes`` said); distinct Ensembl genes of one
    NCBI gene (alternate haplotypes) are not, and match only their own ids, as in a stored cohort."""
    try:
        return align_by_gene_key(values, genes, panel, refuse_synonyms=inline)
    except PanelError as exc:
        raise Conflict(f"{model} has an inconsistent gene panel: {exc}; refit it") from exc
    except ValueError as exc:
        raise InvalidInput(f"genes: {exc}") from exc


def model_input(
    *,
    session: Session,
    caller: Caller,
    store: ArtifactStore,
    settings: Settings,
    request: SamplesInput,
    preprocessor: Preprocessor,
    fitted_on: str,
    model: str,
    use: str,
) -> tuple[np.ndarray, AlignmentReport, list[str]]:
    """The request's samples aligned to ``model``'s panel, as ``(aligned, report, sample_ids)``, after every
    check of their scale: a stored cohort on another scale than the cohort ``fitted_on`` is refused before it
    is read, negative values for a model taking log1p after it is aligned."""
    refuse_other_scale(session, request, fitted_on, lab_id=caller.lab_id, model=model)
    values, genes, sample_ids = samples_matrix(
        session=session, caller=caller, store=store, settings=settings, request=request, use=use
    )
    aligned, report = align_input(values, genes, preprocessor.genes, model=model, inline=request.cohort_id is None)
    refuse_negative_counts(aligned, sample_ids, preprocessor.genes, log1p=preprocessor.log1p, model=model)
    return aligned, report, sample_ids
