"""Read AnnData ``.h5ad`` files with h5py: X (dense, CSR or CSC) as samples x genes, obs and var names.

Follows the AnnData on-disk format (anndata >= 0.7, ``encoding-type`` attributes): ``X`` is a dataset or
a ``csr_matrix``/``csc_matrix`` group (``data``, ``indices``, ``indptr``, ``shape``); ``obs``/``var`` are
``dataframe`` groups whose ``_index`` attribute names the index dataset. Text and categorical obs
columns come back as per-sample annotations, usable as labels. The dense matrix is filled block by
block, so memory stays about one float32 matrix plus the sparse arrays.

HDF5 can keep a dataset's bytes in other files (external storage, virtual datasets) and link to objects in
other files (external links): read on the server, those would turn any file it can open into an upload.
The whole file is walked before anything is read, and any of them refuses the upload; soft links too, which
anndata never writes. Each object the reader opens is checked again on the way (HDF5's link and file prefix
settings do not stop absolute paths, so opening the file differently is no defence).

A dataset's declared size costs nothing to store (unwritten chunks read as the fill value), so every
dataset's shape and value width are checked against the limits, and against what obs and var give, before
it is read.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from app.cohorts.names import CONTROL, MAX_LABEL_COLUMNS, NO_CONTROL, brief, check_names, clip, listing
from app.cohorts.parsing import (
    NO_LIMITS,
    SAMPLES_AS_ROWS,
    ExpressionMatrix,
    ParsedExpression,
    SizeLimits,
    check_finite,
    text_annotations,
)
from app.db.orm import NAME_LENGTH
from app.errors import InvalidInput, PayloadTooLarge

_BLOCK_CELLS = 4_000_000
_MAX_VALUE_BYTES = 1024  # one fixed-width name or label; ids and labels are stored at most 200 characters


def read_h5ad(
    path: Path, filename: str, *, orientation: str = "auto", limits: SizeLimits = NO_LIMITS
) -> ParsedExpression:
    """Read ``X`` with obs names as sample ids and var names as genes; more than ``limits`` is refused before
    ``X`` is read."""
    if orientation not in ("auto", SAMPLES_AS_ROWS):
        raise InvalidInput(
            f"{filename}: .h5ad files hold samples (obs) as rows; orientation {orientation!r} does not apply"
        )
    try:
        handle = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{filename}: not a readable HDF5 (.h5ad) file: {brief(exc)}") from None
    try:
        with handle:
            return _read(handle, filename, limits)
    except (InvalidInput, PayloadTooLarge):
        raise
    except MemoryError as exc:  # numpy's _ArrayMemoryError names the size; a bare 500 told the lab nothing
        raise PayloadTooLarge(f"{filename}: too large to read in this server's memory: {brief(exc)}") from None
    except (KeyError, ValueError, TypeError, OSError, IndexError, AttributeError, RuntimeError, OverflowError) as exc:
        # h5py and HDF5 raise these for damaged or unexpected structures; all are the file's fault.
        raise InvalidInput(f"{filename}: malformed .h5ad file: {brief(exc)}") from None


def _read(handle: h5py.File, filename: str, limits: SizeLimits) -> ParsedExpression:
    _refuse_outside_data(handle, filename)
    x, obs, var = (_member(handle, part, filename) for part in ("X", "obs", "var"))
    for part, item in (("X", x), ("obs", obs), ("var", var)):
        if item is None:
            raise InvalidInput(f"{filename}: the .h5ad file has no {part!r}; expected an AnnData file")
    if not isinstance(obs, h5py.Group) or not isinstance(var, h5py.Group):
        raise InvalidInput(
            f"{filename}: obs/var are stored in the pre-0.7 AnnData layout; re-save the file with a current anndata"
        )
    sample_ids = _index(obs, filename, "obs", limits)
    genes = _index(var, filename, "var", limits)
    if not sample_ids:
        raise InvalidInput(f"{filename}: no samples (obs is empty)")
    if not genes:
        raise InvalidInput(f"{filename}: no genes (var is empty)")
    limits.check(filename, samples=len(sample_ids), genes=len(genes))
    _check_ids(sample_ids, filename)
    check_names(genes, filename, kind="gene", at=range(len(genes)), place="var row")
    values = _dense(x, (len(sample_ids), len(genes)), filename)
    matrix = ExpressionMatrix(values=values, sample_ids=sample_ids, genes=genes)
    check_finite(matrix, filename, SAMPLES_AS_ROWS)
    most_categories = max(len(sample_ids), limits.samples or 0)  # anndata may keep unused categories
    annotations = text_annotations(sample_ids, _text_columns(obs, len(sample_ids), most_categories, filename))
    return ParsedExpression(matrix, "h5ad", SAMPLES_AS_ROWS, False, annotations=annotations)


def _index(group: h5py.Group, filename: str, part: str, limits: SizeLimits) -> list[str]:
    name = group.attrs.get("_index", "_index")
    if isinstance(name, bytes):
        name = name.decode()
    dataset = _member(group, str(name), filename)
    if not isinstance(dataset, h5py.Dataset):
        raise InvalidInput(f"{filename}: {part} has no index dataset {name!r}")
    count = _declared(dataset, filename)
    samples, genes = (count, None) if part == "obs" else (None, count)
    try:
        limits.check(filename, samples=samples, genes=genes)
    except InvalidInput as exc:
        raise InvalidInput(f"{exc.message}, as {dataset.name} declares") from None
    return [str(v) for v in _strings(dataset)]


def _declared(dataset: h5py.Dataset, filename: str) -> int:
    """How many values ``dataset`` declares; refuse values wider than a name, a label or a number."""
    if dataset.dtype.itemsize > _MAX_VALUE_BYTES:
        raise InvalidInput(
            f"{filename}: {dataset.name} declares values of {dataset.dtype.itemsize:,} bytes each; at most "
            f"{_MAX_VALUE_BYTES:,} are read"
        )
    return int(dataset.size or 0)


def _refuse_outside_data(handle: h5py.File, filename: str) -> None:
    """Refuse a file with any link other than a hard one, or any dataset whose data lies outside it."""
    groups: list[h5py.Group] = [handle]
    datasets: list[h5py.Dataset] = []

    def visit(_: str, item: object) -> None:  # H5Ovisit: every object once, through hard links only
        if isinstance(item, h5py.Group):
            groups.append(item)
        elif isinstance(item, h5py.Dataset):
            datasets.append(item)

    handle.visititems(visit)
    for group in groups:
        for name in group:
            _check_link(group, name, filename)
    for dataset in datasets:
        _check_storage(dataset, filename)


def _check_link(group: h5py.Group, name: str, filename: str) -> None:
    link = group.get(name, getlink=True)  # the link itself (H5Lget_info), never what it points to
    path = f"{group.name.rstrip('/')}/{name}"
    if isinstance(link, h5py.ExternalLink):
        raise InvalidInput(f"{filename}: {path} is an external link to another file; an upload must hold all its data")
    if not isinstance(link, h5py.HardLink):
        raise InvalidInput(
            f"{filename}: {path} is a soft or user-defined link; an upload may hold only plain (hard) links, as "
            "anndata writes"
        )


def _check_storage(dataset: h5py.Dataset, filename: str) -> None:
    if dataset.id.get_create_plist().get_external_count() > 0:
        raise InvalidInput(
            f"{filename}: dataset {dataset.name} keeps its data in other files (HDF5 external storage); an upload "
            "must hold all its data"
        )
    if dataset.is_virtual:
        raise InvalidInput(
            f"{filename}: dataset {dataset.name} is a virtual dataset mapping other data; an upload must hold all its "
            "data"
        )


def _member(group: h5py.Group, name: str, filename: str) -> h5py.Group | h5py.Dataset | None:
    """``group[name]`` reached through a hard link and holding its own data, or None if there is none (the
    up-front walk refused the rest already; this guards the reads themselves)."""
    if not name or "/" in name or name == "." or group.get(name, getlink=True) is None:
        return None  # not `name in group`: that resolves the link, opening the file an external link names
    _check_link(group, name, filename)
    item = group[name]
    if isinstance(item, h5py.Dataset):
        _check_storage(item, filename)
    return item if isinstance(item, (h5py.Group, h5py.Dataset)) else None


def _dataset(group: h5py.Group, name: str, filename: str) -> h5py.Dataset:
    """:func:`_member` that must be a dataset."""
    item = _member(group, name, filename)
    if not isinstance(item, h5py.Dataset):
        raise InvalidInput(f"{filename}: {group.name.rstrip('/')}/{name} is missing or not a dataset")
    return item


def _strings(dataset: h5py.Dataset) -> list[str | None]:
    if dataset.dtype.kind in "OSU":
        raw = dataset.asstr()[()] if dataset.dtype.kind in "OS" else dataset[()]
        return [None if v is None else str(v) for v in np.asarray(raw, dtype=object).reshape(-1)]
    return [str(v) for v in np.asarray(dataset[()]).reshape(-1)]


def _check_ids(sample_ids: list[str], filename: str) -> None:
    blank = [str(i + 1) for i, s in enumerate(sample_ids) if not s.strip()]
    if blank:
        raise InvalidInput(f"{filename}: sample id (obs name) missing at row(s) {listing(blank)}")
    for row, sample_id in enumerate(sample_ids, start=1):  # as the text readers refuse them
        if len(sample_id) > NAME_LENGTH:
            raise InvalidInput(f"{filename}: the sample id (obs name) at row {row:,} ({clip(sample_id)!r}) is "
                               f"longer than {NAME_LENGTH} characters")
        if CONTROL.search(sample_id):
            raise InvalidInput(f"{filename}: the sample id (obs name) at row {row:,} ({clip(sample_id)!r}) holds "
                               f"a control character; {NO_CONTROL}")
    seen: set[str] = set()
    duplicated = sorted({s for s in sample_ids if s in seen or seen.add(s)})  # type: ignore[func-returns-value]
    if duplicated:
        raise InvalidInput(f"{filename}: duplicate sample id(s) (obs names): {listing([repr(s) for s in duplicated])}")


def _dense(x: h5py.Dataset | h5py.Group, shape: tuple[int, int], filename: str) -> np.ndarray:
    """:func:`_matrix`, refused with 413 naming its size if the server cannot hold it (within the limits, a
    matrix may still not fit beside the other uploads in memory)."""
    try:
        return _matrix(x, shape, filename)
    except MemoryError:
        gib = shape[0] * shape[1] * np.dtype(np.float32).itemsize / 1024**3
        raise PayloadTooLarge(
            f"{filename}: a {shape[0]:,} x {shape[1]:,} matrix ({gib:,.1f} GiB as float32) does not fit in this "
            "server's memory now; upload fewer samples or genes, or try again later"
        ) from None


def _matrix(x: h5py.Dataset | h5py.Group, shape: tuple[int, int], filename: str) -> np.ndarray:
    n_samples, n_genes = shape
    if isinstance(x, h5py.Dataset):
        if x.shape != shape:
            raise InvalidInput(f"{filename}: X has shape {x.shape} but obs and var give {shape}")
        if x.dtype.kind not in "biuf":
            raise InvalidInput(f"{filename}: X holds {x.dtype}, not numbers")
        values = np.empty(shape, dtype=np.float32)
        rows = max(1, _BLOCK_CELLS // max(1, n_genes))
        for start in range(0, n_samples, rows):
            values[start : start + rows] = x[start : start + rows]
        return values
    encoding = x.attrs.get("encoding-type", "")
    encoding = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
    if encoding not in ("csr_matrix", "csc_matrix"):
        raise InvalidInput(f"{filename}: X is stored as {encoding or 'an unknown group'!r}; expected dense, CSR or CSC")
    stored = tuple(int(v) for v in x.attrs["shape"])
    if stored != shape:
        raise InvalidInput(f"{filename}: X has shape {stored} but obs and var give {shape}")
    data, indices, indptr_set = (_dataset(x, key, filename) for key in ("data", "indices", "indptr"))
    if data.dtype.kind not in "biuf":
        raise InvalidInput(f"{filename}: X holds {data.dtype}, not numbers")
    csr = encoding == "csr_matrix"
    major, minor = (n_samples, n_genes) if csr else (n_genes, n_samples)
    if indptr_set.shape != (major + 1,) or indptr_set.dtype.kind not in "iu":
        raise InvalidInput(
            f"{filename}: {indptr_set.name} declares {indptr_set.shape} {indptr_set.dtype} where a {encoding} of "
            f"shape {shape} has {major + 1:,} integers"
        )
    if data.ndim != 1 or indices.shape != data.shape or indices.dtype.kind not in "iu":
        raise InvalidInput(f"{filename}: X's data and indices are not two lists of equal length (values, positions)")
    if data.shape[0] > n_samples * n_genes:
        raise InvalidInput(f"{filename}: {data.name} declares {data.shape[0]:,} values; a {shape} matrix holds fewer")
    indptr = indptr_set[()]
    steps = np.diff(indptr)
    if indptr[0] != 0 or np.any(steps < 0) or np.any(steps > minor) or indptr[-1] != data.shape[0]:
        raise InvalidInput(f"{filename}: X's indptr does not describe a {encoding} of shape {shape}")
    values = np.zeros(shape, dtype=np.float32)
    step = max(1, _BLOCK_CELLS // max(1, minor))
    for start in range(0, major, step):
        stop = min(major, start + step)
        lo, hi = int(indptr[start]), int(indptr[stop])
        block_indices = indices[lo:hi].astype(np.int64)
        if block_indices.size and (block_indices.min() < 0 or block_indices.max() >= minor):
            raise InvalidInput(f"{filename}: X's indices fall outside the matrix")
        block_rows = np.repeat(np.arange(start, stop), np.diff(indptr[start : stop + 1]))
        if csr:
            values[block_rows, block_indices] = data[lo:hi]
        else:
            values[block_indices, block_rows] = data[lo:hi]
    return values


def _text_columns(obs: h5py.Group, n_samples: int, most_categories: int, filename: str) -> dict[str, list[str | None]]:
    """Text, categorical and boolean obs columns, in ``column-order``; numbers are not labels, and a column
    whose length is not ``n_samples`` is left unread."""
    listed = obs.attrs.get("column-order", [])
    if np.size(listed) > MAX_LABEL_COLUMNS:  # each is read whole, as a label column
        raise InvalidInput(
            f"{filename}: obs lists {np.size(listed):,} columns; at most {MAX_LABEL_COLUMNS:,} are read"
        )
    order = [str(c.decode() if isinstance(c, bytes) else c) for c in np.asarray(listed).reshape(-1)]
    columns: dict[str, list[str | None]] = {}
    for name in order:
        item = _member(obs, name, filename)
        cells: list[str | None] | None = None
        if isinstance(item, h5py.Group) and _encoding(item) == "categorical":
            cells = _categorical(item, n_samples, most_categories, filename)
        elif isinstance(item, h5py.Group) and _encoding(item) in ("nullable-string-array", "nullable-boolean"):
            mask, values = _dataset(item, "mask", filename), _dataset(item, "values", filename)
            if _declared(mask, filename) == _declared(values, filename) == n_samples:
                cells = [None if m else v for v, m in zip(_strings(values), mask[()].reshape(-1), strict=True)]
        elif isinstance(item, h5py.Dataset) and item.dtype.kind in "OSUb" and _declared(item, filename) == n_samples:
            cells = _strings(item)
        if cells is not None:
            columns[name] = cells
    return columns


def _categorical(item: h5py.Group, n_samples: int, most_categories: int, filename: str) -> list[str | None] | None:
    """A categorical column's cells, or None (left unread, as no label column) unless it has one code per
    sample and at most ``most_categories`` categories: a subset of a large AnnData may keep every category of
    the whole, which is no reason to refuse the matrix."""
    codes, categories = _dataset(item, "codes", filename), _dataset(item, "categories", filename)
    if _declared(codes, filename) != n_samples or codes.dtype.kind not in "iu":
        return None
    if _declared(categories, filename) > most_categories:
        return None
    names = _strings(categories)
    return [names[c] if 0 <= c < len(names) else None for c in codes[()].reshape(-1)]


def _encoding(item: h5py.Group) -> str:
    value = item.attrs.get("encoding-type", "")
    return value.decode() if isinstance(value, bytes) else str(value)

