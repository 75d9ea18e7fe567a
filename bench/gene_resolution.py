"""How fast the shipped gene table resolves a TCGA-sized input's gene names.

60,000 names (the default): 30,000 current symbols, 15,000 versioned Ensembl ids and 15,000 NCBI ids, in one
``GeneTable.resolve`` call; the first call in a fresh process (the table's indexes built on first use, as in a
server's first upload), then the median of ``--repeats`` more. Prints both.

Usage: ``.venv/bin/python bench/gene_resolution.py [--names 60000 --repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.gene_table import default_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()
    table = default_table()
    loaded = time.perf_counter() - started
    half, quarter = args.names // 2, args.names // 4
    ids = list(table.symbols)[:half]
    names = ([table.symbols[k] for k in ids] + [f"ENSG{i:011d}.2" for i in range(quarter)]
             + ids[: args.names - half - quarter])
    times = []
    for _ in range(args.repeats + 1):
        started = time.perf_counter()
        table.resolve(names)
        times.append(time.perf_counter() - started)
    print(f"gene table {table.version}: {len(table):,} genes, loaded in {loaded:.2f} s")
    print(f"{len(names):,} names: first call {times[0]:.2f} s, then {statistics.median(times[1:]):.2f} s "
          f"(median of {args.repeats})")


if __name__ == "__main__":
    main()
