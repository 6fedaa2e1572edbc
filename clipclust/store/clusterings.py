"""Clusterings: named groups of per-item cluster ids, centroids and parameters, replaced whole."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import h5py
import numpy as np

from clipclust.errors import InputError, step
from clipclust.store.files import WorkspaceFile
from clipclust.store.rows import SHA, STR, decode, now_iso
from clipclust.store.versions import library_versions


@dataclass
class ClusteringRecord:
    """One clustering to store: what :meth:`Clusterings.save` takes, as one value."""

    name: str
    keys: Sequence[str]
    ids: np.ndarray
    params: dict[str, Any]
    centroids: np.ndarray | None = None
    cluster_names: Sequence[str] | None = None
    extra: dict[str, np.ndarray | Sequence[str]] | None = None


class Clusterings:
    """The named clusterings of a workspace."""

    def __init__(self, file: WorkspaceFile) -> None:
        self._file = file

    def save(
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
        """Store (or replace) a named clustering: per-item ids, centroids, parameters, provenance.

        The new group is written complete under a temporary name and only then swapped in, all in one
        transaction: a failure at any point leaves the previous clustering as it was.
        """
        self.save_many([ClusteringRecord(name, keys, ids, params, centroids, cluster_names, extra)])

    def save_many(self, records: Sequence["ClusteringRecord"], remove: Sequence[str] = ()) -> None:
        """Store several clusterings and delete the ``remove`` ones in one transaction (the levels of a
        taxonomy land together, and a re-run with fewer levels leaves none of the old ones behind)."""
        with self._file.open_write() as f:
            root = f.require_group("clusterings")
            for record in records:
                _write(root, record)
            for name in remove:
                if name in root and name not in {r.name for r in records}:
                    del root[name]

    def names(self) -> list[str]:
        with self._file.open_read() as f:
            return _names_in(f)

    def read(self, name: str) -> dict[str, Any]:
        with self._file.open_read() as f:
            if f is None or f"clusterings/{name}" not in f or name.endswith(".replacing"):
                known = ", ".join(_names_in(f)) or "none"
                raise InputError(f"no clustering named '{name}' (known: {known}); run {step('cluster')} first")
            g = f[f"clusterings/{name}"]
            out: dict[str, Any] = {"name": name, "params": json.loads(g.attrs["params"]), "created": g.attrs["created"]}
            for key, ds in g.items():
                data = ds[:]
                out[key] = decode(data) if data.dtype.kind in "OS" else data
            return out

    def params(self, name: str) -> dict[str, Any] | None:
        """The stored parameters of a clustering (None when absent), without reading its rows."""
        with self._file.open_read() as f:
            if f is None or f"clusterings/{name}" not in f:
                return None
            return json.loads(f[f"clusterings/{name}"].attrs["params"])



def _names_in(f: h5py.File | None) -> list[str]:
    if f is None or "clusterings" not in f:
        return []
    return sorted(n for n in f["clusterings"].keys() if not n.endswith(".replacing"))


def _write(root: h5py.Group, record: ClusteringRecord) -> None:
    """Write one clustering complete under a temporary name, then swap it in (inside the caller's transaction)."""
    name = record.name
    staging = f"{name}.replacing"
    if staging in root:
        del root[staging]
    g = root.create_group(staging)
    g.create_dataset("keys", data=np.array(list(record.keys), dtype=SHA))
    g.create_dataset("ids", data=np.asarray(record.ids, dtype=np.int64))
    if record.centroids is not None:
        g.create_dataset("centroids", data=np.asarray(record.centroids, dtype=np.float32))
    if record.cluster_names is not None:
        g.create_dataset("names", data=np.array(list(record.cluster_names), dtype=object), dtype=STR)
    for key, values in (record.extra or {}).items():
        arr = np.asarray(values)
        if arr.dtype.kind in "OUS":
            g.create_dataset(key, data=np.array([str(v) for v in values], dtype=object), dtype=STR)
        else:
            g.create_dataset(key, data=arr)
    g.attrs["params"] = json.dumps(record.params, sort_keys=True, default=str)
    g.attrs["created"] = now_iso()
    g.attrs["provenance"] = json.dumps({"versions": library_versions()}, sort_keys=True)
    if name in root:
        del root[name]
    root.move(staging, name)
