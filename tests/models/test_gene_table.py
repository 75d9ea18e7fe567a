from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.gene_table import (
    RULES,
    GeneTable,
    Resolution,
    align_by_gene_key,
    default_table,
    gene_table_version,
    looks_like_symbol_file,
    parse_excel_date,
    resolve_gene_keys,
    resolve_genes,
    summarise_resolutions,
)
from models.genes import GeneIdResolver, harmonise_genes
from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[2]
TISSUES = SHARED_DATA / "tissue_symbols" / "expression.parquet"
GENES = SHARED_DATA / "genes"

# The previous symbols among tissue_symbols' 500 genes (data/README.md names four of them) and their genes today.
TISSUE_PREVIOUS = {
    "SEPT10": ("151011", "SEPTIN10"),
    "H2AFY": ("9555", "MACROH2A1"),
    "RARS": ("5917", "RARS1"),
    "COL4A3BP": ("10087", "CERT1"),
    "CXorf40A": ("91966", "EOLA1"),
    "MARC2": ("54996", "MTARC2"),
    "H3F3A": ("3020", "H3-3A"),
    "WRB": ("7485", "GET1"),
    "KIAA1324": ("57535", "ELAPOR1"),
}


def one(name: str, **kwargs: bool) -> Resolution:
    (resolution,) = resolve_genes([name], **kwargs)
    return resolution


def test_version_names_the_snapshot() -> None:
    assert gene_table_version() == "org.Hs.eg.db 3.16.0 (NCBI 2022-09-12, Ensembl 2022-06-28)"
    assert default_table() is default_table()  # loaded once
    assert len(default_table()) == 77_614


@pytest.mark.parametrize(
    ("name", "key", "symbol", "rule"),
    [
        ("SEPTIN9", "10801", "SEPTIN9", "symbol"),
        ("SEPT9", "10801", "SEPTIN9", "alias"),
        ("HER2", "2064", "ERBB2", "alias"),
        ("ENSG00000141510.17", "7157", "TP53", "ensembl"),
        ("ENSG00000141510", "7157", "TP53", "ensembl"),
        ("7157", "7157", "TP53", "ncbi_id"),
        ("tp53", "7157", "TP53", "symbol"),
        (" TP53 ", "7157", "TP53", "symbol"),
        ("TP53|7157", "7157", "TP53", "tcga"),
        ("ERBB2|2064", "2064", "ERBB2", "tcga"),
        ("NOTAGENE|7157", "7157", "TP53", "tcga"),  # the id decides
        ("LOC643733", "643733", "CASP4LP", "loc_id"),
        ("LOC84214", "84214", "LOC84214", "symbol"),
        ("ENSG00000002586.20_PAR_Y", "4267", "CD99", "ensembl_par_y"),
        ("ENSG00000002586.20", "4267", "CD99", "ensembl"),
        ("ENSG00000999999.3", "ENSG00000999999", None, "ensembl_only"),
        ("1007_s_at", "1007_s_at", None, "probe"),
        ("ILMN_1343291", "ILMN_1343291", None, "probe"),
        ("?|100133144", "100133144", None, "unresolved"),  # no longer an NCBI gene of this snapshot
        ("ENST00000269305.9", "ENST00000269305", None, "unresolved"),
        ("not-a-gene", "NOT-A-GENE", None, "unresolved"),
        ("99999999", "99999999", None, "unresolved"),
    ],
)
def test_resolves_real_identifiers(name: str, key: str, symbol: str | None, rule: str) -> None:
    r = one(name)
    assert (r.name, r.key, r.symbol, r.rule, r.candidates) == (name, key, symbol, rule, ())


