"""Items: one row per distinct file content, keyed by its sha256."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import h5py
import numpy as np

from clipclust.store.files import WorkspaceFile
from clipclust.store.rows import SHA, STR, append, create_rows, decode, read_rows, to_stored, write_rows

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


def _pairs(g: h5py.Group, rows: list[int]) -> list[tuple[str, str]]:
    return list(zip(decode(read_rows(g["split"], rows)), decode(read_rows(g["label"], rows))))


class _Counts:
    """Items per (split, label), kept in the ``counts`` attribute of /items so ``info`` reads no column.

    Files without it get it from one scan at their next item write.  With very many distinct labels the
    attribute would outgrow HDF5's 64 KB limit: it is then set to "" (not kept) and ``info`` scans.
    """

    LIMIT = 60_000

    def __init__(self, counts: dict[tuple[str, str], int] | None) -> None:
        self.kept = counts is not None
        self.counts: Counter[tuple[str, str]] = Counter(counts or {})

    @classmethod
    def load(cls, g: h5py.Group, scan: bool = True) -> "_Counts":
        raw = g.attrs.get("counts")
        if raw is not None:
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            return cls({(s, lab): n for s, lab, n in json.loads(text)} if text else None)
        if not scan:
            return cls(None)
        counts: Counter[tuple[str, str]] = Counter()
        for lo in range(0, g["sha256"].shape[0], 1 << 17):
            hi = lo + (1 << 17)
            counts.update(zip(decode(g["split"][lo:hi]), decode(g["label"][lo:hi])))
        return cls(dict(counts))

    def move(self, old: list[tuple[str, str]], new: list[tuple[str, str]]) -> None:
        self.counts.subtract(old)
        self.counts.update(new)

    def save(self, g: h5py.Group) -> None:
        if not self.kept:
            return
        text = json.dumps(sorted([s, lab, n] for (s, lab), n in self.counts.items() if n > 0))
        g.attrs["counts"] = text if len(text.encode()) < self.LIMIT else ""
        self.kept = len(text.encode()) < self.LIMIT


class Items:
    """The items table of a workspace: read whole, counted per split and label, upserted by batch."""

    def __init__(self, file: WorkspaceFile) -> None:
        self._file = file

    @staticmethod
    def _group(f: h5py.File) -> h5py.Group:
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
    def _read(f: h5py.File | None) -> ItemTable:
        if f is None or "items" not in f:
            empty = np.zeros(0, "int64")
            return ItemTable([], [], [], [], empty, empty, empty, empty)
        g = f["items"]
        return ItemTable(
            sha256=decode(g["sha256"][:]),
            path=list(g["path"].asstr(errors="surrogateescape")[:]),
            label=list(g["label"].asstr(errors="surrogateescape")[:]),
            split=list(g["split"].asstr(errors="surrogateescape")[:]),
            width=g["width"][:],
            height=g["height"][:],
            size=g["size"][:],
            mtime_ns=g["mtime_ns"][:],
        )

    def table(self) -> ItemTable:
        with self._file.open_read() as f:
            return self._read(f)

    def counts(self) -> dict[tuple[str, str], int]:
        """(split, label) -> number of items, reading only those two columns, block by block."""
        counts: Counter[tuple[Any, Any]] = Counter()
        with self._file.open_read() as f:
            if f is None or "items" not in f:
                return {}
            kept = _Counts.load(f["items"], scan=False)
            if kept.kept:
                return dict(kept.counts)
            split, label = f["items/split"], f["items/label"]
            for lo in range(0, split.shape[0], 1 << 17):
                counts.update(zip(split[lo : lo + (1 << 17)], label[lo : lo + (1 << 17)]))
        out: dict[tuple[str, str], int] = {}
        for (s, lab), n in counts.items():
            key = (decode([s])[0], decode([lab])[0])
            out[key] = out.get(key, 0) + n
        return out

    def count(self) -> int:
        with self._file.open_read() as f:
            return 0 if f is None or "items" not in f else int(f["items/sha256"].shape[0])

    def upsert_in(self, f: h5py.File, records: Sequence[ItemRecord]) -> None:
        """Add new contents; for known ones refresh path, and label/split/size where the record gives them.

        Only the rows of this batch are read and only changed values written, so the cost of a batch does
        not depend on how many items the workspace holds.
        """
        g = self._group(f)
        known = self._file.key_indexes.of(g["sha256"], self._file.guard(f))
        counts = _Counts.load(g)
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
            moved = [r for r in rows if changes[r].label or changes[r].split]
            before = _pairs(g, moved) if counts.kept and moved else []
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
                    arr = to_stored(values) if ds.dtype == STR else np.asarray(values, ds.dtype)
                    write_rows(ds, [r for r, _ in differ], arr)
            if before:
                counts.move(before, _pairs(g, moved))
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
            counts.move([], [(r.split, r.label) for r in recs])
        counts.save(g)

    def upsert(self, records: Sequence[ItemRecord]) -> None:
        """Upsert in a transaction of its own."""
        if records:
            with self._file.open_write() as f:
                self.upsert_in(f, records)
