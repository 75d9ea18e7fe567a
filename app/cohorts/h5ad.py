"""Read AnnData ``.h5ad`` files with h5py: X (dense, CSR or CSC) as samples x genes, obs and var names.

Follows the AnnData on-disk format (anndata >= 0.7, ``encoding-type`` attributes): ``X`` is a dataset or
a ``csr_matrix``/``csc_matrix`` group (``data``, ``indices``, ``indptr``, ``shape``); ``obs``/``var`` are
``dataframe`` groups whose ``_index`` attribute names the index dataset. Text and categorical obs
columns come back as per-sample annotations, usable as labels. The dense matrix is filled block by
block, so memory stays about one float32 matrix plus the sparse arrays.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from app.cohorts.parsing import (
    NO_LIMITS,
    SAMPLES_AS_ROWS,
    ExpressionMatrix,
    ParsedExpression,
    SizeLimits,
    _brief,
    _check_finite,
    _check_names,
    _listing,
    text_annotations,
)
from app.errors import InvalidInput

_BLOCK_CELLS = 4_000_000


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
        raise InvalidInput(f"{filename}: not a readable HDF5 (.h5ad) file: {_brief(exc)}") from None
    try:
        with handle:
            return _read(handle, filename, limits)
    except InvalidInput:
        raise
    except (KeyError, ValueError, TypeError, OSError, IndexError, AttributeError, RuntimeError, OverflowError) as exc:
        # h5py and HDF5 raise these for damaged or unexpected structures; all are the file's fault.
        raise InvalidInput(f"{filename}: malformed .h5ad file: {_brief(exc)}") from None


def _read(handle: h5py.File, filename: str, limits: SizeLimits) -> ParsedExpression:
    for part in ("X", "obs", "var"):
        if part not in handle:
            raise InvalidInput(f"{filename}: the .h5ad file has no {part!r}; expected an AnnData file")
    obs, var = handle["obs"], handle["var"]
    if not isinstance(obs, h5py.Group) or not isinstance(var, h5py.Group):
        raise InvalidInput(
            f"{filename}: obs/var are stored in the pre-0.7 AnnData layout; re-save the file with a current anndata"
        )
    sample_ids = _index(obs, filename, "obs")
    genes = _index(var, filename, "var")
    if not sample_ids:
        raise InvalidInput(f"{filename}: no samples (obs is empty)")
    if not genes:
        raise InvalidInput(f"{filename}: no genes (var is empty)")
    limits.check(filename, samples=len(sample_ids), genes=len(genes))
    _check_ids(sample_ids, filename)
    _check_names(genes, filename, kind="gene")
    values = _matrix(handle["X"], (len(sample_ids), len(genes)), filename)
    matrix = ExpressionMatrix(values=values, sample_ids=sample_ids, genes=genes)
    _check_finite(matrix, filename, SAMPLES_AS_ROWS)
    annotations = text_annotations(sample_ids, _text_columns(obs, len(sample_ids)))
    return ParsedExpression(matrix, "h5ad", SAMPLES_AS_ROWS, False, annotations=annotations)


def _index(group: h5py.Group, filename: str, part: str) -> list[str]:
    name = group.attrs.get("_index", "_index")
    if isinstance(name, bytes):
        name = name.decode()
    if name not in group:
        raise InvalidInput(f"{filename}: {part} has no index dataset {name!r}")
    return [str(v) for v in _strings(group[name])]


def _strings(dataset: h5py.Dataset) -> list[str | None]:
    if dataset.dtype.kind in "OSU":
        raw = dataset.asstr()[()] if dataset.dtype.kind in "OS" else dataset[()]
        return [None if v is None else str(v) for v in np.asarray(raw, dtype=object).reshape(-1)]
    return [str(v) for v in np.asarray(dataset[()]).reshape(-1)]


def _check_ids(sample_ids: list[str], filename: str) -> None:
    blank = [str(i + 1) for i, s in enumerate(sample_ids) if not s.strip()]
    if blank:
        raise InvalidInput(f"{filename}: sample id (obs name) missing at row(s) {_listing(blank)}")
    seen: set[str] = set()
    duplicated = sorted({s for s in sample_ids if s in seen or seen.add(s)})  # type: ignore[func-returns-value]
    if duplicated:
        raise InvalidInput(f"{filename}: duplicate sample id(s) (obs names): {_listing([repr(s) for s in duplicated])}")


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
    data, indices, indptr = x["data"], x["indices"], x["indptr"][()]
    if data.dtype.kind not in "biuf":
        raise InvalidInput(f"{filename}: X holds {data.dtype}, not numbers")
    csr = encoding == "csr_matrix"
    major, minor = (n_samples, n_genes) if csr else (n_genes, n_samples)
    if indptr.shape != (major + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != data.shape[0]:
        raise InvalidInput(f"{filename}: X's indptr does not describe a {encoding} of shape {shape}")
    if indices.shape != data.shape:
        raise InvalidInput(f"{filename}: X's data and indices differ in length")
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


def _text_columns(obs: h5py.Group, n_samples: int) -> dict[str, list[str | None]]:
    """Text, categorical and boolean obs columns, in ``column-order``; numbers are not labels."""
    order = [str(c.decode() if isinstance(c, bytes) else c) for c in np.asarray(obs.attrs.get("column-order", []))]
    columns: dict[str, list[str | None]] = {}
    for name in order:
        item = obs.get(name)
        cells: list[str | None] | None = None
        if isinstance(item, h5py.Group) and _encoding(item) == "categorical":
            categories = _strings(item["categories"])
            codes = np.asarray(item["codes"][()]).reshape(-1)
            cells = [categories[c] if 0 <= c < len(categories) else None for c in codes]
        elif isinstance(item, h5py.Group) and _encoding(item) in ("nullable-string-array", "nullable-boolean"):
            mask = np.asarray(item["mask"][()]).reshape(-1)
            raw = _strings(item["values"])
            cells = [None if m else v for v, m in zip(raw, mask, strict=False)]
        elif isinstance(item, h5py.Dataset) and (item.dtype.kind in "OSU" or item.dtype.kind == "b"):
            cells = _strings(item)
        if cells is not None and len(cells) == n_samples:
            columns[name] = cells
    return columns


def _encoding(item: h5py.Group) -> str:
    value = item.attrs.get("encoding-type", "")
    return value.decode() if isinstance(value, bytes) else str(value)

