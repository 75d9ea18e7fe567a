"""Each process's entry module imports on its own, in a fresh interpreter (no import cycle hides behind the
order in which the test session happened to import things)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", ["worker.tasks", "worker.runner", "app.main", "app.cli", "app.admin.router"])
def test_entry_module_imports_alone(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
