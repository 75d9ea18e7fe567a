"""Browser tests: the app served by uvicorn in a background thread, driven by Debian's headless Chromium.

Selenium gets explicit paths to chromium and chromedriver, so Selenium Manager never downloads anything.
Without them the tests skip, unless EXPRSSL_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

from app.config import Settings
from tests.conftest import LabKey

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1000",
)


@dataclass(frozen=True)
class LiveServer:
    """The app at ``url`` with lab A, whose admin's key is ``lab.key``."""

    url: str
    lab: LabKey
    settings: Settings

    def api(self) -> httpx.Client:
        """A REST client carrying lab A's admin key."""
        return httpx.Client(base_url=self.url, headers=self.lab.headers, timeout=60)


def _unavailable(reason: str) -> None:
    if os.environ.get("EXPRSSL_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (EXPRSSL_REQUIRE_SERVICES=1: the browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium for the whole session; each test logs in to its own server."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        _unavailable(f"{' and '.join(missing)} missing: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (*CHROME_ARGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def live(settings: Settings, lab_a: LabKey) -> Iterator[LiveServer]:
    """The app (with its in-process worker) served on a free local port for one test."""
    from app.main import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(), log_config=None, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", lab_a, settings)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
