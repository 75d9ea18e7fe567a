"""Hostile .h5ad uploads: data kept in other files, and sizes declared but never written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.cohorts import h5ad
from app.config import get_settings

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


# --- sizes declared but never written: a few kB of file, gigabytes once read -----------------------------

HUGE = 2_000_000_000


@pytest.fixture
def small_reads_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test (rather than the machine) if the reader reads any dataset declaring more than 10 MB."""
    read = h5py.Dataset.__getitem__

    def guarded(self: h5py.Dataset, *args: object, **kwargs: object) -> object:
        declared = (self.size or 0) * self.dtype.itemsize
        assert declared <= 10_000_000, f"{self.name} ({self.shape}, {self.dtype}) was read"
        return read(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", guarded)


def declared(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: str) -> None:
    """A dataset of ``shape`` whose chunks are never written: it costs a few hundred bytes on disk."""
    chunk = tuple(min(n, 1 << 16) for n in shape)
    group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunk, compression="gzip")


def huge_index(f: h5py.File, _: Path) -> None:
    _replace(f, "obs/_index")
    declared(f["obs"], "_index", (HUGE,), "S1")


def huge_gene_index(f: h5py.File, _: Path) -> None:
    _replace(f, "var/_index")
    declared(f["var"], "_index", (HUGE,), "S1")


def wide_index(f: h5py.File, _: Path) -> None:  # three names of a gigabyte each
    _replace(f, "obs/_index")
    declared(f["obs"], "_index", (3,), "S1073741824")


def csr(f: h5py.File, indptr: np.ndarray | None = None) -> h5py.Group:
    _replace(f, "X")
    group = f.create_group("X")
    group.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": np.array([3, 2])})
    if indptr is not None:
        group.create_dataset("indptr", data=indptr)
    return group


def huge_indptr(f: h5py.File, _: Path) -> None:
    group = csr(f)
    group.create_dataset("data", data=np.ones(6, np.float32))
    group.create_dataset("indices", data=np.array([0, 1] * 3, np.int32))
    declared(group, "indptr", (HUGE,), "int64")


def huge_data(f: h5py.File, _: Path) -> None:  # indptr consistent with it: one row holding all of them
    group = csr(f, np.array([0, HUGE, HUGE, HUGE], np.int64))
    declared(group, "data", (HUGE,), "float32")
    declared(group, "indices", (HUGE,), "int32")


def categorical(f: h5py.File, codes: tuple[int, ...], categories: tuple[int, ...]) -> None:
    _replace(f, "obs/tissue")
    group = f["obs"].create_group("tissue")
    group.attrs.update({"encoding-type": "categorical", "encoding-version": "0.2.0", "ordered": False})
    declared(group, "codes", codes, "int8")
    declared(group, "categories", categories, "S8")


def huge_categories(f: h5py.File, _: Path) -> None:
    categorical(f, (3,), (HUGE,))


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (huge_index, ("2,000,000,000 samples", "EXPRSSL_MAX_UPLOAD_SAMPLES", "/obs/_index")),
        (huge_gene_index, ("2,000,000,000 genes", "EXPRSSL_MAX_UPLOAD_GENES", "/var/_index")),
        (wide_index, ("/obs/_index declares values of 1,073,741,824 bytes each",)),
        (huge_indptr, ("/X/indptr declares (2000000000,) int64", "has 4 integers")),
        (huge_data, ("/X/data declares 2,000,000,000 values",)),
    ],
)
@pytest.mark.usefixtures("small_reads_only")
def test_a_dataset_declaring_more_than_the_limits_is_refused_unread(
    client: TestClient, tmp_path: Path, build: Build, words: tuple[str, ...]
) -> None:
    content = write_h5ad(tmp_path / "hostile.h5ad", build)
    assert len(content) < 200_000
    refused(client, content, "hostile.h5ad: ", *words)


def huge_codes(f: h5py.File, _: Path) -> None:
    categorical(f, (HUGE,), (1,))


def huge_text_column(f: h5py.File, _: Path) -> None:
    _replace(f, "obs/tissue")
    declared(f["obs"], "tissue", (HUGE,), "S8")


@pytest.mark.parametrize("build", [huge_codes, huge_categories, huge_text_column])
@pytest.mark.usefixtures("small_reads_only")
def test_an_obs_column_longer_than_obs_is_left_unread(client: TestClient, tmp_path: Path, build: Build) -> None:
    response = client.post("/cohorts", files={"expression": ("long.h5ad", write_h5ad(tmp_path / "long.h5ad", build))})
    assert response.status_code == 201, response.text
    assert response.json()["label_columns"] == []


def test_more_obs_columns_than_are_read_as_labels_is_refused(client: TestClient, tmp_path: Path) -> None:
    def many(f: h5py.File, _: Path) -> None:
        f["obs"].attrs["column-order"] = np.array([f"c{i}" for i in range(1001)], dtype="S5")

    refused(client, write_h5ad(tmp_path / "wide.h5ad", many), "obs lists 1,001 columns; at most 1,000 are read")


