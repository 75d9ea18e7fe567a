"""Each process's entry module imports on its own, in a fresh interpreter (no import cycle hides behind the
order in which the test session happened to import things)."""

from __future__ import annotations

import logging.config
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from uvicorn.config import LOGGING_CONFIG

from app.access_log import redact_access_log
from app.config import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", ["worker.tasks", "worker.runner", "app.main", "app.cli", "app.admin.router"])
def test_entry_module_imports_alone(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_served_access_log_leaves_out_keys_sent_in_a_query_string(capsys: pytest.CaptureFixture[str]) -> None:
    logging.config.dictConfig(LOGGING_CONFIG)  # as uvicorn does before it calls create_app, which redacts
    redact_access_log()
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_compose_api_command_leaves_keys_out_of_its_access_log(settings: Settings) -> None:
    """docker-compose.yml serves the API with ``uvicorn app.main:create_app --factory``, uvicorn's own logging
    configuration and not ``exprssl serve``'s: its access log must redact a key sent in a query string too."""
    port, secret = _free_port(), "exs_ab12_supersecretvalue"
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1", "--port",
         str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline, status = time.monotonic() + 240, None
        while status is None and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    pass
                url = f"http://127.0.0.1:{port}/me?limit=5&api_key={secret}"
                urllib.request.urlopen(url, timeout=10)
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                time.sleep(0.5)
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=60)

    assert status == 401, output[-3000:]
    assert secret not in output
    assert "GET /me?limit=5&api_key=[redacted] HTTP/1.1" in output
