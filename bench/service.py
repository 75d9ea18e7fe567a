"""What the benchmarks share: the server they start on a temporary data folder, an API key for it, and the C
heap kept as exprssl's own processes keep it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def allocate_as_the_service() -> None:
    """Keep this process's freed C heap as exprssl's API and workers do (EXPRSSL_HEAP_KEEP_BYTES): a bare path or
    a bare training loop measured here must not pay page faults that the service no longer pays."""
    from app.config import Settings
    from app.memory import keep_freed_memory

    keep_freed_memory(Settings().heap_keep_bytes)  # not get_settings(): its cache would outlive a data folder


# Settings that would point a benchmark's server at state outside its temporary data folder.
ELSEWHERE = ("EXPRSSL_BROKER_URL", "EXPRSSL_DATABASE_URL", "EXPRSSL_ARTIFACT_DIR", "EXPRSSL_RATE_LIMIT_STORAGE")


def _on_its_own(data_dir: Path, settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for exprssl on ``data_dir`` alone (none of :data:`ELSEWHERE`), ``settings``
    on top."""
    env = {name: value for name, value in os.environ.items() if name not in ELSEWHERE}
    return {**env, **(settings or {}), "EXPRSSL_DATA_DIR": str(data_dir)}


def admin_headers(data_dir: Path, tree: Path = ROOT) -> dict[str, str]:
    """Create lab ``bench`` in ``data_dir``'s registry (as ``exprssl admin create-lab`` does, with the code of the
    source tree ``tree``, which also migrates the registry); its key's header.

    Run before the server starts, so that the server's first start finds a lab and creates no other.
    """
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "admin", "create-lab", "bench", "--admin", "bench"],
        env=_on_its_own(data_dir), cwd=tree, check=True, capture_output=True, text=True,
    ).stdout
    key = next(word for word in out.split() if word.startswith("exs_"))
    return {"Authorization": f"Bearer {key}"}


def start_server(
    data_dir: Path,
    port: int,
    settings: Mapping[str, str] | None = None,
    *,
    tree: Path = ROOT,
    command: Sequence[str] = ("-m", "app.cli", "serve"),
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """The service on ``data_dir`` and ``port`` in the embedded default (this process's environment without a
    broker, database, artifact folder or rate-limit storage of its own), ``settings`` on top: ``exprssl
    serve`` unless ``command`` (arguments to this Python) says otherwise, run from the source tree ``tree``
    (this checkout unless given: another is, say, a ``git worktree`` of another commit); its output to
    ``log``, or discarded."""
    env = {**_on_its_own(data_dir, settings), "EXPRSSL_PORT": str(port)}
    if log is None:
        return subprocess.Popen([sys.executable, *command], env=env, cwd=tree, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    with log.open("wb") as out:  # the server writes to its own copy of the descriptor
        return subprocess.Popen([sys.executable, *command], env=env, cwd=tree, stdout=out, stderr=out)


def wait_until_up(url: str, server: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Return once the server at ``url`` answers ``/health``; RuntimeError if its process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)  # after an answer other than 200 too: not a busy loop while /health fails
    raise TimeoutError("the server did not come up")