# --- a matrix within each axis's limit, but not in samples x genes, or not in memory ----------------------


def declared_dense(n_samples: int, n_genes: int) -> Build:
    """An X of unwritten chunks filled with 1 (a few MB of file), with that many obs and var names."""

    def build(f: h5py.File, _: Path) -> None:
        for path in ("X", "obs/_index", "var/_index", "obs/tissue"):
            _replace(f, path)
        f.create_dataset("X", shape=(n_samples, n_genes), dtype="float32", chunks=(1000, 1000), fillvalue=1.0,
                         compression="gzip")
        for part, prefix, n in (("obs", "s", n_samples), ("var", "g", n_genes)):
            names = np.char.add(prefix.encode(), np.arange(n).astype("S6"))
            f[part].create_dataset("_index", data=names, compression="gzip")
        f["obs"].attrs["column-order"] = np.array([], dtype="S1")

    return build


@pytest.fixture
def small_arrays_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if an array of more than 1e8 values is allocated."""

    def small_only(make: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        def made(shape: object, *args: object, **kwargs: object) -> np.ndarray:
            assert np.prod(shape, dtype=np.float64) <= 1e8, f"a {shape} array was allocated before the check"
            return make(shape, *args, **kwargs)
        return made

    monkeypatch.setattr(np, "empty", small_only(np.empty))
    monkeypatch.setattr(np, "zeros", small_only(np.zeros))


@pytest.mark.usefixtures("small_reads_only", "small_arrays_only")
def test_a_matrix_within_each_axis_but_over_the_cells_limit_is_refused_before_it_is_built(
    client: TestClient, tmp_path: Path
) -> None:
    content = write_h5ad(tmp_path / "wide.h5ad", declared_dense(30_000, 100_000))  # 11 GiB once read
    assert len(content) < 5_000_000
    refused(client, content, "hostile.h5ad: 30,000 samples x 100,000 genes", "EXPRSSL_MAX_UPLOAD_CELLS")


def test_a_matrix_the_server_cannot_hold_is_refused_with_its_size(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EXPRSSL_MAX_UPLOAD_CELLS", str(10**10))
    get_settings.cache_clear()
    empty = np.empty

    def out_of_memory(shape: object, *args: object, **kwargs: object) -> np.ndarray:
        if np.prod(shape, dtype=np.float64) > 1e8:  # as numpy raises it where malloc fails, without trying
            raise MemoryError(f"Unable to allocate 37.3 GiB for an array with shape {shape} and data type float32")
        return empty(shape, *args, **kwargs)

    monkeypatch.setattr(np, "empty", out_of_memory)
    content = write_h5ad(tmp_path / "big.h5ad", declared_dense(100_000, 100_000))
    response = client.post("/cohorts", files={"expression": ("big.h5ad", content)})
    assert response.status_code == 413, response.text
    message = response.json()["error"]["message"]
    assert message.startswith("big.h5ad: a 100,000 x 100,000 matrix (37.3 GiB as float32) does not fit")
    assert client.get("/cohorts").json() == []


@pytest.mark.parametrize(
    ("sample_id", "words"),
    [("s" * 201, "is longer than 200 characters"), ("a\x1b[31mb", "holds a control character"),
     ("line\nbreak", "holds a control character")],
)
def test_obs_names_follow_the_same_rules_as_sample_ids_in_text_files(
    client: TestClient, tmp_path: Path, sample_id: str, words: str
) -> None:
    content = write_h5ad(tmp_path / "hostile.h5ad", ids=("s1", sample_id, "s3"))

    message = refused(client, content, "hostile.h5ad: the sample id (obs name) at row 2 ", words)

    assert "\x1b" not in message and "\n" not in message


def test_obs_column_names_follow_the_name_rules(client: TestClient, tmp_path: Path) -> None:
    def escaped_column(f: h5py.File, _: Path) -> None:
        f["obs"].attrs["column-order"] = np.array(["\x1b[31mred"], dtype=h5py.string_dtype())
        f["obs"].create_dataset("\x1b[31mred", data=np.array(["a", "b", "b"], dtype=object), dtype=h5py.string_dtype())

    content = write_h5ad(tmp_path / "hostile.h5ad", escaped_column)

    refused(client, content, "the expression file's h5ad annotations: the phenotype column name '\\x1b[31mred' holds "
                             "a control character")


def test_a_var_name_over_200_characters_is_named_by_its_var_row(client: TestClient, tmp_path: Path) -> None:
    def long_gene(f: h5py.File, _: Path) -> None:
        del f["var/_index"]
        f["var"].create_dataset("_index", data=np.array(["TP53", "G" * 201], dtype=object), dtype=h5py.string_dtype())

    content = write_h5ad(tmp_path / "hostile.h5ad", long_gene)

    message = refused(client, content, "hostile.h5ad: the gene name in var row 2 ")

    assert message.endswith("is longer than 200 characters") and "header" not in message
