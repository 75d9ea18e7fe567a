"""Where an inline prediction request spends its time on the server, step by step, and the collector's pauses.

Starts ``exprssl serve`` (uvicorn, embedded default, a temporary data folder) in a child process of this
script that wraps the request's steps in timers before it serves: the body's arrival, its parse, the key
check, the rate limit, the predictor's row, alignment, preprocessing, the classifier with calibration, sets
and OOD scores, the per-sample results, drift, storing the prediction, rendering the response; and every
cyclic garbage collection (``gc.callbacks``). One client then sends ``--requests`` predictions of
``--samples`` inline samples, one at a time, after a warm-up, beside the bare path of
``bench/predict_latency.py`` in alternating blocks. Prints each step's median, the collections by generation
(how many, median and longest pause), what a full collection costs at the end of the run, and the request's
p50 beside the bare path's.

Usage: ``.venv/bin/python bench/request_breakdown.py [--samples 100 --genes 2000 --requests 200]``.
"""

from __future__ import annotations

import argparse
import collections
import contextvars
import gc
import inspect
import json
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.predict_latency import (  # noqa: E402
    UNLIMITED,
    BarePath,
    request_body,
    synthetic_cohort,
    timed_post,
    train_predictor,
)
from bench.service import admin_headers, allocate_as_the_service, start_server, wait_until_up  # noqa: E402

PARSE, SERVICE = "parse the body (float32 vectors)", "the whole service call"
STEPS = {  # label: (module, attribute path) of what is timed; classes' methods by "Class.method"
    PARSE: ("app.predictions.schemas", "PredictionCreate.model_validate_json"),
    "key check": ("app.auth.service", "authenticate"),
    "rate limit": ("app.ratelimit", "hit"),
    "the predictor's row": ("app.db.repository", "predictor_to_predict"),
    "alignment and input checks": ("app.predictions.service", "model_input"),
    "preprocessing": ("app.predictions.service", "_model_inputs"),
    "classifier, calibration, sets, OOD": ("models.uncertainty", "Uncertainty.predict"),
    "per-sample results": ("app.predictions.service", "sample_results"),
    "drift": ("app.predictions.service", "_drift"),
    "storing (insert, commit)": ("app.predictions.service", "_store"),
    SERVICE: ("app.predictions.service", "predict"),
    "rendering the response": ("app.predictions.schemas", "PredictionRead.model_dump_json"),
}


# Within a prediction request (and the worker threads it hands work to): when each timed step first began and
# last ended, by label; None elsewhere (the training before them and the other requests are not timed).
MARKS: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("marks", default=None)
WARM_UP = 20  # requests before the timed ones
ASKED = "until the app first asks for the body (from the request's start)"
ARRIVAL = "the body's arrival (from the request's start)"
BEFORE_PARSE = "after the body, until its parse starts"
BEFORE_SERVICE = "after the parse, until the service call starts"
AFTER_SERVICE = "after the service call, until the response starts"
AFTER = "after the body, until the response starts"
SENT = "the response sent (from the request's start)"
GAPS = (ASKED, ARRIVAL, BEFORE_PARSE, BEFORE_SERVICE, AFTER_SERVICE, AFTER, SENT)


def _minor_faults() -> int:
    """Page faults of this thread so far that read no disk: pages the C library had handed back faulting in."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def _wrap(times: dict[str, list[float]], label: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        marks = MARKS.get()
        if marks is None:
            return function(*args, **kwargs)
        started, cpu, faults = time.perf_counter(), time.thread_time(), _minor_faults()
        marks.setdefault(f"{label} began", started)
        try:
            return function(*args, **kwargs)
        finally:
            marks[f"{label} ended"] = ended = time.perf_counter()
            times[label].append(ended - started)
            times[f"{label} (CPU)"].append(time.thread_time() - cpu)
            times[f"{label} (faults)"].append(_minor_faults() - faults)

    return timed


def _instrument(times: dict[str, list[float]]) -> None:
    import importlib

    for label, (module_name, path) in STEPS.items():
        owner: Any = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        original = inspect.getattr_static(owner, name)
        if isinstance(original, classmethod):
            setattr(owner, name, classmethod(_wrap(times, label, original.__func__)))
        else:
            setattr(owner, name, _wrap(times, label, original))


def _timed_asgi(times: dict[str, list[float]], factory: Callable[[], Any]) -> Callable[[], Any]:
    """The app ``factory`` makes, timed from a POST's start to its complete body, then to its response."""

    def create() -> Any:
        inner = factory()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/predictions"):
                return await inner(scope, receive, send)
            marks = {"start": time.perf_counter()}
            MARKS.set(marks)

            async def timed_receive() -> Any:
                marks.setdefault("asked", time.perf_counter())
                message = await receive()
                if not message.get("more_body"):
                    marks.setdefault("arrived", time.perf_counter())
                return message

            async def timed_send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    now = time.perf_counter()
                    stamps = {**marks, "now": now}
                    for label, (first, last) in {
                        ASKED: ("start", "asked"), ARRIVAL: ("start", "arrived"),
                        BEFORE_PARSE: ("arrived", f"{PARSE} began"),
                        BEFORE_SERVICE: (f"{PARSE} ended", f"{SERVICE} began"),
                        AFTER_SERVICE: (f"{SERVICE} ended", "now"), AFTER: ("arrived", "now"),
                    }.items():
                        if first in stamps and last in stamps:  # a refused request leaves some steps out
                            times[label].append(stamps[last] - stamps[first])
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    times[SENT].append(time.perf_counter() - marks["start"])
                    times["response bytes"].append(len(message.get("body", b"")))

            await inner(scope, timed_receive, timed_send)

        return app

    return create


