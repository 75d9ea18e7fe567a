"""Upload throughput and server memory for a TCGA-sized cohort, beside a plain pandas/pyarrow read of the file.

Writes a seeded synthetic matrix (default 10,000 samples x 60,000 genes, float32 log-scale values rounded
to 3 decimals, Ensembl-like gene ids) as Parquet and as TSV, starts the real service (``exprssl serve``:
uvicorn, embedded default) on 127.0.0.1 with a temporary data folder, and uploads each file over HTTP as
one multipart request streamed from disk. For each format it prints the wall time, MB/s of the file, the
time after the last byte was sent (parsing, checks, checksum, store write), and the server process's peak
resident memory during the upload (``VmHWM`` of ``/proc/<pid>/status``, reset before each upload through
``clear_refs``), beside the same figures for ``pyarrow`` and ``pandas`` reading the same file in a fresh
process. The TSV holds the same values as the Parquet file, so its upload must come back as a duplicate
of the first (same checksum, nothing stored twice).

Passes when every upload's peak stays under 3x the dense float32 matrix (2.4 GB at the default size).

Usage: ``.venv/bin/python bench/upload_throughput.py [--samples 10000 --genes 60000 --formats parquet,tsv]``
(``--record`` appends the figures to bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.service import admin_headers, start_server, wait_until_up  # noqa: E402 - after the path insert

CHUNK = 8 << 20
ROW_GROUP = 1000  # rows per Parquet row group / per TSV write


def blocks(samples: int, genes: int, seed: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """(sample ids, values transposed to genes x rows) for each group of rows; values are float32."""
    rng = np.random.default_rng(seed)
    for start in range(0, samples, ROW_GROUP):
        rows = min(ROW_GROUP, samples - start)
        by_gene = rng.standard_normal((genes, rows), dtype=np.float32)
        by_gene *= 1.5
        by_gene += 6.0
        by_gene = np.round(by_gene, 3).astype(np.float32)
        yield [f"TCGA-{i:06d}" for i in range(start, start + rows)], by_gene


def gene_ids(genes: int) -> list[str]:
    return [f"ENSG{j:011d}" for j in range(genes)]


def table(ids: list[str], by_gene: np.ndarray, names: list[str]) -> pa.Table:
    arrays = [pa.array(ids, pa.string())] + [pa.array(by_gene[j]) for j in range(by_gene.shape[0])]
    return pa.Table.from_arrays(arrays, names=["sample_id", *names])


def write_files(folder: Path, samples: int, genes: int, formats: list[str], seed: int) -> dict[str, Path]:
    names = gene_ids(genes)
    schema = pa.schema([pa.field("sample_id", pa.string())] + [pa.field(g, pa.float32()) for g in names])
    paths = {fmt: folder / f"cohort.{fmt}" for fmt in formats}
    parquet = pq.ParquetWriter(paths["parquet"], schema) if "parquet" in paths else None
    tsv = None
    if "tsv" in paths:
        options = pacsv.WriteOptions(delimiter="\t", quoting_style="none")
        tsv = pacsv.CSVWriter(str(paths["tsv"]), schema, write_options=options)
    try:
        for ids, by_gene in blocks(samples, genes, seed):
            part = table(ids, by_gene, names)
            if parquet is not None:
                parquet.write_table(part)
            if tsv is not None:
                tsv.write_table(part)
    finally:
        if parquet is not None:
            parquet.close()
        if tsv is not None:
            tsv.close()
    return paths


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in bytes."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[key] = int(value.split()[0]) * 1024
    return figures


def reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def upload(url: str, path: Path, auth: dict[str, str]) -> dict[str, object]:
    """POST ``path`` as the expression file of a multipart request streamed from disk; time it."""
    boundary = "exprssl-bench-boundary"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"expression\"; filename=\"{path.name}\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = (
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nbench\r\n--{boundary}--\r\n"
    ).encode()
    sent: dict[str, float] = {}

    def body() -> Iterator[bytes]:
        yield head
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk
        yield tail
        sent["at"] = time.perf_counter()

    headers = {
        **auth,
        "content-type": f"multipart/form-data; boundary={boundary}",
        "content-length": str(len(head) + path.stat().st_size + len(tail)),
    }
    start = time.perf_counter()
    response = httpx.post(f"{url}/cohorts", content=body(), headers=headers, timeout=None)
    end = time.perf_counter()
    if response.status_code != 201:
        raise RuntimeError(f"upload of {path.name} failed: {response.status_code} {response.text[:500]}")
    return {"wall_s": end - start, "after_send_s": end - sent["at"], "cohort": response.json()}


BASELINES = {  # name: (imports, the read that is timed)
    "parquet": {
        "pyarrow.parquet.read_table": ("import pyarrow.parquet as pq", "t = pq.read_table(PATH)"),
        "pyarrow.parquet.read_table(use_threads=False)": (
            "import pyarrow.parquet as pq", "t = pq.read_table(PATH, use_threads=False)"
        ),
        "pandas.read_parquet": ("import pandas as pd", "f = pd.read_parquet(PATH)"),
    },
    "tsv": {
        "pyarrow.csv.read_csv (64 MB blocks)": (
            "import pyarrow.csv as c",
            "t = c.read_csv(PATH, read_options=c.ReadOptions(block_size=64 << 20), "
            "parse_options=c.ParseOptions(delimiter='\\t'))",
        ),
        "pandas.read_csv (C engine)": (
            "import numpy as np, pandas as pd",
            "f = pd.read_csv(PATH, sep='\\t', index_col=0, dtype={g: np.float32 for g in GENES})",
        ),
    },
}


def baseline(imports: str, code: str, path: Path, genes: int, limit: int, timeout: float) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter after ``imports``, its address space capped at ``limit`` bytes so
    that a read that blows up fails there rather than drawing the kernel's OOM killer onto the machine;
    its wall time, peak RSS and RSS before it, or why it failed."""
    script = (
        f"import json, resource, time\nresource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n{imports}\n"
        f"PATH = {str(path)!r}\nGENES = ['ENSG%011d' % j for j in range({genes})]\n"
        "before = int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) * 1024\n"
        f"start = time.perf_counter()\n{code}\nwall = time.perf_counter() - start\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "print(json.dumps({'wall_s': wall, 'peak_rss': peak, 'idle_rss': before}))\n"
    )
    start = time.perf_counter()
    try:
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"failed": f"still running after {timeout:.0f} s"}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or [""])[-1][:120]
        return {"failed": f"exit {out.returncode} after {time.perf_counter() - start:.0f} s under a "
                f"{limit / 1e9:.0f} GB address-space cap: {last}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--genes", type=int, default=60_000)
    parser.add_argument("--formats", default="parquet,tsv", help="comma-separated: parquet, tsv")
    parser.add_argument("--baselines", default="all", help="all, pyarrow or none")
    parser.add_argument("--baseline-limit-gb", type=float, default=12.0, help="address-space cap of each plain read")
    parser.add_argument("--baseline-timeout", type=float, default=600.0, help="seconds before a plain read is stopped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--workdir", type=Path, default=None, help="a folder with room for the files (kept)")
    parser.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    args = parser.parse_args()
    formats = [f for f in args.formats.split(",") if f]
    if unknown := sorted(set(formats) - {"parquet", "tsv"}):
        parser.error(f"--formats: {', '.join(unknown)} unknown; choose among parquet, tsv")
    dense = args.samples * args.genes * 4
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="exprssl-upload-"))
    folder.mkdir(parents=True, exist_ok=True)
    data_dir = folder / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir()
    load = os.getloadavg()
    print(f"matrix {args.samples} x {args.genes} float32 = {gb(dense)} dense; load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")

    start = time.perf_counter()
    paths = write_files(folder, args.samples, args.genes, formats, args.seed)
    print(f"wrote {', '.join(f'{p.name} {gb(p.stat().st_size)}' for p in paths.values())} "
          f"in {time.perf_counter() - start:.0f} s")

    auth = admin_headers(data_dir)
    server = start_server(data_dir, args.port, {
        "EXPRSSL_MAX_UPLOAD_BYTES": str(64 * 1024**3), "EXPRSSL_RATE_LIMIT_UPLOAD": "1000/minute",
        "EXPRSSL_TORCH_THREADS": "1",
    }, log=data_dir / "server.log")
    url = f"http://127.0.0.1:{args.port}"
    results = []
    try:
        wait_until_up(url, server)
        for fmt, path in paths.items():
            idle = memory(server.pid)
            reset = reset_peak(server.pid)
            figures = upload(url, path, auth)
            peak = memory(server.pid)["VmHWM"]
            time.sleep(1.0)  # what the server keeps once the upload is over
            settled = memory(server.pid)["VmRSS"]
            cohort = figures["cohort"]
            size = path.stat().st_size
            row = {
                "format": fmt, "file_bytes": size, "wall_s": figures["wall_s"], "after_send_s": figures["after_send_s"],
                "mb_per_s": size / 1e6 / figures["wall_s"], "server_idle_rss": idle["VmRSS"], "server_peak": peak,
                "server_rss_after": settled,
                "peak_reset": reset, "shape": (cohort["n_samples"], cohort["n_genes"]),
                "deduplicated": cohort["deduplicated"], "checksum": cohort["checksum"][:12],
            }
            print(f"[{fmt}] upload {gb(size)}: {row['wall_s']:.1f} s wall ({row['mb_per_s']:.0f} MB/s), "
                  f"{row['after_send_s']:.1f} s after the last byte; server peak RSS {gb(peak)} "
                  f"({peak / dense:.2f}x dense; idle {gb(idle['VmRSS'])}, 1 s after {gb(settled)}); "
                  f"shape {row['shape']}, "
                  f"deduplicated={row['deduplicated']}, checksum {row['checksum']}")
            row["baselines"] = {}
            for name, (imports, code) in BASELINES[fmt].items():
                if args.baselines == "none" or (args.baselines == "pyarrow" and not name.startswith("pyarrow")):
                    continue
                limit = int(args.baseline_limit_gb * 1024**3)
                plain = baseline(imports, code, path, args.genes, limit, args.baseline_timeout)
                row["baselines"][name] = plain
                if "failed" in plain:
                    print(f"[{fmt}]   {name}: FAILED, {plain['failed']}")
                    continue
                print(f"[{fmt}]   {name}: {plain['wall_s']:.1f} s ({size / 1e6 / plain['wall_s']:.0f} MB/s), "
                      f"peak RSS {gb(plain['peak_rss'])} ({plain['peak_rss'] / dense:.2f}x dense; "
                      f"{gb(plain['idle_rss'])} before the read)")
            results.append(row)
    finally:
        server.terminate()
        server.wait(timeout=60)
    stored = list((data_dir / "artifacts" / "cohorts").rglob("*.arrow"))  # cohorts/<lab id>/<checksum>.arrow
    print(f"stored matrices: {len(stored)} ({', '.join(gb(p.stat().st_size) for p in stored)})")
    ok = all(r["server_peak"] < 3 * dense for r in results)
    print(("PASS" if ok else "FAIL") + f": server peak under 3x the dense float32 matrix ({gb(3 * dense)})")
    if args.record:
        record(args, dense, load, results, len(stored))
    for path in paths.values():
        path.unlink(missing_ok=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    return 0 if ok else 1


def record(
    args: argparse.Namespace, dense: int, load: tuple[float, float, float], results: list[dict], n_stored: int
) -> None:
    lines = [
        "",
        f"## Upload throughput: {args.samples:,} x {args.genes:,} float32 cohort (bench/upload_throughput.py)",
        "",
        f"`.venv/bin/python bench/upload_throughput.py --samples {args.samples} --genes {args.genes} "
        f"--formats {args.formats}`, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load average "
        f"{load[0]:.1f} at the start (other engineers' tests and benchmarks share the machine). Dense matrix "
        f"{gb(dense)}; server = `exprssl serve` (uvicorn, embedded default); peak = VmHWM of the server "
        "process, reset before each upload; baselines run in a fresh process each.",
        "",
        "| file | size | upload wall | MB/s | after last byte | server peak RSS | x dense "
        "| plain read | read wall | read peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        reads = list(r["baselines"].items()) or [("-", {"failed": "not run"})]
        for i, (name, plain) in enumerate(reads):
            head = (
                f"| {r['format']} | {gb(r['file_bytes'])} | {r['wall_s']:.1f} s | {r['mb_per_s']:.0f} | "
                f"{r['after_send_s']:.1f} s | {gb(r['server_peak'])} | {r['server_peak'] / dense:.2f} |"
                if i == 0 else "| | | | | | | |"
            )
            if "failed" in plain:
                lines.append(f"{head} `{name}` | failed: {plain['failed']} | |")
            else:
                lines.append(f"{head} `{name}` | {plain['wall_s']:.1f} s | {gb(plain['peak_rss'])} |")
    dedup = [r for r in results if r["deduplicated"]]
    note = f" (the {', '.join(r['format'] for r in dedup)} upload was recognised as the same matrix)" if dedup else ""
    lines += ["", f"Stored matrices after {len(results)} uploads: {n_stored}{note}.", ""]
    with (ROOT / "bench" / "RESULTS.md").open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
