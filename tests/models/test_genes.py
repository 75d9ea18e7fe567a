from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

from models.genes import AlignmentReport, align_to_panel, normalise_gene_id


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ENSG00000141510.16", "ENSG00000141510"),
        (" ensg00000141510.3 ", "ENSG00000141510"),
        ("ENST00000269305.9", "ENST00000269305"),
        ("ENSMUSG00000059552.14", "ENSMUSG00000059552"),
        ("ENSG00000141510", "ENSG00000141510"),
        ("tp53", "TP53"),
        ("  Brca1\t", "BRCA1"),
        ("HLA-A.1", "HLA-A.1"),  # a dot in a symbol is not a version suffix
    ],
)
def test_normalise_gene_id(raw: str, expected: str) -> None:
    assert normalise_gene_id(raw) == expected


def test_align_to_panel_versions_case_missing_and_extra() -> None:
    genes = ["ENSG00000000003.15", "tp53", "EXTRA1", "ensg00000000005.6"]
    values = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.float64)
    panel = ["TP53", "ENSG00000000005", "MISSING1", "ENSG00000000003.1"]
    aligned, report = align_to_panel(values, genes, panel)
    assert aligned.dtype == np.float32 and aligned.shape == (2, 4)
    np.testing.assert_array_equal(aligned[:, [0, 1, 3]], [[2, 4, 1], [6, 8, 5]])
    assert np.isnan(aligned[:, 2]).all()
    assert report.n_panel == 4 and report.n_found == 3 and report.n_missing == 1 and report.n_extra == 1
    assert report.coverage == pytest.approx(0.75)
    assert report.missing == ["MISSING1"] and report.extra == ["EXTRA1"]
    assert json.loads(json.dumps(report.to_dict()))["coverage"] == 0.75


def test_align_to_panel_report_lists_are_capped() -> None:
    genes = [f"G{i}" for i in range(120)]
    panel = [f"P{i}" for i in range(80)]
    aligned, report = align_to_panel(np.zeros((1, 120)), genes, panel)
    assert np.isnan(aligned).all()
    assert report.coverage == 0.0 and report.n_missing == 80 and report.n_extra == 120
    assert len(report.missing) == 50 and len(report.extra) == 50


def test_align_to_panel_rejects_duplicates_after_normalisation() -> None:
    with pytest.raises(ValueError, match=r"ENSG00000000003: ENSG00000000003\.1, ENSG00000000003\.2"):
        align_to_panel(np.zeros((1, 3)), ["ENSG00000000003.1", "ENSG00000000003.2", "TP53"], ["TP53"])
    with pytest.raises(ValueError, match="TP53: TP53, tp53"):
        align_to_panel(np.zeros((1, 2)), ["TP53", "tp53"], ["TP53"])


def test_align_to_panel_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        align_to_panel(np.zeros((2, 3)), ["A", "B"], ["A"])


def test_an_input_named_exactly_like_the_panel_is_matched_without_resolving() -> None:
    panel = ["TP53", "SEPT9", "ENSG00000141510.5"]
    values = np.arange(6, dtype=np.float64).reshape(2, 3)

    def refuse(names: Sequence[str]) -> list[str]:
        raise AssertionError("the resolver must not be called for identical names")

    aligned, report = align_to_panel(values, list(panel), panel, resolver=refuse)
    assert aligned.dtype == np.float32 and np.array_equal(aligned, values) and aligned is not values
    counts = (report.n_found, report.n_matched_directly, report.n_matched_by_conversion, report.coverage)
    assert counts == (3, 3, 0, 1.0)
    # Any other order goes through the resolver, and gives the same numbers.
    shuffled, again = align_to_panel(values[:, ::-1], panel[::-1], panel)
    assert np.array_equal(shuffled, aligned) and again.n_found == 3


@pytest.mark.parametrize(
    ("n_found", "n_panel", "shown"),
    [(9_999, 20_000, "49.9%"), (1_000, 2_001, "49.9%"), (1_799, 1_999, "89.9%"), (474, 500, "94.8%"),
     (350, 500, "70.0%"), (500, 500, "100.0%"), (0, 0, "0.0%")],
)
def test_coverage_percent_rounds_down(n_found: int, n_panel: int, shown: str) -> None:
    # Rounded to nearest, 9,999 of 20,000 read "50.0%": a refusal "at least 50% is required" named as met.
    report = AlignmentReport(n_panel=n_panel, n_found=n_found, n_missing=n_panel - n_found, n_extra=0,
                             coverage=n_found / n_panel if n_panel else 0.0)
    assert report.coverage_percent == shown
