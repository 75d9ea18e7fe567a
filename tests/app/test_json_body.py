"""app.inputs.json_body: one-pass parse and validation, large bodies off the event loop."""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio
import pytest
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, model_validator

from app.inputs import PARSE_ON_THE_LOOP_BYTES, json_body

VALIDATED_ON: list[int] = []  # the thread each Samples was validated on


class Samples(BaseModel):
    values: list[float]

    @model_validator(mode="after")
    def _seen(self) -> Samples:
        VALIDATED_ON.append(threading.get_ident())
        return self


def _request(body: bytes) -> Request:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request({"type": "http", "method": "POST", "headers": []}, receive)


def test_a_large_body_is_parsed_on_a_worker_thread_and_a_small_one_on_the_loop() -> None:
    parse = json_body(Samples)
    small = json.dumps({"values": [1.5] * 10}).encode()
    large = json.dumps({"values": [1.5] * 20_000}).encode()
    assert len(small) < PARSE_ON_THE_LOOP_BYTES <= len(large)

    async def main() -> tuple[int, list[Samples]]:
        return threading.get_ident(), [await parse(_request(body)) for body in (small, large)]

    VALIDATED_ON.clear()
    loop_thread, parsed = anyio.run(main)

    assert [len(p.values) for p in parsed] == [10, 20_000] and parsed[1].values[-1] == 1.5
    assert VALIDATED_ON[0] == loop_thread and VALIDATED_ON[1] != loop_thread


@pytest.mark.parametrize("size", [10, 20_000])
def test_an_invalid_body_keeps_fastapis_error_shape_wherever_it_is_parsed(size: int) -> None:
    body = json.dumps({"values": [1.5] * (size - 1) + ["x"]}).encode()

    with pytest.raises(RequestValidationError) as refused:
        anyio.run(json_body(Samples), _request(body))

    (error,) = refused.value.errors()
    assert error["loc"] == ("body", "values", size - 1) and error["type"] == "float_parsing"
