"""The HDF5 workspace: one file holding items, embedding sets, clusterings and model-call answers.

The file is opened only for the moment of a read or a batch write, under an exclusive lock file
(``PATH.lock``).  A run that is killed while computing therefore leaves a closed, readable file, a
re-run continues from what was flushed, and two processes writing the same workspace interleave their
batches instead of corrupting it.  The layout is documented in docs/cache-format.md and is plain h5py.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import h5py
import numpy as np
from filelock import FileLock, Timeout

from . import __version__
from .errors import ClipclustError, InputError

FORMAT_NAME = "clipclust-workspace"
FORMAT_VERSION = 1
DEFAULT_LOCK_TIMEOUT = float(os.environ.get("CLIPCLUST_LOCK_TIMEOUT", "120"))

_STR = h5py.string_dtype("utf-8")
_SHA = "S64"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def short_hash(*parts: Any) -> str:
    """A stable 16-hex-digit id for a tuple of JSON-able parts (set ids, call keys)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape stored numbers, for provenance (no heavy imports)."""
    from importlib import metadata

    out = {"clipclust": __version__}
    for dist in ("torch", "open_clip_torch", "transformers", "h5py", "numpy", "scikit-learn", "llama_cpp_python"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


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


@dataclass
class SetInfo:
    """What ``info`` shows about one stored set."""

    id: str
    name: str
    kind: str
    model: str
    prompt: str
    keyed_by: str
    shape: tuple[int, ...]
    created: str
    updated: str
    attrs: dict[str, Any] = field(default_factory=dict)


def _decode(values: Iterable[Any]) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _append(ds: h5py.Dataset, values: np.ndarray | Sequence[Any]) -> None:
    n = ds.shape[0]
    values = np.asarray(values, dtype=object) if ds.dtype == _STR else np.asarray(values)
    ds.resize(n + len(values), axis=0)
    ds[n:] = values


def _create_rows(group: h5py.Group, name: str, dtype: Any, row_shape: tuple[int, ...] = ()) -> h5py.Dataset:
    """A resizable dataset whose first axis grows batch by batch."""
    chunk_rows = max(1, min(1024, (1 << 18) // max(1, int(np.prod(row_shape) or 1) * 4)))
    return group.create_dataset(
        name, shape=(0, *row_shape), maxshape=(None, *row_shape), dtype=dtype, chunks=(chunk_rows, *row_shape)
    )


class Workspace:
    """The on-disk workspace. Every public method opens the file briefly under the lock.

    Library code takes a ``Workspace``; it never prints and knows nothing of the command line.
    """

    def __init__(self, path: str | os.PathLike[str], lock_timeout: float | None = None):
        self.path = Path(path)
        self.lock_timeout = DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout
        self._lock = FileLock(str(self.path) + ".lock", timeout=self.lock_timeout)
        self._key_index: dict[str, tuple[float, int, dict[str, int]]] = {}

    def _keys_of(self, f: h5py.File, ds: h5py.Dataset) -> dict[str, int]:
        """key -> row of an append-only key column, reading only the rows added since the last call.

        Batches of one run (and of concurrent runs) only ever append, so re-reading a whole column per
        batch would make a large run quadratic.  The file's creation stamp guards against a replaced file.
        """
        stamp = f.attrs.get("created", "")
        cached = self._key_index.get(ds.name)
        n = ds.shape[0]
        if cached is None or cached[0] != stamp or cached[1] > n:
            index: dict[str, int] = {}
            start = 0
        else:
            _, start, index = cached
        if n > start:
            for offset, key in enumerate(_decode(ds[start:n])):
                index.setdefault(key, start + offset)
        self._key_index[ds.name] = (stamp, n, index)
        return index

    # ------------------------------------------------------------------ opening
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self._lock.acquire()
        except Timeout:
            raise ClipclustError(
                f"workspace {self.path} is in use by another clipclust process (waited {self.lock_timeout:g}s); "
                "wait for it to finish, raise CLIPCLUST_LOCK_TIMEOUT, or pass another --cache"
            ) from None
        try:
            yield
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def open_write(self) -> Iterator[h5py.File]:
        """Open for writing (creating the file if needed); closed, hence flushed, on exit."""
        if self.path.parent and not self.path.parent.exists():
            raise InputError(f"cannot create workspace {self.path}: folder {self.path.parent} does not exist")
        with self._locked():
            f = self._open_file("a")
            try:
                if "format" not in f.attrs:
                    f.attrs["format"] = FORMAT_NAME
                    f.attrs["format_version"] = FORMAT_VERSION
                    f.attrs["created"] = now_iso()
                    f.attrs["clipclust_version"] = __version__
                self._check_format(f)
                yield f
            finally:
                f.close()

    @contextlib.contextmanager
    def open_read(self) -> Iterator[h5py.File | None]:
        """Open read-only; yields None when the workspace does not exist yet."""
        with self._locked():
            if not self.path.exists():
                yield None
                return
            f = self._open_file("r")
            try:
                self._check_format(f)
                yield f
            finally:
                f.close()

    def _open_file(self, mode: str) -> h5py.File:
        try:
            return h5py.File(self.path, mode)
        except OSError as exc:
            raise ClipclustError(
                f"workspace {self.path} is not a readable HDF5 file ({exc}); move it aside or pass another --cache"
            ) from None

    def _check_format(self, f: h5py.File) -> None:
        if f.attrs.get("format") != FORMAT_NAME:
            raise InputError(f"{self.path} is an HDF5 file but not a clipclust workspace; pass another --cache")
        version = int(f.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise InputError(
                f"workspace {self.path} has format {version}, newer than this clipclust understands; upgrade clipclust"
            )

    def exists(self) -> bool:
        return self.path.exists()

    # ------------------------------------------------------------------ items
    @staticmethod
    def _items_group(f: h5py.File) -> h5py.Group:
        if "items" in f:
            return f["items"]
        g = f.create_group("items")
        _create_rows(g, "sha256", _SHA)
        for name in ("path", "label", "split"):
            _create_rows(g, name, _STR)
        _create_rows(g, "width", "int32")
        _create_rows(g, "height", "int32")
        _create_rows(g, "size", "int64")
        _create_rows(g, "mtime_ns", "int64")
        return g

    @staticmethod
    def _read_items(f: h5py.File | None) -> ItemTable:
        if f is None or "items" not in f:
            empty = np.zeros(0, "int64")
            return ItemTable([], [], [], [], empty, empty, empty, empty)
        g = f["items"]
        return ItemTable(
            sha256=_decode(g["sha256"][:]),
            path=_decode(g["path"][:]),
            label=_decode(g["label"][:]),
            split=_decode(g["split"][:]),
            width=g["width"][:],
            height=g["height"][:],
            size=g["size"][:],
            mtime_ns=g["mtime_ns"][:],
        )

    def items(self) -> ItemTable:
        with self.open_read() as f:
            return self._read_items(f)

    def _upsert_items(self, f: h5py.File, records: Sequence[ItemRecord]) -> None:
        """Add new contents; for known ones refresh path, and label/split/size where the record gives them.

        Known rows are compared first and a column is rewritten (in one write) only when a value changed,
        so a fully cached re-run of a large folder costs a few reads, not one write per file.
        """
        g = self._items_group(f)
        known = self._keys_of(f, g["sha256"])
        new: dict[str, ItemRecord] = {}
        updates: dict[str, dict[int, Any]] = {name: {} for name in ("path", "label", "split", "width", "height",
                                                                    "size", "mtime_ns")}
        for rec in records:
            row = known.get(rec.sha256)
            if row is None:
                new.setdefault(rec.sha256, rec)
                continue
            for name in ("path", "label", "split", "width", "height", "size", "mtime_ns"):
                value = getattr(rec, name)
                if value:  # an empty field keeps what is stored
                    updates[name][row] = value
        for name, changes in updates.items():
            if not changes:
                continue
            column = g[name][:]
            current = _decode(column) if column.dtype == object else column.tolist()
            if all(current[row] == value for row, value in changes.items()):
                continue
            for row, value in changes.items():
                current[row] = value
            g[name][:] = np.asarray(current, dtype=object) if column.dtype == object else np.asarray(current, column.dtype)
        if new:
            recs = list(new.values())
            _append(g["sha256"], np.array([r.sha256 for r in recs], dtype=_SHA))
            _append(g["path"], [r.path for r in recs])
            _append(g["label"], [r.label for r in recs])
            _append(g["split"], [r.split for r in recs])
            _append(g["width"], np.array([r.width for r in recs], dtype="int32"))
            _append(g["height"], np.array([r.height for r in recs], dtype="int32"))
            _append(g["size"], np.array([r.size for r in recs], dtype="int64"))
            _append(g["mtime_ns"], np.array([r.mtime_ns for r in recs], dtype="int64"))

    def upsert_items(self, records: Sequence[ItemRecord]) -> None:
        with self.open_write() as f:
            self._upsert_items(f, records)

    # ------------------------------------------------------------------ sets
    @staticmethod
    def _set_group(f: h5py.File, set_id: str) -> h5py.Group | None:
        path = f"sets/{set_id}"
        return f[path] if path in f else None

    @staticmethod
    def _new_set(
        f: h5py.File,
        set_id: str,
        *,
        name: str,
        kind: str,
        model: str,
        prompt: str,
        keyed_by: str,
        row_shape: tuple[int, ...],
        dtype: Any,
        provenance: dict[str, Any],
    ) -> h5py.Group:
        g = f.require_group("sets").create_group(set_id)
        _create_rows(g, "keys", _SHA if keyed_by == "item" else _STR)
        _create_rows(g, "data", dtype, row_shape)
        stamp = now_iso()
        g.attrs.update(
            {
                "name": name,
                "kind": kind,
                "model": model,
                "prompt": prompt,
                "keyed_by": keyed_by,
                "created": stamp,
                "updated": stamp,
                "provenance": json.dumps({**provenance, "versions": library_versions()}, sort_keys=True),
            }
        )
        return g

    def set_keys(self, set_id: str) -> set[str]:
        """The keys (item sha256s or class names) a set already holds."""
        with self.open_read() as f:
            g = None if f is None else self._set_group(f, set_id)
            return set() if g is None else set(_decode(g["keys"][:]))

    def write_batch(
        self,
        *,
        items: Sequence[ItemRecord] = (),
        rows: Sequence[tuple[dict[str, Any], Sequence[str], np.ndarray | Sequence[Any]]] = (),
    ) -> int:
        """Write one batch in one open: item records and rows for any number of sets.

        Each entry of ``rows`` is ``(spec, keys, data)`` where ``spec`` has id, name, kind, model,
        prompt, keyed_by and provenance.  Keys the set already holds are skipped, so two processes
        computing the same batch never duplicate rows.  Returns the number of rows added.
        """
        added = 0
        with self.open_write() as f:
            if items:
                self._upsert_items(f, items)
            for spec, keys, data in rows:
                keys = list(keys)
                if not keys:
                    continue
                is_text = spec.get("dtype") == "str"
                values = np.asarray(data, dtype=object) if is_text else np.asarray(data, dtype=np.float32)
                g = self._set_group(f, spec["id"])
                if g is None:
                    g = self._new_set(
                        f,
                        spec["id"],
                        name=spec["name"],
                        kind=spec["kind"],
                        model=spec.get("model", ""),
                        prompt=spec.get("prompt", ""),
                        keyed_by=spec.get("keyed_by", "item"),
                        row_shape=() if is_text else tuple(values.shape[1:]),
                        dtype=_STR if is_text else np.float32,
                        provenance=spec.get("provenance", {}),
                    )
                    for k, v in spec.get("attrs", {}).items():
                        g.attrs[k] = v
                stored = self._keys_of(f, g["keys"])
                in_batch: set[str] = set()
                keep = []
                for i, key in enumerate(keys):
                    if key not in stored and key not in in_batch:
                        in_batch.add(key)
                        keep.append(i)
                if not keep:
                    continue
                key_values = [keys[i] for i in keep]
                if g.attrs["keyed_by"] == "item":
                    _append(g["keys"], np.array(key_values, dtype=_SHA))
                else:
                    _append(g["keys"], key_values)
                _append(g["data"], values[keep])
                g.attrs["updated"] = now_iso()
                added += len(keep)
        return added

    def list_sets(self) -> list[SetInfo]:
        with self.open_read() as f:
            if f is None or "sets" not in f:
                return []
            out = []
            for set_id, g in f["sets"].items():
                attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
                out.append(
                    SetInfo(
                        id=set_id,
                        name=str(attrs.get("name", "")),
                        kind=str(attrs.get("kind", "")),
                        model=str(attrs.get("model", "")),
                        prompt=str(attrs.get("prompt", "")),
                        keyed_by=str(attrs.get("keyed_by", "item")),
                        shape=tuple(int(x) for x in g["data"].shape),
                        created=str(attrs.get("created", "")),
                        updated=str(attrs.get("updated", "")),
                        attrs=attrs,
                    )
                )
            return sorted(out, key=lambda s: (s.model, s.name, s.created))

    def set_storage_bytes(self) -> dict[str, int]:
        """Bytes each set takes in the file (its keys and rows as stored, compressed or not), by set id."""
        with self.open_read() as f:
            if f is None or "sets" not in f:
                return {}
            return {set_id: int(g["keys"].id.get_storage_size()) + int(g["data"].id.get_storage_size())
                    for set_id, g in f["sets"].items()}

    def read_set(self, set_id: str) -> tuple[list[str], np.ndarray]:
        """All keys and rows of a set, in storage order (rows are str objects for text sets)."""
        with self.open_read() as f:
            g = None if f is None else self._set_group(f, set_id)
            if g is None:
                raise InputError(f"no set with id {set_id} in {self.path}; run 'clipclust info' to list sets")
            keys = _decode(g["keys"][:])
            data = g["data"][:]
            if data.dtype == object:
                data = np.array(_decode(data), dtype=object)
            return keys, data

    def iter_set(self, set_id: str, chunk: int = 65536) -> Iterator[tuple[list[str], np.ndarray]]:
        """A set's keys and rows block by block (one open per block): a pass that never holds it all."""
        start = 0
        while True:
            with self.open_read() as f:
                g = None if f is None else self._set_group(f, set_id)
                if g is None:
                    raise InputError(f"no set with id {set_id} in {self.path}; run 'clipclust info' to list sets")
                stop = min(int(g["keys"].shape[0]), start + chunk)
                if stop <= start:
                    return
                keys, data = _decode(g["keys"][start:stop]), g["data"][start:stop]
            if data.dtype == object:
                data = np.array(_decode(data), dtype=object)
            yield keys, data
            start = stop

    def resolve_set(self, spec: str, *, model: str | None = None, keyed_by: str | None = "item") -> SetInfo:
        """Find one set by id, by its exact name ('fused-label:This is digit <>'), or by kind ('fused').

        Ambiguity is an input error that lists the candidates, so a script never silently picks one.
        """
        sets = [s for s in self.list_sets() if keyed_by is None or s.keyed_by == keyed_by]
        if model:
            sets = [s for s in sets if s.model == model or s.model.endswith(model)]
        for s in sets:
            if s.id == spec:
                return s
        for test in (
            lambda s: s.name == spec,
            lambda s: s.kind == spec,
            lambda s: s.kind.startswith(spec + "-") or s.name.startswith(spec + ":"),
        ):
            found = [s for s in sets if test(s)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                listing = "; ".join(f"{s.id} = {s.name} [{s.model}]" for s in found)
                raise InputError(f"'{spec}' matches {len(found)} sets ({listing}); pass a full name or id")
        names = ", ".join(sorted({s.name for s in sets})) or "none"
        raise InputError(f"no stored set matches '{spec}' (known: {names}); run 'clipclust embed' first")

    # ------------------------------------------------------------------ clusterings
    def save_clustering(
        self,
        name: str,
        *,
        keys: Sequence[str],
        ids: np.ndarray,
        params: dict[str, Any],
        centroids: np.ndarray | None = None,
        cluster_names: Sequence[str] | None = None,
        extra: dict[str, np.ndarray | Sequence[str]] | None = None,
    ) -> None:
        """Store (or replace) a named clustering: per-item ids, centroids, parameters, provenance."""
        with self.open_write() as f:
            root = f.require_group("clusterings")
            if name in root:
                del root[name]
            g = root.create_group(name)
            g.create_dataset("keys", data=np.array(list(keys), dtype=_SHA))
            g.create_dataset("ids", data=np.asarray(ids, dtype=np.int64))
            if centroids is not None:
                g.create_dataset("centroids", data=np.asarray(centroids, dtype=np.float32))
            if cluster_names is not None:
                g.create_dataset("names", data=np.array(list(cluster_names), dtype=object), dtype=_STR)
            for key, values in (extra or {}).items():
                arr = np.asarray(values)
                if arr.dtype.kind in "OUS":
                    g.create_dataset(key, data=np.array([str(v) for v in values], dtype=object), dtype=_STR)
                else:
                    g.create_dataset(key, data=arr)
            g.attrs["params"] = json.dumps(params, sort_keys=True, default=str)
            g.attrs["created"] = now_iso()
            g.attrs["provenance"] = json.dumps({"versions": library_versions()}, sort_keys=True)

    def list_clusterings(self) -> list[str]:
        with self.open_read() as f:
            return [] if f is None or "clusterings" not in f else sorted(f["clusterings"].keys())

    def read_clustering(self, name: str) -> dict[str, Any]:
        with self.open_read() as f:
            if f is None or f"clusterings/{name}" not in f:
                known = ", ".join(self._names_in(f, "clusterings")) or "none"
                raise InputError(f"no clustering named '{name}' (known: {known}); run 'clipclust cluster' first")
            g = f[f"clusterings/{name}"]
            out: dict[str, Any] = {"name": name, "params": json.loads(g.attrs["params"]), "created": g.attrs["created"]}
            for key, ds in g.items():
                data = ds[:]
                out[key] = _decode(data) if data.dtype.kind in "OS" else data
            return out

    @staticmethod
    def _names_in(f: h5py.File | None, group: str) -> list[str]:
        return [] if f is None or group not in f else sorted(f[group].keys())

    # ------------------------------------------------------------------ model-call answers
    def get_many(self, keys: list[str]) -> dict[str, str]:
        """The CallStore protocol: cached answers for the keys present."""
        with self.open_read() as f:
            if f is None or "calls" not in f:
                return {}
            g = f["calls"]
            index = {k: i for i, k in enumerate(_decode(g["keys"][:]))}
            rows = sorted((index[k], k) for k in set(keys) if k in index)
            if not rows:
                return {}
            values = g["values"]
            return {k: _decode([values[i]])[0] for i, k in rows}

    def put_many(self, entries: dict[str, str]) -> None:
        """The CallStore protocol: append answers (keys already present keep their first answer)."""
        if not entries:
            return
        with self.open_write() as f:
            g = f.require_group("calls")
            if "keys" not in g:
                _create_rows(g, "keys", _STR)
                _create_rows(g, "values", _STR)
            have = set(_decode(g["keys"][:]))
            new = [(k, v) for k, v in entries.items() if k not in have]
            if new:
                _append(g["keys"], [k for k, _ in new])
                _append(g["values"], [v for _, v in new])

    def iter_calls(self, chunk: int = 65536) -> Iterator[dict[str, str]]:
        """The stored answers block by block, keyed as stored, for copying them into another workspace.

        ``put_many`` of a block stores the answers under the same keys (stored keys are kept as they are).
        """
        start = 0
        while True:
            with self.open_read() as f:
                if f is None or "calls" not in f:
                    return
                g = f["calls"]
                stop = min(int(g["keys"].shape[0]), start + chunk)
                if stop <= start:
                    return
                block = dict(zip(_decode(g["keys"][start:stop]), _decode(g["values"][start:stop])))
            yield block
            start = stop

    def count_calls(self) -> int:
        with self.open_read() as f:
            return 0 if f is None or "calls" not in f else int(f["calls/keys"].shape[0])

    # ------------------------------------------------------------------ small memo (file hashes)
    def memo_get(self, key: str) -> Any:
        with self.open_read() as f:
            if f is None or "memo" not in f.attrs:
                return None
            return json.loads(f.attrs["memo"]).get(key)

    def memo_put(self, key: str, value: Any) -> None:
        with self.open_write() as f:
            memo = json.loads(f.attrs["memo"]) if "memo" in f.attrs else {}
            memo[key] = value
            f.attrs["memo"] = json.dumps(memo, sort_keys=True)
