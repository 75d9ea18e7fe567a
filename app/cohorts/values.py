"""What an uploaded matrix's values are: raw counts, linear-scale TPM-like values, or already logged.

The kind decides the transform pretraining and fitting apply (``log1p`` for counts and TPM, none for log
values). It is detected from the values or declared by the uploader; a declaration the values contradict
(negative counts or TPM) is refused. Statistics are gathered block by block, so a large matrix needs only
a few MB besides itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from app.errors import InvalidInput

VALUE_KINDS = ("counts", "tpm", "log")
DECLARATIONS = ("auto", *VALUE_KINDS)
LOG1P_KINDS = frozenset(("counts", "tpm"))
_LINEAR_MIN_MAX = 100.0  # log2 expression stays below ~20; counts and TPM of any real cohort exceed this
_BLOCK_CELLS = 4_000_000


@dataclass(frozen=True)
class ValueSummary:
    """Range and shape of a matrix's values (all finite: parsing refused NaN and infinity)."""

    minimum: float
    maximum: float
    integers: bool  # every value is a whole number
    n_negative: int
    first_negative: tuple[int, int] | None  # (row, column) of the first negative value, row-major
    n_zero: int

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("first_negative")
        return data


def summarise(values: np.ndarray) -> ValueSummary:
    """Min, max, integrality, negatives and zeros of a 2-D matrix, one row block at a time."""
    if values.size == 0:
        return ValueSummary(0.0, 0.0, True, 0, None, 0)
    rows = max(1, _BLOCK_CELLS // max(1, values.shape[1]))
    low, high, integers, negatives, zeros = np.inf, -np.inf, True, 0, 0
    first: tuple[int, int] | None = None
    for start in range(0, values.shape[0], rows):
        block = values[start : start + rows]
        low, high = min(low, float(block.min())), max(high, float(block.max()))
        integers = integers and bool(np.array_equal(block, np.trunc(block)))
        negative = block < 0
        count = int(np.count_nonzero(negative))
        if count and first is None:
            row, column = np.unravel_index(int(np.argmax(negative)), block.shape)
            first = (start + int(row), int(column))
        negatives += count
        zeros += int(np.count_nonzero(block == 0))
    return ValueSummary(low, high, integers, negatives, first, zeros)


def detect_kind(summary: ValueSummary) -> str:
    """counts: non-negative whole numbers above 100; tpm: other non-negative values above 100; else log."""
    if summary.n_negative or summary.maximum <= _LINEAR_MIN_MAX:
        return "log"
    return "counts" if summary.integers else "tpm"


def resolve_kind(
    declared: str, summary: ValueSummary, sample_ids: Sequence[str], genes: Sequence[str]
) -> tuple[str, str]:
    """The value kind and its source (``detected`` or ``declared``); refuses negative counts or TPM."""
    if declared not in DECLARATIONS:
        raise InvalidInput(f"values {declared!r} is not one of {', '.join(DECLARATIONS)}")
    if declared == "auto":
        return detect_kind(summary), "detected"
    if declared in LOG1P_KINDS and summary.first_negative is not None:
        row, column = summary.first_negative
        raise InvalidInput(
            f"the values are declared as {declared} but {summary.n_negative} are negative, the first at sample "
            f"{sample_ids[row]!r}, gene {genes[column]!r} (minimum {summary.minimum:g}); negative values fit "
            "only log-scale or other continuous data: declare values=log, or upload the raw values"
        )
    return declared, "declared"
