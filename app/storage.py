"""Artifact store: blobs by key, written atomically, never overwritten, verified by sha256 on read."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Protocol

from app.config import get_settings
from app.errors import ExprsslError

log = logging.getLogger(__name__)


class ArtifactIntegrityError(ExprsslError):
    """A stored blob is missing or no longer matches its recorded checksum."""

    status_code = 500
    code = "artifact_integrity"


class ArtifactStore(Protocol):
    def put_bytes(self, key: str, data: bytes) -> str: ...
    def put_file(self, key: str, source: Path) -> str: ...
    def get_bytes(self, key: str, *, sha256: str) -> bytes: ...
    def local_path(self, key: str, *, sha256: str | None = None) -> Path: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def staging_dir(self) -> Path: ...
    def sweep_staging(self, older_than_s: float) -> int: ...


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class LocalArtifactStore:
    """Artifacts as files under one root folder; keys are relative POSIX paths."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"artifact key escapes the store: {key!r}")
        return path

    def staging_dir(self) -> Path:
        """A folder on the same file system as the store, so a rename from it is atomic."""
        staging = self.root / ".staging"
        staging.mkdir(exist_ok=True)
        return staging

    def sweep_staging(self, older_than_s: float) -> int:
        """Remove staged files not touched for ``older_than_s`` seconds (left by a process killed during an
        upload or a write); return how many. Younger ones may belong to a write in progress elsewhere."""
        cutoff, removed = time.time() - older_than_s, 0
        for path in self.staging_dir().iterdir():
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # finished (moved into the store) meanwhile
                continue
        return removed

    def put_bytes(self, key: str, data: bytes) -> str:
        """Store ``data`` under a new ``key``; return its sha256."""
        fd, tmp = tempfile.mkstemp(dir=self.staging_dir())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return self.put_file(key, Path(tmp))

    def put_file(self, key: str, source: Path) -> str:
        """Move ``source`` into the store under a new ``key``; return its sha256."""
        target = self._path(key)
        staging = self.staging_dir().resolve()
        if source.parent.resolve() != staging:
            fd, tmp = tempfile.mkstemp(dir=staging)
            os.close(fd)
            shutil.copyfile(source, tmp)
            source = Path(tmp)
        try:
            digest = sha256_file(source)
            self._link(source, target)
        except FileExistsError:
            raise FileExistsError(f"artifact {key!r} exists and is never overwritten") from None
        finally:
            source.unlink(missing_ok=True)
        return digest

    def _link(self, source: Path, target: Path, attempts: int = 3) -> None:
        """Hard-link ``source`` as ``target``: fails if it exists (atomic, and never overwrites). The folder
        is made again if a deletion removed it as empty between its making and the link."""
        for attempt in range(attempts):
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
                return
            except FileNotFoundError:
                if attempt == attempts - 1 or not source.exists():
                    raise

    def local_path(self, key: str, *, sha256: str | None = None) -> Path:
        """Path of a stored blob, checked against ``sha256`` when given."""
        path = self._path(key)
        if not path.is_file():
            raise ArtifactIntegrityError(f"artifact {key!r} is missing from the store")
        if sha256 is not None and sha256_file(path) != sha256:
            raise ArtifactIntegrityError(f"artifact {key!r} does not match its recorded sha256")
        return path

    def get_bytes(self, key: str, *, sha256: str) -> bytes:
        data = self.local_path(key).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ArtifactIntegrityError(f"artifact {key!r} does not match its recorded sha256")
        return data

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Delete ``key``, then each folder above it that is left empty (a folder holding anything stays)."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        root = self.root.resolve()
        for folder in path.parents:
            if folder == root or root not in folder.parents:
                break
            try:
                folder.rmdir()  # refused unless empty
            except FileNotFoundError:
                continue  # removed meanwhile by another deletion: look at the one above
            except OSError:
                break


def delete_unreferenced(store: ArtifactStore, key: str, what: str) -> None:
    """Delete ``key``, a blob no row points at (``what`` says whose, for the log); a failure costs only disk
    space, so it is logged and never raised (it may run after a commit)."""
    try:
        store.delete(key)
    except OSError as exc:
        log.warning("could not delete %s, %s: %s", key, what, exc)


def get_store() -> ArtifactStore:
    """The configured store (a local folder for now)."""
    return LocalArtifactStore(get_settings().resolved_artifact_dir)
