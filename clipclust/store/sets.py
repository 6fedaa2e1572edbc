"""Sets: item- or class-keyed rows (embeddings, similarities, descriptions), append-only by key."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import h5py
import numpy as np

from clipclust.errors import InputError, opt, step
from clipclust.store import derived as _derived
from clipclust.store.files import WorkspaceFile
from clipclust.store.specs import SetSpec
from clipclust.store.rows import SHA, STR, append, create_rows, decode, now_iso, write_rows
from clipclust.store.versions import library_versions

RUN_FIELDS = ("precision", "device", "loader", "versions")
# vectors may be stored at half size (a set keeps the dtype it was created with); reads give float32
FLOAT_STORAGE = {"float32": "float32", "float16": "float16"}  # what may differ between runs adding to one set


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
    derived: bool = False  # computed on read from stored image and text vectors (store/derived.py)
    derived_bytes: int = 0  # what a derived set would take stored: the bytes it does not take


def _next_digest(previous: str, keys: Sequence[str], rows: int) -> str:
    h = hashlib.sha256(previous.encode())
    h.update(str(rows).encode())
    for key in keys:
        h.update(key.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _as_read(data: np.ndarray) -> np.ndarray:
    """Rows as callers use them: str objects for text sets, float32 whatever the storage."""
    if data.dtype == object:
        return np.array(decode(data), dtype=object)
    return data.astype(np.float32, copy=False)


class Sets:
    """The sets of a workspace: rows appended by key inside a write transaction, read whole or block by block."""

    def __init__(self, file: WorkspaceFile) -> None:
        self._file = file

    @staticmethod
    def _group(f: h5py.File, set_id: str) -> h5py.Group | None:
        path = f"sets/{set_id}"
        return f[path] if path in f else None

    def _existing(self, f: h5py.File | None, set_id: str) -> h5py.Group:
        g = None if f is None else self._group(f, set_id)
        if g is None:
            raise InputError(f"no set with id {set_id} in {self._file.path}; run {step('info')} to list sets")
        return g

    @staticmethod
    def _create(f: h5py.File, spec: SetSpec, row_shape: tuple[int, ...], dtype: Any) -> h5py.Group:
        g = f.require_group("sets").create_group(spec.id)
        create_rows(g, "keys", SHA if spec.keyed_by == "item" else STR)
        create_rows(g, "data", dtype, row_shape)
        stamp = now_iso()
        g.attrs.update({"name": spec.name, "kind": spec.kind, "model": spec.model, "prompt": spec.prompt,
                        "keyed_by": spec.keyed_by, "created": stamp, "updated": stamp, "uid": uuid.uuid4().hex,
                        "digest": "", "provenance": json.dumps({**spec.provenance, "versions": library_versions()},
                                                               sort_keys=True)})
        for k, v in {**spec.attrs, **(_derived.recipe_attrs(spec.recipe) if spec.recipe else {})}.items():
            g.attrs[k] = v
        return g

    def _index(self, f: h5py.File, g: h5py.Group) -> dict[str, int]:
        guard = str(g.attrs.get("uid", "")) or f"{self._file.guard(f)}|{g.attrs.get('created', '')}"
        return self._file.key_indexes.of(g["keys"], guard)

    def keys(self, set_id: str) -> set[str]:
        """The keys (item sha256s or class names) a set already holds."""
        with self._file.open_read() as f:
            g = None if f is None else self._group(f, set_id)
            return set() if g is None else set(self._index(f, g))

    def digest(self, set_id: str) -> str:
        """A token that changes whenever rows are added to or replaced in the set; read without reading rows.

        Sets written before format 2 have no running digest: their token derives from the row count and
        the last update stamp.
        """
        with self._file.open_read() as f:
            g = self._existing(f, set_id)
            digest = str(g.attrs.get("digest", ""))
            return digest or _next_digest(str(g.attrs.get("updated", "")), [], int(g["keys"].shape[0]))

    def write_in(self, f: h5py.File, spec: SetSpec, keys: list[str], data: Any) -> int:
        """Inside an open transaction: append the rows of keys the set lacks (replace known ones with
        ``spec.replace``), creating the set on its first rows; returns the number added or replaced."""
        if not keys:
            return 0
        is_text = spec.dtype == "str"
        if is_text:
            values = np.asarray(data, dtype=object)
        else:
            values = np.asarray(data, dtype=_derived.TEXT_ROW if spec.recipe else np.float32)
        if not is_text and not spec.recipe and not np.isfinite(values).all():
            raise ValueError(f"set {spec.id} ({spec.name}): refusing rows that hold NaN or inf")  # callers check first
        g = self._group(f, spec.id)
        if g is None:
            if is_text:
                stored: Any = STR
            elif spec.recipe:
                stored = _derived.TEXT_ROW
            else:
                stored = np.dtype(FLOAT_STORAGE.get(spec.dtype, "float32"))
            g = self._create(f, spec, () if is_text else tuple(values.shape[1:]), stored)
        if bool(spec.recipe) != _derived.is_derived(g):
            raise ValueError(f"set {spec.id} is {'' if _derived.is_derived(g) else 'not '}derived; "
                             "rows must be written the way it was created")
        stored = self._index(f, g)
        in_batch: set[str] = set()
        keep, replace = [], []
        for i, key in enumerate(keys):
            if key in in_batch:
                continue
            in_batch.add(key)
            if key not in stored:
                keep.append(i)
            elif spec.replace:
                replace.append(i)
        if replace:
            write_rows(g["data"], [stored[keys[i]] for i in replace], values[replace])
        if keep:
            key_values = [keys[i] for i in keep]
            append(g["keys"], np.array(key_values, dtype=SHA) if g.attrs["keyed_by"] == "item" else key_values)
            append(g["data"], values[keep])
        if keep or replace:
            _note_run(g, spec.provenance, int(g["keys"].shape[0]) - len(keep))
            changed = [keys[i] for i in keep + replace]
            g.attrs["digest"] = _next_digest(str(g.attrs.get("digest", "")), changed, int(g["keys"].shape[0]))
            g.attrs["updated"] = now_iso()
        return len(keep) + len(replace)

    def infos(self) -> list[SetInfo]:
        with self._file.open_read() as f:
            if f is None or "sets" not in f:
                return []
            out = [_set_info(set_id, g) for set_id, g in f["sets"].items()]
            return sorted(out, key=lambda s: (s.model, s.name, s.created))

    def is_derived(self, set_id: str) -> bool | None:
        """Whether a set is computed on read (None when the workspace has no such set)."""
        with self._file.open_read() as f:
            g = None if f is None else self._group(f, set_id)
            return None if g is None else _derived.is_derived(g)

    def _rows(self, f: h5py.File, g: h5py.Group, keys: list[str], start: int, stop: int,
              texts: np.ndarray | None) -> np.ndarray:
        """Rows ``start:stop`` as callers use them, computing a derived set's from its sources."""
        if texts is None:
            rows = _as_read(g["data"][start:stop])
        else:
            rows = _derived.fused_rows(f, g, keys, g["data"][start:stop], texts, lambda image: self._index(f, image))
        if rows.dtype != object and not np.isfinite(rows).all():  # never scored, clustered or shown
            bad = int((~np.isfinite(rows.reshape(len(rows), -1))).any(axis=1).sum())
            raise InputError(f"set '{g.attrs.get('name', '')}' holds {bad} rows with NaN or inf (written by a broken "
                             f"model or another program); {step('check', opt('repair'))} copies the workspace "
                             "without them")
        return rows

    def read(self, set_id: str, stored: bool = False) -> tuple[list[str], np.ndarray]:
        """All keys and rows of a set, in storage order (rows are str objects for text sets).

        ``stored``: a derived set's rows as the file holds them (the text row of each key), not computed.
        """
        with self._file.open_read() as f:
            g = self._existing(f, set_id)
            keys = decode(g["keys"][:])
            texts = _derived.text_vectors(f, g) if _derived.is_derived(g) and not stored else None
            return keys, self._rows(f, g, keys, 0, len(keys), texts)

    def storage_bytes(self) -> dict[str, int]:
        """Bytes each set takes in the file (its keys and rows as stored, compressed or not), by set id."""
        with self._file.open_read() as f:
            if f is None or "sets" not in f:
                return {}
            return {set_id: int(g["keys"].id.get_storage_size()) + int(g["data"].id.get_storage_size())
                    for set_id, g in f["sets"].items()}

    def blocks(self, set_id: str, chunk: int = 65536, stored: bool = False) -> Iterator[tuple[list[str], np.ndarray]]:
        """A set's keys and rows block by block (one open per block): a pass that never holds it all.

        ``stored`` as for :meth:`read`.
        """
        start = 0
        texts: np.ndarray | None = None
        while True:
            with self._file.open_read() as f:
                g = self._existing(f, set_id)
                computed = _derived.is_derived(g) and not stored
                size = _derived.block_rows(g, chunk) if computed else chunk
                stop = min(int(g["keys"].shape[0]), start + size)
                if stop <= start:
                    return
                if texts is None and computed:  # class-keyed and small: read once per pass
                    texts = _derived.text_vectors(f, g)
                keys = decode(g["keys"][start:stop])
                data = self._rows(f, g, keys, start, stop, texts)
            yield keys, data
            start = stop

    def resolve(self, spec: str, *, model: str | None = None, keyed_by: str | None = "item") -> SetInfo:
        """Find one set by id, by its exact name ('fused-label:This is digit <>'), or by kind ('fused').

        Ambiguity is an input error that lists the candidates, so a script never silently picks one.
        """
        sets = [s for s in self.infos() if keyed_by is None or s.keyed_by == keyed_by]
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
        raise InputError(f"no stored set matches '{spec}' (known: {names}); run {step('embed')} first")


