"""The benchmarks' helpers for the server they start."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bench import service


class Running:
    returncode = None

    def poll(self) -> None:
        return None


def test_wait_until_up_pauses_between_failed_health_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([httpx.ConnectError("refused"), 500, 503, 200])
    events: list[str] = []

    def get(url: str, **_: Any) -> httpx.Response:
        answer = next(answers)
        events.append(f"get {answer}")
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)

    monkeypatch.setattr(service.httpx, "get", get)
    monkeypatch.setattr(service.time, "sleep", lambda seconds: events.append("sleep"))
    server: Any = Running()
    service.wait_until_up("http://127.0.0.1:1", server)
    assert events == ["get refused", "sleep", "get 500", "sleep", "get 503", "sleep", "get 200"]
