"""What the benchmarks share: an API key for the server they start on a temporary data folder, and the C heap
kept as exprssl's own processes keep it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def allocate_as_the_service() -> None:
    """Keep this process's freed C heap as exprssl's API and workers do (EXPRSSL_HEAP_KEEP_BYTES): a bare path or
    a bare training loop measured here must not pay page faults that the service no longer pays."""
    from app.config import Settings
    from app.memory import keep_freed_memory

    keep_freed_memory(Settings().heap_keep_bytes)  # not get_settings(): its cache would outlive a data folder


def admin_headers(data_dir: Path, tree: Path = ROOT) -> dict[str, str]:
    """Create lab ``bench`` in ``data_dir``'s registry (as ``exprssl admin create-lab`` does, with the code of the
    source tree ``tree``, which also migrates the registry); its key's header.

    Run before the server starts, so that the server's first start finds a lab and creates no other.
    """
    env = {**os.environ, "EXPRSSL_DATA_DIR": str(data_dir)}
    env.pop("EXPRSSL_DATABASE_URL", None)
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "admin", "create-lab", "bench", "--admin", "bench"],
        env=env, cwd=tree, check=True, capture_output=True, text=True,
    ).stdout
    key = next(word for word in out.split() if word.startswith("exs_"))
    return {"Authorization": f"Bearer {key}"}


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