def _note_run(g: h5py.Group, provenance: Mapping[str, Any], first_row: int) -> None:
    """Record the precision, device, loader and versions of a run that adds rows, when they differ.

    ``provenance`` stays what the set was created with; ``runs`` lists each change from row
    ``first_row`` on, so rows computed another way are told apart without a per-row column.
    """
    current = {k: provenance[k] for k in RUN_FIELDS[:-1] if k in provenance}
    current["versions"] = library_versions()
    runs = json.loads(g.attrs["runs"]) if "runs" in g.attrs else []
    if runs:
        last = {k: v for k, v in runs[-1].items() if k != "from_row"}
    else:
        created = json.loads(g.attrs.get("provenance", "{}"))
        last = {k: created[k] for k in RUN_FIELDS if k in created}
    if last != current:
        runs.append({"from_row": first_row, **current})
        g.attrs["runs"] = json.dumps(runs, sort_keys=True)


def _set_info(set_id: str, g: h5py.Group) -> SetInfo:
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
    derived, derived_bytes = _derived.is_derived(g), 0
    shape = tuple(int(x) for x in g["data"].shape)
    if derived:
        shape = (shape[0], *_derived.row_shape(g))
        image = g.file.get(f"sets/{attrs.get('image_set', '')}")
        itemsize = image["data"].dtype.itemsize if image is not None else 4
        derived_bytes = int(np.prod(shape)) * itemsize
    return SetInfo(id=set_id, name=str(attrs.get("name", "")), kind=str(attrs.get("kind", "")),
                   model=str(attrs.get("model", "")), prompt=str(attrs.get("prompt", "")),
                   keyed_by=str(attrs.get("keyed_by", "item")), shape=shape,
                   created=str(attrs.get("created", "")), updated=str(attrs.get("updated", "")), attrs=attrs,
                   derived=derived, derived_bytes=derived_bytes)
