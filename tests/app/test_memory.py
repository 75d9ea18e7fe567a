"""The API process keeps freed C-heap memory for its next requests (app.memory.keep_freed_memory)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]

# In a fresh interpreter (glibc's settings last as long as the process): ``SETUP``, then ten rounds of what a
# request does to the heap, 15 MB allocated (every page touched) and freed; the page faults of each round.
PROBE = """
import json, resource
{setup}
MB = 1024**2
warm = bytearray(6 * MB); del warm  # a block mapped and unmapped on its own: glibc's threshold follows it
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [bytearray(5 * MB) for _ in range(3)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""


def _faults_per_round(setup: str) -> list[int]:
    result = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return list(json.loads(result.stdout.splitlines()[-1]))


PROCESSES = {  # how each kind of process starts (EXPRSSL_HEAP_KEEP_BYTES: its default)
    "the API": "from app.main import create_app; create_app()",
    "a Celery worker": "from worker.tasks import _configure_process; _configure_process()",
}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize("process", sorted(PROCESSES))
def test_the_process_keeps_freed_heap_memory_for_its_next_request(settings: Settings, process: str) -> None:
    glibc_defaults = _faults_per_round("from app.memory import keep_freed_memory; assert not keep_freed_memory(0)")
    kept = _faults_per_round(PROCESSES[process])

    pages = 15 * 1024**2 // 4096
    assert min(glibc_defaults[1:]) > pages * 0.9  # handed back each round, every page faulted in again
    assert max(kept[1:]) < pages * 0.05  # kept: the first round's pages serve the next ones
