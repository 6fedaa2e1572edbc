"""Items: one row per distinct file content, keyed by its sha256."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import h5py
import numpy as np

from .files import WorkspaceFile
from .rows import SHA, STR, append, create_rows, decode, read_rows, write_rows

ITEM_FIELDS = ("path", "label", "split", "width", "height", "size", "mtime_ns")


@dataclass
class ItemRecord:
    """One distinct file content; ``sha256`` is the key, the rest describes where it was last seen."""

    sha256: str
    path: str
    label: str = ""
    split: str = ""
    width: int = 0
    height: int = 0
    size: int = 0
    mtime_ns: int = 0


@dataclass
class ItemTable:
    """All items as parallel arrays, in storage order."""

    sha256: list[str]
    path: list[str]
    label: list[str]
    split: list[str]
    width: np.ndarray
    height: np.ndarray
    size: np.ndarray
    mtime_ns: np.ndarray

    def __len__(self) -> int:
        return len(self.sha256)

    def index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.sha256)}


class ItemsStore(WorkspaceFile):
    @staticmethod
    def _items_group(f: h5py.File) -> h5py.Group:
        if "items" in f:
            return f["items"]
        g = f.create_group("items")
        create_rows(g, "sha256", SHA)
        for name in ("path", "label", "split"):
            create_rows(g, name, STR)
        create_rows(g, "width", "int32")
        create_rows(g, "height", "int32")
        create_rows(g, "size", "int64")
        create_rows(g, "mtime_ns", "int64")
        return g

    @staticmethod
    def _read_items(f: h5py.File | None) -> ItemTable:
        if f is None or "items" not in f:
            empty = np.zeros(0, "int64")
            return ItemTable([], [], [], [], empty, empty, empty, empty)
        g = f["items"]
        return ItemTable(
            sha256=decode(g["sha256"][:]),
            path=list(g["path"].asstr()[:]),
            label=list(g["label"].asstr()[:]),
            split=list(g["split"].asstr()[:]),
            width=g["width"][:],
            height=g["height"][:],
            size=g["size"][:],
            mtime_ns=g["mtime_ns"][:],
        )

    def items(self) -> ItemTable:
        with self.open_read() as f:
            return self._read_items(f)

    def item_counts(self) -> dict[tuple[str, str], int]:
        """(split, label) -> number of items, reading only those two columns, block by block."""
        counts: Counter[tuple[Any, Any]] = Counter()
        with self.open_read() as f:
            if f is None or "items" not in f:
                return {}
            split, label = f["items/split"], f["items/label"]
            for lo in range(0, split.shape[0], 1 << 17):
                counts.update(zip(split[lo : lo + (1 << 17)], label[lo : lo + (1 << 17)]))
        out: dict[tuple[str, str], int] = {}
        for (s, lab), n in counts.items():
            key = (decode([s])[0], decode([lab])[0])
            out[key] = out.get(key, 0) + n
        return out

    def count_items(self) -> int:
        with self.open_read() as f:
            return 0 if f is None or "items" not in f else int(f["items/sha256"].shape[0])

    def _upsert_items(self, f: h5py.File, records: Sequence[ItemRecord]) -> None:
        """Add new contents; for known ones refresh path, and label/split/size where the record gives them.

        Only the rows of this batch are read and only changed values written, so the cost of a batch does
        not depend on how many items the workspace holds.
        """
        g = self._items_group(f)
        known = self._keys.of(g["sha256"], self.file_guard(f))
        new: dict[str, ItemRecord] = {}
        changes: dict[int, ItemRecord] = {}
        for rec in records:
            row = known.get(rec.sha256)
            if row is None:
                new.setdefault(rec.sha256, rec)
            else:
                changes[row] = rec
        if changes:
            rows = sorted(changes)
            for name in ITEM_FIELDS:
                wanted = {r: getattr(changes[r], name) for r in rows if getattr(changes[r], name)}
                if not wanted:
                    continue
                idx = sorted(wanted)
                ds = g[name]
                current = read_rows(ds, idx)
                current = decode(current) if ds.dtype == STR else current.tolist()
                differ = [(r, wanted[r]) for r, c in zip(idx, current) if c != wanted[r]]
                if differ:
                    values = [v for _, v in differ]
                    arr = np.asarray(values, dtype=object) if ds.dtype == STR else np.asarray(values, ds.dtype)
                    write_rows(ds, [r for r, _ in differ], arr)
        if new:
            recs = list(new.values())
            append(g["sha256"], np.array([r.sha256 for r in recs], dtype=SHA))
            append(g["path"], [r.path for r in recs])
            append(g["label"], [r.label for r in recs])
            append(g["split"], [r.split for r in recs])
            append(g["width"], np.array([r.width for r in recs], dtype="int32"))
            append(g["height"], np.array([r.height for r in recs], dtype="int32"))
            append(g["size"], np.array([r.size for r in recs], dtype="int64"))
            append(g["mtime_ns"], np.array([r.mtime_ns for r in recs], dtype="int64"))

    def upsert_items(self, records: Sequence[ItemRecord]) -> None:
        if records:
            with self.open_write() as f:
                self._upsert_items(f, records)

    def item_fields(self, f: h5py.File, shas: Sequence[str], names: Sequence[str] = ITEM_FIELDS) -> dict[str, list[Any]]:
        """Chosen fields of the given items (which must be stored), reading only their rows."""
        g = f["items"]
        index = self._keys.of(g["sha256"], self.file_guard(f))
        rows = [index[s] for s in shas]
        out = {}
        for name in names:
            values = read_rows(g[name], rows)
            out[name] = decode(values) if g[name].dtype == STR else values.tolist()
        return out