def serve_instrumented(figures: Path) -> None:
    """The child: ``exprssl serve`` with timers; writes their figures to ``figures`` when terminated."""
    times: dict[str, list[float]] = collections.defaultdict(list)
    pauses: dict[int, list[float]] = collections.defaultdict(list)
    started = [0.0]

    def on_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif len(times[SERVICE]) > WARM_UP:  # since the timed requests began
            pauses[info["generation"]].append(time.perf_counter() - started[0])

    def write(*_: object) -> None:
        gc.callbacks.remove(on_collection)
        started = time.perf_counter()  # what any full collection costs in the heap the run left
        gc.collect()
        full = time.perf_counter() - started
        figures.write_text(json.dumps({"times": times, "pauses": pauses, "full": full, "frozen": gc.get_freeze_count(),
                                       "tracked": len(gc.get_objects())}))
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, write)  # uvicorn hands it on once it has shut down
    import app.main
    from app import cli

    _instrument(times)
    app.main.create_app = _timed_asgi(times, app.main.create_app)  # type: ignore[assignment]
    gc.callbacks.append(on_collection)
    cli.main(["serve"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the child's mode: where its figures go
    args = parser.parse_args()
    if args.serve:
        serve_instrumented(args.serve)
        return
    allocate_as_the_service()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, figures = Path(tmp), Path(tmp) / "figures.json"
        auth = admin_headers(data_dir)
        server = start_server(data_dir, args.port, UNLIMITED, command=(__file__, "--serve", str(figures)))
        try:
            url = f"http://127.0.0.1:{args.port}"
            wait_until_up(url, server)
            with httpx.Client(base_url=url, timeout=120, headers=auth) as client:
                frame, labels = synthetic_cohort(300, args.genes)
                predictor_id = train_predictor(client, frame, labels)
                path, body = f"/predictors/{predictor_id}/predictions", request_body(frame, args.samples)
                bare = BarePath(data_dir, predictor_id)
                http, floor = [], []
                for _ in range(WARM_UP):
                    timed_post(client, path, body)
                    bare.seconds(body, full=True)
                while len(http) < args.requests:
                    http.extend(timed_post(client, path, body) for _ in range(10))
                    floor.extend(bare.seconds(body, full=True) for _ in range(10))
        finally:
            server.terminate()
            server.wait(timeout=60)
        report(json.loads(figures.read_text()), http, floor, args)


def report(figures: dict[str, Any], http: list[float], floor: list[float], args: argparse.Namespace) -> None:
    print(f"{args.samples} inline samples x {args.genes} genes, {args.requests} requests, one client\n")
    print("| step (server) | median (ms) | its thread's CPU time, median (ms) | its thread's page faults, median |\n"
          "|---|---|---|---|")
    for label in (ASKED, ARRIVAL, *STEPS, *GAPS[2:]):
        wall, cpu = (_median_ms(figures["times"].get(name, [])) for name in (label, f"{label} (CPU)"))
        faults = figures["times"].get(f"{label} (faults)")
        print(f"| {label} | {wall} | {cpu} | {statistics.median(faults[WARM_UP:] or faults) if faults else ''} |")
    print("\n| collections during the run | count | median pause (ms) | longest (ms) |\n|---|---|---|---|")
    for generation, values in sorted(figures["pauses"].items(), key=lambda item: int(item[0])):
        print(f"| generation {generation} | {len(values)} | {statistics.median(values) * 1000:.2f} "
              f"| {max(values) * 1000:.2f} |")
    print(f"\nA full collection at the end of the run: {figures['full'] * 1000:.1f} ms over the "
          f"{figures['tracked']:,} objects the collector walks ({figures['frozen']:,} frozen at start-up)")
    p50, bare = statistics.median(http) * 1000, statistics.median(floor) * 1000
    sent = statistics.median(figures["times"][SENT][WARM_UP:]) * 1000
    size = statistics.median(figures["times"]["response bytes"])
    print(f"\np50 over HTTP {p50:.1f} ms, bare path {bare:.1f} ms, ratio {p50 / bare:.2f}; outside the application "
          f"(the connection, the request's headers, the client): {p50 - sent:.1f} ms; response {size / 1024:.0f} KiB")


def _median_ms(values: list[float]) -> str:
    """The median of the timed requests' ``values`` (of all, if there were only warm-up ones) in ms; "" for none."""
    return f"{statistics.median(values[WARM_UP:] or values) * 1000:.2f}" if values else ""


if __name__ == "__main__":
    main()
