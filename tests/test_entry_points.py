"""Each process's entry module imports on its own, in a fresh interpreter (no import cycle hides behind the
order in which the test session happened to import things)."""

from __future__ import annotations

import gc
import logging.config
import subprocess
import sys
from pathlib import Path

import pytest

from app.access_log import uvicorn_log_config
from app.config import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", ["worker.tasks", "worker.runner", "app.main", "app.cli", "app.admin.router"])
def test_entry_module_imports_alone(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_served_access_log_leaves_out_keys_sent_in_a_query_string(capsys: pytest.CaptureFixture[str]) -> None:
    logging.config.dictConfig(uvicorn_log_config())
    access = logging.getLogger("uvicorn.access")
    secret = "exs_ab12_supersecretvalue"

    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET",
                f"/cohorts?limit=5&api_key={secret}&X-Token={secret}&offset=0", "1.1", 401)

    line = capsys.readouterr().out
    assert secret not in line
    assert "/cohorts?limit=5&api_key=[redacted]&X-Token=[redacted]&offset=0 HTTP/1.1" in line and "401" in line


def test_serve_freezes_the_objects_of_its_start_up_before_it_serves(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    import uvicorn

    from app import cli

    seen: dict[str, object] = {}

    def run(app: str, **_: object) -> None:  # instead of serving: what the collector would walk by then
        seen["app"] = app
        seen["frozen"] = gc.get_freeze_count()
        seen["torch frozen"] = not any(o is torch.nn.Module.__init__ for o in gc.get_objects())

    monkeypatch.setattr(uvicorn, "run", run)
    gc.unfreeze()
    try:
        cli.serve("127.0.0.1", 0)
    finally:
        gc.unfreeze()  # the test session's objects stay collectable
    assert seen["app"] == "app.main:create_app"
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 100_000
    assert seen["torch frozen"]
