"""The workspace: one object per concern of the file, held together and spoken to through one API.

A ``Workspace`` holds its parts, each a small class over the same :class:`WorkspaceFile`: ``Items``,
``Sets``, ``Clusterings``, ``Calls`` and ``Memo``.  Its methods are the names the rest of clipclust uses
(``ws.read_set``, ``ws.put_many``, ...) and hand the call to the part that owns it; only
:meth:`Workspace.write_batch` spans two parts (items and sets), in one transaction.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np

from clipclust.store import call_store
from clipclust.store.call_store import Calls
from clipclust.store.clusterings import ClusteringRecord, Clusterings
from clipclust.store.files import WorkspaceFile
from clipclust.store.items import ItemRecord, Items, ItemTable
from clipclust.store.memo import Memo
from clipclust.store.sets import SetInfo, Sets
from clipclust.store.specs import SetSpec, as_spec

__all__ = ["Workspace"]


class Workspace:
    """The on-disk workspace. Every public method opens the file briefly under the lock.

    Library code takes a ``Workspace``; it never prints and knows nothing of the command line.
    """

    def __init__(self, path: str | os.PathLike[str], lock_timeout: float | None = None):
        self._file = WorkspaceFile(path, lock_timeout, upgrade=call_store.upgrade)
        self._items = Items(self._file)
        self._sets = Sets(self._file)
        self._clusterings = Clusterings(self._file)
        self._calls = Calls(self._file)
        self._memo = Memo(self._file)

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    # the file

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def lock_timeout(self) -> float:
        return self._file.lock_timeout

    @property
    def rolled_back(self) -> int:
        """Interrupted transactions this object found and undid."""
        return self._file.rolled_back

    def exists(self) -> bool:
        return self._file.exists()

    def open_read(self) -> contextlib.AbstractContextManager[h5py.File | None]:
        """The file open read-only under the lock (None when it does not exist yet)."""
        return self._file.open_read()

    def open_write(self) -> contextlib.AbstractContextManager[h5py.File]:
        """One transaction: everything written inside lands together or, on any failure or kill, not at all."""
        return self._file.open_write()

    # items

    def items(self) -> ItemTable:
        return self._items.table()

    def item_counts(self) -> dict[tuple[str, str], int]:
        """(split, label) -> number of items, reading only those two columns."""
        return self._items.counts()

    def count_items(self) -> int:
        return self._items.count()

    def upsert_items(self, records: Sequence[ItemRecord]) -> None:
        self._items.upsert(records)

    # sets

    def write_batch(
        self,
        *,
        items: Sequence[ItemRecord] = (),
        rows: Sequence[tuple[SetSpec | dict[str, Any], Sequence[str], np.ndarray | Sequence[Any]]] = (),
    ) -> int:
        """Write one batch in one transaction: item records and rows for any number of sets.

        Each entry of ``rows`` is ``(spec, keys, data)`` where ``spec`` is a :class:`SetSpec` (or its dict
        form).  Keys the set already holds are skipped, so two processes
        computing the same batch never duplicate rows, unless ``spec.replace`` is true: then their
        rows are overwritten (a row that depends on an item's label after relabelling).  Returns the
        number of rows added or replaced.
        """
        added = 0
        with self._file.open_write() as f:
            if items:
                self._items.upsert_in(f, items)
            for spec, keys, data in rows:
                added += self._sets.write_in(f, as_spec(spec), list(keys), data)
        return added

    def set_keys(self, set_id: str) -> set[str]:
        """The keys (item sha256s or class names) a set already holds."""
        return self._sets.keys(set_id)

    def set_digest(self, set_id: str) -> str:
        """A token that changes whenever rows are added to or replaced in the set; read without reading rows."""
        return self._sets.digest(set_id)

    def list_sets(self) -> list[SetInfo]:
        return self._sets.infos()

    def is_derived(self, set_id: str) -> bool | None:
        """Whether a set is computed on read (None when the workspace has no such set)."""
        return self._sets.is_derived(set_id)

    def read_set(self, set_id: str, stored: bool = False) -> tuple[list[str], np.ndarray]:
        """All keys and rows of a set, in storage order; ``stored``: a derived set's rows as the file holds them."""
        return self._sets.read(set_id, stored)

    def iter_set(self, set_id: str, chunk: int = 65536, stored: bool = False) -> Iterator[tuple[list[str], np.ndarray]]:
        """A set's keys and rows block by block (one open per block): a pass that never holds it all."""
        return self._sets.blocks(set_id, chunk, stored)

    def set_storage_bytes(self) -> dict[str, int]:
        """Bytes each set takes in the file, by set id."""
        return self._sets.storage_bytes()

    def resolve_set(self, spec: str, *, model: str | None = None, keyed_by: str | None = "item") -> SetInfo:
        """Find one set by id, by its exact name, or by kind; ambiguity is an input error."""
        return self._sets.resolve(spec, model=model, keyed_by=keyed_by)

    # clusterings

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
        """Store (or replace, all or nothing) a named clustering: per-item ids, centroids, parameters."""
        self._clusterings.save(name, keys=keys, ids=ids, params=params, centroids=centroids,
                               cluster_names=cluster_names, extra=extra)

    def save_clusterings(self, records: Sequence[ClusteringRecord], remove: Sequence[str] = ()) -> None:
        """Store several clusterings (a taxonomy's levels) and delete ``remove``, all in one transaction."""
        self._clusterings.save_many(records, remove)

    def list_clusterings(self) -> list[str]:
        return self._clusterings.names()

    def read_clustering(self, name: str) -> dict[str, Any]:
        return self._clusterings.read(name)

    def clustering_params(self, name: str) -> dict[str, Any] | None:
        """The stored parameters of a clustering (None when absent), without reading its rows."""
        return self._clusterings.params(name)

    # cached model calls (the CallStore protocol) and the memo

    def get_many(self, keys: list[str]) -> dict[str, str]:
        return self._calls.get_many(keys)

    def put_many(self, entries: dict[str, str]) -> None:
        self._calls.put_many(entries)

    def count_calls(self) -> int:
        return self._calls.count()

    def iter_calls(self, chunk: int = 65536) -> Iterator[dict[str, str]]:
        """The stored answers block by block, keyed as stored (``put_many`` of a block copies them)."""
        return self._calls.blocks(chunk)

    def memo_get(self, key: str) -> Any:
        return self._memo.get(key)

    def memo_put(self, key: str, value: Any) -> None:
        self._memo.put(key, value)