@pytest.mark.parametrize(
    ("name", "key", "symbol"),
    [("HGF", "3082", "HGF"), ("TEP1", "7011", "TEP1"), ("PRF1", "5551", "PRF1"), ("cbs", "875", "CBS")],
)
def test_current_symbol_wins_over_another_genes_alias(name: str, key: str, symbol: str) -> None:
    # HGF is also an alias of IL6 (3569), TEP1 of PTEN (5728), PRF1 of ZNF395, CBS of LOC102724560.
    r = one(name)
    assert (r.key, r.symbol, r.rule, r.candidates) == (key, symbol, "symbol", ())


@pytest.mark.parametrize(
    ("name", "candidates"),
    [
        ("SEPT2", ("4735", "23157")),  # previous symbol of SEPTIN2, alias of SEPTIN6
        ("DEC1", ("8553", "50514")),  # BHLHE40, DELEC1
        ("HBD", ("3045", "100187828")),  # a current symbol of two genes
        ("RNR1", ("4549", "6052")),
    ],
)
def test_names_of_several_genes_are_ambiguous_not_guessed(name: str, candidates: tuple[str, ...]) -> None:
    r = one(name)
    assert r.rule == "ambiguous" and r.ambiguous and not r.resolved
    assert r.candidates == candidates
    assert r.key == name and r.symbol is None


def test_an_ambiguous_ensembl_id_keeps_its_own_key() -> None:
    multi = next(e for e, keys in default_table()._ensembl.items() if len(keys) > 1)
    r = one(multi + ".4")
    assert r.rule == "ambiguous" and r.key == multi and len(r.candidates) > 1


# EHMT2 (NCBI 10919) has an Ensembl gene on the primary assembly and one on each MHC haplotype; a GRCh37
# count file such as airway's lists them all, as distinct rows.
EHMT2_ENSEMBL = ["ENSG00000204371.12", "ENSG00000206376.3"]


def test_distinct_ensembl_genes_of_one_panel_gene_are_kept_apart_not_refused() -> None:
    genes = [*EHMT2_ENSEMBL, "SEPTIN10", "TP53"]
    values = np.array([[1.0, 2.0, 3.0, 4.0]])
    for refuse in (False, True):
        aligned, report = align_by_gene_key(values, genes, ["EHMT2", "SEPT10"], refuse_synonyms=refuse)
        assert (report.n_found, report.n_missing, report.n_extra, report.coverage) == (1, 1, 3, 0.5)
        assert report.missing == ["EHMT2"] and report.extra == [*EHMT2_ENSEMBL, "TP53"]
        assert np.isnan(aligned[0, 0]) and aligned[0, 1] == 3.0
    # Against a panel of Ensembl ids each matches its own id only.
    _, by_id = align_by_gene_key(values, genes, ["ENSG00000204371"], refuse_synonyms=True)
    assert by_id.n_found == 1 and by_id.n_extra == 3


def test_the_report_says_why_a_missing_gene_the_input_names_was_not_taken() -> None:
    # From airway against a symbol panel: an Ensembl id of two NCBI genes (DDT, DDTL), EHMT2's haplotype genes,
    # and DSPS, the current symbol of one gene and an alias of AANAT. MYC is missing and not named at all.
    genes = ["ENSG00000099977.13", *EHMT2_ENSEMBL, "DSPS", "TP53"]
    _, report = align_by_gene_key(np.ones((1, len(genes))), genes, ["DDT", "EHMT2", "AANAT", "MYC", "TP53"])

    assert report.missing == ["DDT", "EHMT2", "AANAT", "MYC"]
    assert report.missing_reasons == [
        {"panel": "DDT", "input": ["ENSG00000099977.13"],
         "reason": "'ENSG00000099977.13' denotes several genes (DDT, DDTL): an ambiguous name is not guessed"},
        {"panel": "EHMT2", "input": EHMT2_ENSEMBL,
         "reason": "distinct Ensembl genes of EHMT2 (alternate haplotypes or patches): each is kept apart, none is "
                   "taken for it"},
        {"panel": "AANAT", "input": ["DSPS"],
         "reason": "'DSPS' is the current symbol of DSPS, and only an alias of AANAT: a current symbol always names "
                   "its own gene"},
    ]


