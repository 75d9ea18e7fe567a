"""Latency of inline predictions over HTTP, beside the bare in-process forward pass of the same predictor.

Starts the real service (``exprssl serve``, uvicorn, embedded default) on 127.0.0.1 with a temporary data
folder, trains a small SCARF encoder and a fine-tuned predictor on a synthetic cohort, then sends
``POST /predictors/{id}/predictions`` with 1, 100 and 1,000 inline samples from several concurrent
clients. Beside each figure: the same predictor loaded in this process, timed on the work a JSON prediction
API cannot avoid: decode the request JSON, the predictor's forward pass (alignment, preprocessing, then what
the endpoint returns per sample: calibrated probabilities, conformal prediction set, OOD score), encode the
results as JSON. A second bare figure stops at the classifier's raw probabilities. The single client's
requests and the bare paths take turns in alternating blocks, so that all run warm and under the same state
of the machine; their medians make the ratios. All single-client figures are taken before any concurrent
load.

Usage: ``.venv/bin/python bench/predict_latency.py [--genes 2000 --concurrency 4 --requests 80]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.service import admin_headers, allocate_as_the_service, start_server, wait_until_up  # noqa: E402
from models.device import resolve_device  # noqa: E402


def wait_for(client: httpx.Client, path: str, timeout: float = 600.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(path).json()
        if job["state"] in {"succeeded", "failed", "cancelled"}:
            if job["state"] != "succeeded":
                raise RuntimeError(f"job ended {job['state']}: {job['error']}")
            return job
        time.sleep(0.2)
    raise TimeoutError(path)


def synthetic_cohort(n: int, genes: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(6.0, 1.0, size=(n, genes)).astype(np.float32)
    x[:, :30] += y[:, None] * 1.5
    ids = [f"s{i:05d}" for i in range(n)]
    frame = pd.DataFrame(x, index=pd.Index(ids, name="sample_id"), columns=[f"GENE{j}" for j in range(genes)])
    labels = pd.DataFrame({"sample_id": ids, "group": [f"class{v}" for v in y]})
    return frame, labels


def request_body(frame: pd.DataFrame, size: int) -> bytes:
    rows = frame.iloc[np.arange(size) % len(frame)]
    samples = [{"sample_id": f"q{i}", "values": row.tolist()} for i, row in enumerate(rows.to_numpy())]
    return json.dumps({"genes": list(frame.columns), "samples": samples}).encode()


# The rate limit is not what is measured here.
UNLIMITED = {"EXPRSSL_RATE_LIMIT_PREDICT": "1000000/minute"}


def train_predictor(client: httpx.Client, frame: pd.DataFrame, labels: pd.DataFrame) -> str:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    cohort = client.post("/cohorts", files={"expression": ("x.parquet", buffer.getvalue()),
                                            "labels": ("y.csv", labels.to_csv(index=False).encode())}).json()
    encoder = client.post("/encoders", json={"cohort_id": cohort["id"], "params": {"epochs": 5}}).json()
    wait_for(client, f"/jobs/{encoder['job']['id']}")
    predictor = client.post("/predictors", json={
        "cohort_id": cohort["id"], "label_column": "group", "head": "finetune",
        "encoder_id": encoder["encoder"]["id"], "params": {"max_epochs": 5}}).json()
    wait_for(client, f"/jobs/{predictor['job']['id']}")
    return str(predictor["predictor"]["id"])


def timed_post(client: httpx.Client, path: str, body: bytes) -> float:
    """Seconds one prediction request takes; RuntimeError unless it answered 201."""
    started = time.perf_counter()
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    elapsed = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(response.text[:300])
    return elapsed


def http_latencies(
    url: str, path: str, body: bytes, concurrency: int, requests: int, auth: dict[str, str]
) -> tuple[list[float], float]:
    clients = [httpx.Client(base_url=url, timeout=120, headers=auth) for _ in range(concurrency)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(lambda i: timed_post(clients[i % concurrency], path, body), range(requests)))
    wall = time.perf_counter() - started
    for client in clients:
        client.close()
    return latencies, requests / wall


class BarePath:
    """The predictor loaded in this process, on the server's inference device (EXPRSSL_INFERENCE_DEVICE,
    default: CUDA when present), timed on decode JSON -> align -> preprocess -> predict -> encode JSON.

    ``full`` predicts what the endpoint returns for each sample: calibrated probabilities, the conformal
    prediction set and the OOD score (``Uncertainty.predict``, the predictor's own forward pass). Without it,
    only the classifier's raw probabilities: the stricter floor, printed beside."""

    def __init__(self, data_dir: Path, predictor_id: str) -> None:
        os.environ["EXPRSSL_DATA_DIR"] = str(data_dir)
        from app.config import get_settings
        from app.db import orm
        from app.db.session import session_factory
        from app.predictions.service import load_predictor
        from app.storage import get_store

        with session_factory()() as session:
            row = session.get_one(orm.Predictor, predictor_id)
            key, sha256 = row.artifact_key or "", row.artifact_sha256 or ""
        device = resolve_device(get_settings().inference_device)
        self.loaded = load_predictor(get_store().get_bytes(key, sha256=sha256), device)

    def seconds(self, body: bytes, *, full: bool) -> float:
        from pydantic_core import from_json

        from app.predictions.service import sample_results
        from models.genes import align_to_panel

        loaded = self.loaded
        started = time.perf_counter()
        request = from_json(body)  # pydantic-core's parser, as the endpoint's; json.loads is several times slower
        values = np.stack([np.fromiter(s["values"], np.float32, len(s["values"])) for s in request["samples"]])
        aligned, _ = align_to_panel(values, request["genes"], loaded.preprocessor.genes)
        x = loaded.preprocessor.transform(aligned)
        ids = [s["sample_id"] for s in request["samples"]]
        if full:
            out = loaded.uncertainty.predict(loaded.model, x, coverage=0.9, ood_percentile=99.0)
            results = sample_results(ids, loaded.classes, out)
        else:
            results = [{"sample_id": sid, "label": loaded.classes[int(p.argmax())],
                        "probabilities": dict(zip(loaded.classes, map(float, p), strict=True))}
                       for sid, p in zip(ids, loaded.predict_proba(x), strict=True)]
        json.dumps({"results": results})
        return time.perf_counter() - started


def paired(
    url: str, path: str, body: bytes, bare: BarePath, requests: int, auth: dict[str, str], blocks: int = 8
) -> tuple[list[float], list[float], list[float]]:
    """One client's request latencies and the bare path's times (full output, raw probabilities), ``requests``
    of each, taken in alternating blocks (``requests / blocks`` of each in turn), each block after one
    warm-up: every side runs warm, as in a stream of requests, and all see the same drift of a shared machine."""
    http: list[float] = []
    full: list[float] = []
    raw: list[float] = []
    per_block = max(1, requests // blocks)
    with httpx.Client(base_url=url, timeout=120, headers=auth) as client:
        while len(http) < requests:
            n = min(per_block, requests - len(http))
            timed_post(client, path, body)
            http.extend(timed_post(client, path, body) for _ in range(n))
            for times, whole in ((full, True), (raw, False)):
                bare.seconds(body, full=whole)
                times.extend(bare.seconds(body, full=whole) for _ in range(n))
    return http, full, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--train-samples", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=80)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    allocate_as_the_service()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        auth = admin_headers(data_dir)
        server = start_server(data_dir, args.port, UNLIMITED)
        url = f"http://127.0.0.1:{args.port}"
        try:
            wait_until_up(url, server)
            with httpx.Client(base_url=url, timeout=120, headers=auth) as client:
                frame, labels = synthetic_cohort(args.train_samples, args.genes)
                predictor_id = train_predictor(client, frame, labels)
            path = f"/predictors/{predictor_id}/predictions"
            device = resolve_device(os.environ.get("EXPRSSL_INFERENCE_DEVICE", "auto"))  # as the server's
            print(f"{args.genes} genes, fine-tuned SCARF predictor, {args.concurrency} concurrent clients, "
                  f"{args.requests} requests per size, uvicorn on 127.0.0.1, inference on {device}, "
                  f"torch {torch.__version__}\n")
            n = args.concurrency
            print(f"| samples | p50, 1 client (ms) | p50 / p95, {n} clients (ms) | requests/s, {n} clients "
                  "| bare, predictor output (ms) | p50 / bare | bare, raw probabilities (ms) | p50 / bare raw |")
            print("|---|---|---|---|---|---|---|---|")
            bare_path = BarePath(data_dir, predictor_id)
            # Every size's single-client figures first, the concurrent load after: a burst of concurrent
            # requests leaves this server slower for single requests for a while (bench/RESULTS.md), which
            # would otherwise weigh on the next size's single-client figures.
            bodies = {size: request_body(frame, size) for size in args.sizes}
            unloaded = {size: paired(url, path, bodies[size], bare_path, args.requests, auth) for size in args.sizes}
            for size in args.sizes:
                single, full, raw = unloaded[size]
                loaded, rps = http_latencies(url, path, bodies[size], n, args.requests, auth)
                bare, bare_raw = statistics.median(full) * 1000, statistics.median(raw) * 1000
                p50_single = float(np.percentile(single, 50)) * 1000
                p50, p95 = np.percentile(loaded, [50, 95]) * 1000
                print(f"| {size} | {p50_single:.1f} | {p50:.1f} / {p95:.1f} | {rps:.1f} | {bare:.1f} "
                      f"| {p50_single / bare:.2f} | {bare_raw:.1f} | {p50_single / bare_raw:.2f} |", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
