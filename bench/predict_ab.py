"""Two servers side by side, prediction requests alternating between them one by one: an A/B test of a setting
or of a change to the code.

This machine's speed moves by a third from minute to minute (bench/RESULTS.md), more than most changes to the
request path are worth, so two runs of ``predict_latency.py`` one after the other cannot tell them apart. Here
two ``exprssl serve`` processes run at once, each with its own data folder and predictor (the same synthetic
cohort and training), and one client sends each the same request in turn, the order swapped every round: both
see the same state of the machine. Prints each side's p50 and the p50 of each quarter of the run (a drift the
two share shows in both). Run it with the same settings on both sides to see what the noise alone gives.

Usage: ``.venv/bin/python bench/predict_ab.py --a EXPRSSL_TORCH_THREADS=1 --b '' [--samples 100 --requests 200]``
(``--a``/``--b``: comma-separated ``NAME=value`` settings of each server; empty for the defaults). A change to
the code: ``git worktree add /tmp/before HEAD~1``, then ``--a-tree /tmp/before`` (``--a-tree``/``--b-tree``:
the source tree each server runs from; this checkout by default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.predict_latency import UNLIMITED, request_body, synthetic_cohort, timed_post, train_predictor  # noqa: E402
from bench.service import admin_headers, start_server, wait_until_up  # noqa: E402

WARM_UP = 10  # requests to each server before the timed ones


def settings_of(text: str) -> dict[str, str]:
    """``"A=1,B=2"`` as a dict; ValueError naming an item without ``=``."""
    pairs = [item.strip() for item in text.split(",") if item.strip()]
    for item in pairs:
        if "=" not in item:
            raise ValueError(f"{item!r}: give settings as NAME=value")
    return dict(item.split("=", 1) for item in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", default="", help="settings of server A, NAME=value,...")
    parser.add_argument("--b", default="", help="settings of server B, NAME=value,...")
    parser.add_argument("--a-tree", type=Path, default=ROOT, help="source tree server A runs from")
    parser.add_argument("--b-tree", type=Path, default=ROOT, help="source tree server B runs from")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests to each server")
    parser.add_argument("--port", type=int, default=8770, help="A's port; B's is the next")
    args = parser.parse_args()
    sides = {"A": settings_of(args.a), "B": settings_of(args.b)}
    trees = {"A": args.a_tree.resolve(), "B": args.b_tree.resolve()}
    frame, labels = synthetic_cohort(300, args.genes)
    body = request_body(frame, args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        servers, clients, paths = [], [], []
        try:
            for offset, (name, settings) in enumerate(sides.items()):
                data_dir = Path(tmp) / name
                data_dir.mkdir()
                auth = admin_headers(data_dir, trees[name])
                servers.append(start_server(data_dir, args.port + offset, {**UNLIMITED, **settings}, tree=trees[name]))
                url = f"http://127.0.0.1:{args.port + offset}"
                wait_until_up(url, servers[-1])
                clients.append(httpx.Client(base_url=url, timeout=120, headers=auth))
                paths.append(f"/predictors/{train_predictor(clients[-1], frame, labels)}/predictions")
            for _ in range(WARM_UP):
                for client, path in zip(clients, paths, strict=True):
                    timed_post(client, path, body)
            times: list[list[float]] = [[], []]
            for round_ in range(args.requests):
                for side in ((0, 1) if round_ % 2 == 0 else (1, 0)):
                    times[side].append(timed_post(clients[side], paths[side], body))
        finally:
            for client in clients:
                client.close()
            for server in servers:
                server.terminate()
                server.wait(timeout=60)
    print(f"{args.samples} inline samples x {args.genes} genes, {args.requests} requests to each server, "
          "alternating\n")
    quarter = -(-args.requests // 4)  # rounded up: four parts, the last maybe shorter
    print("| server | source tree | settings | p50 (ms) | p50 of each quarter (ms) |\n|---|---|---|---|---|")
    for (name, settings), values in zip(sides.items(), times, strict=True):
        quarters = ", ".join(f"{statistics.median(values[i:i + quarter]) * 1000:.1f}"
                             for i in range(0, len(values), quarter))
        shown = ", ".join(f"{key}={value}" for key, value in settings.items()) or "(defaults)"
        print(f"| {name} | {trees[name]} | {shown} | {statistics.median(values) * 1000:.1f} | {quarters} |")


if __name__ == "__main__":
    main()