def test_nothing_is_explained_when_nothing_the_input_names_is_missing() -> None:
    _, report = align_by_gene_key(np.ones((1, 2)), ["TP53", "ENSG00000136997"], ["TP53", "MYC", "EGFR"])

    assert report.missing == ["EGFR"] and report.missing_reasons == []


@pytest.mark.parametrize(
    "genes",
    [
        ["ENSG00000204371.12", "EHMT2"],  # a symbol and an Ensembl id of one gene
        ["ENSG00000204371.12", "ENSG00000204371.13"],  # one Ensembl gene twice
        [*EHMT2_ENSEMBL, "EHMT2"],
    ],
)
def test_two_names_of_one_panel_gene_are_still_refused(genes: list[str]) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(repr(genes[0]))} and .* name the same gene \(key 10919\)"):
        align_by_gene_key(np.zeros((1, len(genes))), genes, ["EHMT2"], refuse_synonyms=True)


@pytest.mark.parametrize(
    ("date", "key", "symbol"),
    [
        ("1-Mar", "55016", "MARCHF1"),
        ("Mar-1", "55016", "MARCHF1"),
        ("MAR-1", "55016", "MARCHF1"),
        ("2-Sep", "4735", "SEPTIN2"),
        ("02-Sep", "4735", "SEPTIN2"),
        ("2006/09/02", "4735", "SEPTIN2"),
        ("9-Sep", "10801", "SEPTIN9"),
        ("13-Sep", "641977", "SEPTIN7P2"),  # SEPT13, since renamed
        ("15-Sep", "9403", "SELENOF"),  # SEP15
        ("1-Dec", "50514", "DELEC1"),
        ("11-Mar", "441061", "MARCHF11"),
    ],
)
def test_excel_dates_in_a_symbol_file(date: str, key: str, symbol: str) -> None:
    resolutions = resolve_genes(["TP53", "ERBB2", "GAPDH", date, "ACTB"])
    assert (resolutions[3].key, resolutions[3].symbol, resolutions[3].rule) == (key, symbol, "excel_date")


def test_excel_dates_left_alone_outside_symbol_files() -> None:
    ensembl = ["ENSG00000141510", "ENSG00000141736", "1-Mar"]
    assert resolve_genes(ensembl)[2].rule == "unresolved"
    assert resolve_genes(["1-Mar"])[0].rule == "unresolved"  # no file context
    assert resolve_genes(["1-Mar"], excel_dates=True)[0].key == "55016"
    assert resolve_genes(["TP53", "1-Mar"], excel_dates=False)[1].rule == "unresolved"
    assert not looks_like_symbol_file(["TP53", "ERBB2"])  # no date at all
    assert looks_like_symbol_file(["TP53", "ERBB2", "2-Sep"])
    assert parse_excel_date("1-Jan") is None and parse_excel_date("40-Mar") is None
    assert parse_excel_date("Sep-02") == ("SEP", 2)


def test_previous_symbols_of_tissue_symbols_resolve_to_current_genes() -> None:
    genes = list(pd.read_parquet(TISSUES).columns)
    resolutions = resolve_genes(genes)
    by_name = {r.name: r for r in resolutions}
    for name, (key, symbol) in TISSUE_PREVIOUS.items():
        assert (by_name[name].key, by_name[name].symbol, by_name[name].rule) == (key, symbol, "alias")
    assert summarise_resolutions(resolutions) == {"symbol": 490, "alias": 9, "loc_id": 1}
    assert len({r.key for r in resolutions}) == 500


