"""Each process's entry module imports on its own, in a fresh interpreter (no import cycle hides behind the
order in which the test session happened to import things)."""

from __future__ import annotations

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


# ``exprssl serve`` up to uvicorn.run, in a fresh interpreter: in the test session, the application's modules
# (and torch, which the settings' device check imports anyway) are there to be frozen whatever serve imports.
SERVE_UNTIL_RUN = """
import gc, sys
import uvicorn
from app import cli

def run(app, **_):
    main = sys.modules.get("app.main")  # None unless serve imported the application before its freeze
    watched = [sys.modules["torch"].nn.Module.__init__, *([main.create_app] if main else [])]
    walked = main is None or any(o is w for o in gc.get_objects() for w in watched)
    print("serving", app, gc.get_freeze_count(), walked)

uvicorn.run = run
cli.serve("127.0.0.1", 0)
"""


def test_serve_freezes_the_objects_of_its_start_up_before_it_serves(settings: Settings) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SERVE_UNTIL_RUN], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, app, frozen, walked = result.stdout.splitlines()[-1].split()
    assert app == "app.main:create_app"
    assert int(frozen) > 100_000
    assert walked == "False"  # the application's modules and torch are out of the collector's walks
