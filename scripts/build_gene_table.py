"""Build the human gene table shipped in ``models/data/`` from the org.Hs.eg.db parquet export.

Usage (from the repository root)::

    .venv/bin/python scripts/build_gene_table.py [--source ../shared/data/genes] [--out models/data]

Reads ``human_genes.parquet``, ``human_gene_aliases.parquet`` and ``human_gene_ensembl.parquet`` (see the
source directory's README.md) and writes

- ``human_genes.tsv.gz``: one line per NCBI gene, ``entrez_id, symbol, aliases, ensembl_ids`` (aliases and
  Ensembl ids "|"-joined; a gene's own symbol is left out of its aliases), preceded by ``#`` lines naming the
  table's version; gzip with a zero timestamp, so the same input always gives the same bytes;
- ``GENES_PROVENANCE.md``: sources, licences, snapshot dates, sha256 of the inputs and of the output.

The product reads only the shipped copy (``models.gene_table``), never the source directory.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "genes"
DEFAULT_OUT = ROOT / "models" / "data"
TABLE_NAME = "human_genes.tsv.gz"
INPUTS = ("human_genes.parquet", "human_gene_aliases.parquet", "human_gene_ensembl.parquet")
FORBIDDEN = ("\t", "|", "\n", "\r")


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_text(values: pd.Series, what: str) -> None:
    """Refuse identifiers that would break the TSV / "|"-joined layout."""
    for ch in FORBIDDEN:
        bad = values[values.str.contains(ch, regex=False)]
        if len(bad):
            raise ValueError(f"{len(bad)} {what} contain {ch!r}, e.g. {bad.iloc[0]!r}")


def _joined(frame: pd.DataFrame, column: str) -> dict[int, str]:
    """``entrez_id -> "|"-joined sorted unique values of column``."""
    grouped = frame.groupby("entrez_id")[column].agg(lambda s: "|".join(sorted(set(s))))
    return {int(k): str(v) for k, v in grouped.items()}


def build_lines(source: Path) -> tuple[list[str], dict[str, int]]:
    """Rows of the shipped table (without the header) and counts for the provenance note."""
    genes = pd.read_parquet(source / INPUTS[0], columns=["entrez_id", "symbol"])
    aliases = pd.read_parquet(source / INPUTS[1], columns=["entrez_id", "alias"])
    ensembl = pd.read_parquet(source / INPUTS[2], columns=["entrez_id", "ensembl_id"])
    for frame, column in ((genes, "symbol"), (aliases, "alias"), (ensembl, "ensembl_id")):
        frame[column] = frame[column].astype(str).str.strip()
        _check_text(frame[column], column)
    own = aliases.merge(genes, on="entrez_id", how="left")
    aliases = own.loc[own["alias"] != own["symbol"], ["entrez_id", "alias"]]
    alias_of, ensembl_of = _joined(aliases, "alias"), _joined(ensembl, "ensembl_id")
    genes = genes.sort_values("entrez_id", kind="stable")
    lines = [
        f"{e}\t{s}\t{alias_of.get(int(e), '')}\t{ensembl_of.get(int(e), '')}"
        for e, s in zip(genes["entrez_id"], genes["symbol"], strict=True)
    ]
    counts = {"genes": len(genes), "aliases": len(aliases), "ensembl": len(ensembl)}
    return lines, counts


def write_table(path: Path, lines: list[str], version: str) -> None:
    """Write the gzip TSV reproducibly (no timestamp, no file name in the gzip header)."""
    text = "\n".join([f"# version\t{version}", "entrez_id\tsymbol\taliases\tensembl_ids", *lines]) + "\n"
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buffer, mode="wb", compresslevel=9, mtime=0) as handle:
        handle.write(text.encode("utf-8"))
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)


def provenance(source: Path, out: Path, version: str, counts: dict[str, int], args: argparse.Namespace) -> str:
    """Text of GENES_PROVENANCE.md."""
    inputs = "\n".join(f"| `{name}` | `{sha256(source / name)}` |" for name in INPUTS)
    content = (
        f"{counts['genes']:,} NCBI genes, {counts['aliases']:,} aliases and previous symbols (own symbols left "
        f"out), {counts['ensembl']:,} Ensembl links"
    )
    return f"""# Human gene table: provenance

`{TABLE_NAME}` is the gene table that `models.gene_table` loads. Version: **{version}**.

## Source
- Bioconductor annotation package `{args.package}` (Debian package `r-bioc-org.hs.eg.db`), licence
  Artistic-2.0; its SQLite file (tables `genes`, `gene_info`, `alias`, `ensembl`) was exported to Parquet.
- Snapshots inside it: NCBI Gene {args.ncbi_date} (NCBI data are in the public domain), Ensembl
  {args.ensembl_date}.
- To refresh: `apt-get download r-bioc-org.hs.eg.db`, `dpkg -x` it, export
  `usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite` to the three Parquet files below with
  Python's `sqlite3`, then rerun the build command with new dates.

## Inputs (sha256)
| file | sha256 |
|---|---|
{inputs}

## Output
| file | sha256 | content |
|---|---|---|
| `{TABLE_NAME}` | `{sha256(out / TABLE_NAME)}` | {content} |

Layout: `#`-prefixed header lines (`# version<TAB>...`), a column header, then one line per NCBI gene:
`entrez_id<TAB>symbol<TAB>aliases<TAB>ensembl_ids`, the last two "|"-joined (possibly empty).

## Build command
```
.venv/bin/python scripts/build_gene_table.py --source ../shared/data/genes --out models/data
```
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="directory of the three parquet files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the shipped table is written")
    parser.add_argument("--package", default="org.Hs.eg.db 3.16.0")
    parser.add_argument("--ncbi-date", default="2022-09-12")
    parser.add_argument("--ensembl-date", default="2022-06-28")
    args = parser.parse_args(argv)
    version = f"{args.package} (NCBI {args.ncbi_date}, Ensembl {args.ensembl_date})"
    args.out.mkdir(parents=True, exist_ok=True)
    lines, counts = build_lines(args.source)
    write_table(args.out / TABLE_NAME, lines, version)
    (args.out / "GENES_PROVENANCE.md").write_text(provenance(args.source, args.out, version, counts, args))
    size = (args.out / TABLE_NAME).stat().st_size
    print(f"wrote {args.out / TABLE_NAME} ({size / 1e6:.2f} MB, {counts['genes']:,} genes), version {version}")


if __name__ == "__main__":
    main()
