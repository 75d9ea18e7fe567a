"""Receive a multipart/form-data request as it streams in: file parts go straight to staging files.

Starlette's own form parsing spools each file to a temporary file outside the artifact store, with no
size limit, before the endpoint runs; the upload would then be copied again. Here the body is read once:
file parts are written to the store's staging folder (the same file system, so nothing is copied twice),
text parts are kept up to a few KB, and the request is refused with 413 as soon as it exceeds the
configured limit (at once, when its Content-Length says so).
"""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.errors import InvalidInput, PayloadTooLarge

MAX_TEXT_BYTES = 64 * 1024
_WRITE_BUFFER = 4 << 20


@dataclass
class StagedFile:
    """An uploaded file as written to a staging file: its client-side name, path and size."""

    filename: str
    path: Path
    size: int = 0


@dataclass
class StagedForm:
    """The parts of a multipart request: text fields and staged files, by field name."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, StagedFile] = field(default_factory=dict)

    def discard(self) -> None:
        """Delete the staged files."""
        for staged in self.files.values():
            staged.path.unlink(missing_ok=True)


class _Receiver:
    """python-multipart callbacks that stage file parts and collect text parts."""

    def __init__(self, staging: Path, file_fields: frozenset[str], text_fields: frozenset[str]) -> None:
        self.staging, self.file_fields, self.text_fields = staging, file_fields, text_fields
        self.form = StagedForm()
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name: str | None = None
        self._text: bytearray | None = None
        self._file: BinaryIO | None = None
        self._staged: StagedFile | None = None

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self._disposition, self._name, self._text, self._file, self._staged = b"", None, None, None, None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise InvalidInput("a multipart part lacks the name in its Content-Disposition header")
        name = _decode(options[b"name"])
        if name in self.form.fields or name in self.form.files:
            raise InvalidInput(f"{name}: given more than once")
        self._name = name
        if name not in self.file_fields and name not in self.text_fields:
            raise InvalidInput(_unknown_field(name, self.file_fields | self.text_fields))
        if name in self.file_fields:
            filename = Path(_decode(options.get(b"filename", b""))).name  # never a client-chosen path
            fd, path = tempfile.mkstemp(dir=self.staging, suffix=".upload")
            self._file = os.fdopen(fd, "wb", buffering=_WRITE_BUFFER)
            self._staged = StagedFile(filename=filename, path=Path(path))
            self.form.files[name] = self._staged
        elif name in self.text_fields:
            self._text = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None and self._staged is not None:
            self._file.write(data[start:end])
            self._staged.size += end - start
        elif self._text is not None:
            self._text += data[start:end]
            if len(self._text) > MAX_TEXT_BYTES:
                raise InvalidInput(f"{self._name}: longer than {MAX_TEXT_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._text is not None and self._name is not None:
            try:
                self.form.fields[self._name] = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"{self._name}: not UTF-8 text") from None
            self._text = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _unknown_field(name: str, known: frozenset[str]) -> str:
    """Why a part named ``name`` is refused: a field dropped unread (a misspelt ``group_column``, say) would
    silently change what is stored, such as splits no longer kept apart by patient."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{name!r} is not a field of this upload (expected {', '.join(sorted(known))}){hint}"


async def receive_form(
    request: Request, *, staging: Path, limit: int, file_fields: Iterable[str], text_fields: Iterable[str]
) -> StagedForm:
    """Stream a multipart body into a :class:`StagedForm`; a part with any other name is refused.

    Raises:
        PayloadTooLarge: The body is longer than ``limit`` bytes.
        InvalidInput: The body is not well-formed multipart/form-data.
    """
    media_type, params = parse_options_header(request.headers.get("content-type", ""))
    if media_type != b"multipart/form-data":
        raise InvalidInput("the upload must be sent as multipart/form-data")
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidInput("the multipart/form-data Content-Type header lacks its boundary")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(_too_large(int(declared), limit))
    receiver = _Receiver(staging, frozenset(file_fields), frozenset(text_fields))
    received = 0
    try:
        parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(_too_large(received, limit, streaming=True))
            parser.write(chunk)
        parser.finalize()
        if receiver._name is not None and (receiver._file is not None or receiver._text is not None):
            raise InvalidInput("the multipart body ends inside a part (truncated upload?)")
    except FormParserError as exc:
        _abandon(receiver)
        raise InvalidInput(f"malformed multipart/form-data body: {exc}") from None
    except BaseException:  # too large, a client that went away, a full disk: nothing may stay behind
        _abandon(receiver)
        raise
    return receiver.form


def _abandon(receiver: _Receiver) -> None:
    receiver.close()
    receiver.form.discard()


def _too_large(size: int, limit: int, *, streaming: bool = False) -> str:
    got = f"more than {limit:,}" if streaming else f"{size:,}"
    return (
        f"the upload is {got} bytes; the limit is {limit:,} bytes ({limit / 1024**3:.2f} GiB), "
        "set by EXPRSSL_MAX_UPLOAD_BYTES"
    )


def _decode(value: bytes | str) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")
