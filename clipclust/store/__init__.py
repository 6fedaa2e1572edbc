"""The HDF5 workspace: one file holding items, embedding sets, clusterings and model-call answers.

The file is opened only for the moment of a read or a batch write, under an exclusive lock file
(``PATH.lock``), and every write is one transaction guarded by a rollback journal (``PATH.journal``):
kill -9 at any instant leaves the file as it was before the interrupted batch.  One module per concern:
files (open, lock, format), journal, items, sets (``SetSpec`` in specs), clusterings, calls, memo, check;
``Workspace`` (workspace.py) holds one object per concern.  The layout is documented in
docs/cache-format.md and is plain h5py.
"""

from __future__ import annotations

from clipclust.store.clusterings import ClusteringRecord
from clipclust.store.files import (FORMAT_NAME, FORMAT_VERSION, NotAWorkspace, ReadOnlyWorkspace,
                                   default_lock_timeout)
from clipclust.store.items import ItemRecord, ItemTable
from clipclust.store.rows import now_iso, short_hash
from clipclust.store.sets import SetInfo
from clipclust.store.specs import SetSpec
from clipclust.store.versions import library_versions
from clipclust.store.workspace import Workspace


__all__ = [
    "ClusteringRecord", "FORMAT_NAME", "FORMAT_VERSION", "ItemRecord", "ItemTable", "NotAWorkspace", "ReadOnlyWorkspace", "SetInfo", "SetSpec", "Workspace", "default_lock_timeout",
    "library_versions", "now_iso", "short_hash",
]
