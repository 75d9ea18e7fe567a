"""exprssl's processes keep freed C-heap memory for their next requests (app.memory.keep_freed_memory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.memory import KEEP_MAX, keep_freed_memory

ROOT = Path(__file__).resolve().parents[2]

# In a fresh interpreter (glibc's settings last as long as the process): ``setup``, then in each of four threads
# in turn (the API's requests run on a thread pool) ten rounds of what a request does to the heap: 15 MB
# allocated, every page touched, and freed. Prints each thread's page faults per round.
PROBE = """
import json, resource, threading
{setup}
MB = 1024**2

def rounds(out):
    warm = bytearray(6 * MB); del warm  # a block mapped and unmapped on its own: glibc's threshold follows it
    faults = []
    for _ in range(10):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        blocks = [bytearray(5 * MB) for _ in range(3)]
        del blocks
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    out.append(faults)

out = []
for _ in range(4):  # one after another: together they could pass an arena's 64 MiB heap, which glibc unmaps
    thread = threading.Thread(target=rounds, args=(out,))
    thread.start()
    thread.join()
print(json.dumps(out))
"""
STARTS = {  # how each kind of process starts, with EXPRSSL_HEAP_KEEP_BYTES at its default
    "glibc's defaults": "from app.memory import keep_freed_memory; assert not keep_freed_memory(0)",
    "the API": "from app.main import create_app; create_app()",
    # Celery's signal at a worker's start, and in each process of a prefork pool.
    "a Celery worker": "import worker.tasks; from celery.signals import worker_init; worker_init.send(sender=None)",
    "a pool process": "import worker.tasks; from celery.signals import worker_process_init as s; s.send(sender=None)",
}


def _faults_after_the_first_round(setup: str) -> int:
    """The most page faults any thread took in a round after its first."""
    env = {name: value for name, value in os.environ.items() if name != "EXPRSSL_HEAP_KEEP_BYTES"}
    result = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return max(max(faults[1:]) for faults in json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_every_process_keeps_freed_heap_memory_for_its_next_request(settings: Settings) -> None:
    faults = {start: _faults_after_the_first_round(setup) for start, setup in STARTS.items()}

    pages = 15 * 1024**2 // 4096
    assert faults.pop("glibc's defaults") > pages * 0.9  # handed back each round, every page faulted in again
    assert all(n < pages * 0.05 for n in faults.values()), faults  # kept: the first round's pages serve the next


def test_a_heap_to_keep_beyond_what_glibc_takes_is_refused() -> None:
    # mallopt takes a C int: 4 GiB would have become 0, handing every freed page back.
    with pytest.raises(ValidationError, match="heap_keep_bytes"):
        Settings(heap_keep_bytes=4 * 1024**3)
    with pytest.raises(ValueError, match="between 0 and 2147483647"):
        keep_freed_memory(KEEP_MAX + 1)