def test_keys_are_a_gene_id_resolver_that_merges_synonyms() -> None:
    resolver: GeneIdResolver = resolve_gene_keys
    names = ["SEPT9", "SEPTIN9", "tp53", "ENSG00000141510.17", "1007_s_at", "FOO"]
    keys = resolver(names)
    assert keys == ["10801", "10801", "7157", "7157", "1007_s_at", "FOO"]
    assert resolver(keys) == keys  # idempotent
    harmonised = harmonise_genes(names, resolver)
    assert harmonised.keys == ["10801", "7157", "1007_s_at", "FOO"]
    assert harmonised.duplicates == {"10801": ["SEPT9", "SEPTIN9"], "7157": ["tp53", "ENSG00000141510.17"]}


def test_summary_counts_rules_in_order() -> None:
    summary = summarise_resolutions(resolve_genes(["TP53", "HER2", "SEPT2", "x1", "TP53|7157", "HER2"]))
    assert summary == {"symbol": 1, "alias": 2, "tcga": 1, "ambiguous": 1, "unresolved": 1}
    assert list(summary) == [r for r in RULES if r in summary]


def test_sixty_thousand_names_of_three_kinds_resolve_each_by_its_rule() -> None:
    """Symbols, Ensembl ids and NCBI ids mixed, as a TCGA-sized input names them (its speed:
    bench/gene_resolution.py)."""
    table = default_table()
    ids = list(table.symbols)[:30_000]
    ensembl = [f"ENSG{i:011d}.2" for i in range(15_000)]
    names = [table.symbols[k] for k in ids] + ensembl + ids[:15_000]

    resolutions = table.resolve(names)

    assert [r.name for r in resolutions] == names
    by_symbol, by_ensembl, by_ncbi = resolutions[:30_000], resolutions[30_000:45_000], resolutions[45_000:]
    assert all(r.key == key for r, key in zip(by_symbol, ids, strict=True) if r.rule == "symbol")
    assert {r.rule for r in by_symbol} == {"symbol", "ambiguous"}
    assert sum(r.rule == "symbol" for r in by_symbol) > 29_900  # the rest: symbols of several genes
    assert {r.rule for r in by_ensembl} <= {"ensembl", "ensembl_only", "ambiguous"}
    unknown_to_the_table = [(r, name) for r, name in zip(by_ensembl, ensembl, strict=True) if r.rule == "ensembl_only"]
    assert all(r.key == name.split(".")[0] for r, name in unknown_to_the_table)
    assert all(r.rule == "ncbi_id" and r.key == name for r, name in zip(by_ncbi, ids, strict=False))


def test_parse_reads_the_layout() -> None:
    lines = [
        "# version\ttest 1",
        "entrez_id\tsymbol\taliases\tensembl_ids",
        "1\tAAA\tOLD|BB\tENSG00000000001",
        "2\tBB\t\t",
        "3\tCCC\tOLD\tENSG00000000001|ENSG00000000003",
    ]
    table = GeneTable.parse(lines)
    assert table.version == "test 1" and len(table) == 3
    keys = [(r.key, r.rule) for r in table.resolve(["bb", "old", "ENSG00000000003", "ENSG00000000001"])]
    assert keys == [("2", "symbol"), ("OLD", "ambiguous"), ("3", "ensembl"), ("ENSG00000000001", "ambiguous")]


def test_shipped_table_matches_its_provenance() -> None:
    data = ROOT / "models" / "data"
    digest = hashlib.sha256((data / "human_genes.tsv.gz").read_bytes()).hexdigest()
    provenance = (data / "GENES_PROVENANCE.md").read_text()
    assert digest in provenance and gene_table_version() in provenance and "Artistic-2.0" in provenance


def test_build_script_reproduces_the_shipped_table(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("build_gene_table", ROOT / "scripts" / "build_gene_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--source", str(GENES), "--out", str(tmp_path)])
    shipped = (ROOT / "models" / "data" / "human_genes.tsv.gz").read_bytes()
    assert (tmp_path / "human_genes.tsv.gz").read_bytes() == shipped
    assert GeneTable.load(tmp_path / "human_genes.tsv.gz").version == gene_table_version()
