"""Row-level helpers shared by the store modules: growing datasets and per-process key indexes."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from typing import Any, Iterable, Sequence

import h5py
import numpy as np

STR = h5py.string_dtype("utf-8")
SHA = "S64"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def short_hash(*parts: Any) -> str:
    """A stable 16-hex-digit id for a tuple of JSON-able parts (set ids, call keys)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def decode(values: Iterable[Any]) -> list[str]:
    """Stored strings as Python text; bytes that are not UTF-8 (a file name's) come back as Python spells
    such a name (surrogate escapes), so the file opens again."""
    return [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v) for v in values]


def to_stored(values: Iterable[Any]) -> np.ndarray:
    """Strings for a STR column: a file name that is not valid UTF-8 (Python holds its bytes as surrogate
    escapes) is stored as those very bytes, which :func:`decode` turns back into the same name."""
    return np.asarray([v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v for v in values],
                      dtype=object)


def append(ds: h5py.Dataset, values: np.ndarray | Sequence[Any]) -> None:
    n = ds.shape[0]
    values = to_stored(values) if ds.dtype == STR else np.asarray(values)
    ds.resize(n + len(values), axis=0)
    ds[n:] = values


def create_rows(group: h5py.Group, name: str, dtype: Any, row_shape: tuple[int, ...] = ()) -> h5py.Dataset:
    """A resizable dataset whose first axis grows batch by batch."""
    itemsize = np.dtype(dtype).itemsize if dtype != STR else 16
    chunk_rows = max(1, min(1024, (1 << 18) // max(1, int(np.prod(row_shape) or 1) * itemsize)))
    return group.create_dataset(
        name, shape=(0, *row_shape), maxshape=(None, *row_shape), dtype=dtype, chunks=(chunk_rows, *row_shape)
    )


def read_rows(ds: h5py.Dataset, rows: Sequence[int]) -> np.ndarray:
    """Rows of a dataset in the order asked, reading one span when they are close and points otherwise.

    Never reads a whole column to look at a few rows (the cost stays with the batch, not the file).
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return ds[:0]
    lo, hi = int(rows.min()), int(rows.max()) + 1
    if hi - lo <= 4 * len(rows) + 1024:
        return ds[lo:hi][rows - lo]
    order = np.unique(rows)
    block = ds[order]  # h5py needs increasing, unique indices
    return block[np.searchsorted(order, rows)]


def write_rows(ds: h5py.Dataset, rows: Sequence[int], values: np.ndarray) -> None:
    """Overwrite the given rows (increasing order is handled here)."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    ds[rows[order]] = values[order]


class KeyIndexes:
    """key -> row of append-only key columns, built once per process and extended from the tail.

    Every writer only appends to these columns, so a later open reads only the rows added since (by this
    or another process).  ``guard`` identifies the column's owner (the file's, or a set's, creation id): a
    replaced file or a recreated set starts a fresh index.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, tuple[str, int, dict[str, int]]] = {}

    def of(self, ds: h5py.Dataset, guard: str, normalise: Any = None) -> dict[str, int]:
        cached = self._by_name.get(ds.name)
        n = ds.shape[0]
        if cached is None or cached[0] != guard or cached[1] > n:
            index: dict[str, int] = {}
            start = 0
        else:
            _, start, index = cached
        step = 1 << 16
        for lo in range(start, n, step):  # in slices: a first build at 1M rows stays within memory
            for offset, key in enumerate(decode(ds[lo : min(n, lo + step)])):
                index.setdefault(key, lo + offset)
        self._by_name[ds.name] = (guard, n, index)
        return index
