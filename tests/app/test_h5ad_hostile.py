"""Hostile .h5ad uploads: data kept in other files, and sizes declared but never written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.cohorts import h5ad

SECRET = b"SECRET-of-another-lab:" * 12  # 264 bytes, written by the test outside any upload

Build = Callable[[h5py.File, Path], None]


def write_h5ad(path: Path, build: Build | None = None, *, ids: tuple[str, ...] = ("s1", "s2", "s3")) -> bytes:
    """A small AnnData file (3 samples x 2 genes, dense X, a text obs column); ``build`` then adds or replaces
    parts of it; the file's bytes."""
    with h5py.File(path, "w") as f:
        f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        f.create_dataset("X", data=np.arange(len(ids) * 2, dtype=np.float32).reshape(len(ids), 2))
        for part, names in (("obs", ids), ("var", ("TP53", "EGFR"))):
            group = f.create_group(part)
            group.attrs.update({"_index": "_index", "encoding-type": "dataframe", "encoding-version": "0.2.0",
                                "column-order": np.array(["tissue"] if part == "obs" else [], dtype="S6")})
            group.create_dataset("_index", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
        f["obs"].create_dataset("tissue", data=np.array(["lung"] * len(ids), dtype=object),
                                dtype=h5py.string_dtype())
        if build is not None:
            build(f, path.parent)
    return path.read_bytes()


def refused(client: TestClient, content: bytes, *words: str) -> str:
    """Upload ``content``; check it is refused with 422 naming ``words`` and that nothing was stored."""
    response = client.post("/cohorts", files={"expression": ("hostile.h5ad", content)})
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    for word in words:
        assert word in message
    listing = client.get("/cohorts")
    assert listing.json() == []
    for text in (response.text, listing.text):
        assert "SECRET" not in text
    return message


def secret(directory: Path) -> Path:
    path = directory / "secret.txt"
    path.write_bytes(SECRET)
    return path


def other_file(directory: Path) -> Path:
    path = directory / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("names", data=np.array([b"SECRET-1", b"SECRET-2", b"SECRET-3"]))
        f.create_dataset("tissue", data=np.array([b"SECRET-a", b"SECRET-b", b"SECRET-c"]))
    return path


def _replace(f: h5py.File, path: str) -> None:
    del f[path]


def external_index(f: h5py.File, directory: Path) -> None:
    _replace(f, "obs/_index")
    f["obs"].create_dataset("_index", shape=(3,), dtype="S64", external=[(str(secret(directory)), 0, 192)])


def external_unread_part(f: h5py.File, directory: Path) -> None:  # uns is never read, but still refused
    f.create_group("uns").create_dataset("notes", shape=(4,), dtype="S64", external=[(str(secret(directory)), 0, 256)])


def external_link_index(f: h5py.File, directory: Path) -> None:
    _replace(f, "obs/_index")
    f["obs/_index"] = h5py.ExternalLink(str(other_file(directory)), "/names")


def external_link_column(f: h5py.File, directory: Path) -> None:
    _replace(f, "obs/tissue")
    f["obs/tissue"] = h5py.ExternalLink(str(other_file(directory)), "/tissue")


def soft_link_index(f: h5py.File, directory: Path) -> None:
    f["obs"].move("_index", "names")
    f["obs/_index"] = h5py.SoftLink("/obs/names")


def virtual_index(f: h5py.File, directory: Path) -> None:
    _replace(f, "obs/_index")
    layout = h5py.VirtualLayout(shape=(3,), dtype="S8")
    layout[:] = h5py.VirtualSource(str(other_file(directory)), "names", shape=(3,))
    f["obs"].create_virtual_dataset("_index", layout)


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (external_index, ("hostile.h5ad: dataset /obs/_index", "external storage")),
        (external_unread_part, ("dataset /uns/notes", "external storage")),
        (external_link_index, ("/obs/_index is an external link",)),
        (external_link_column, ("/obs/tissue is an external link",)),
        (soft_link_index, ("/obs/_index is a soft",)),
        (virtual_index, ("dataset /obs/_index is a virtual dataset",)),
    ],
)
def test_data_kept_outside_the_upload_is_refused_unread(
    client: TestClient, tmp_path: Path, build: Build, words: tuple[str, ...]
) -> None:
    upload = tmp_path / "upload"
    upload.mkdir()
    refused(client, write_h5ad(upload / "hostile.h5ad", build), *words)


@pytest.mark.parametrize("build", [external_index, external_link_column, virtual_index])
def test_each_read_checks_its_object_even_if_the_walk_missed_it(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build: Build
) -> None:
    monkeypatch.setattr(h5ad, "_refuse_outside_data", lambda handle, filename: None)
    refused(client, write_h5ad(tmp_path / "hostile.h5ad", build), "hostile.h5ad: ")


def test_the_plain_file_these_are_built_from_is_accepted(client: TestClient, tmp_path: Path) -> None:
    response = client.post("/cohorts", files={"expression": ("plain.h5ad", write_h5ad(tmp_path / "plain.h5ad"))})
    assert response.status_code == 201, response.text
    assert response.json()["n_samples"] == 3
