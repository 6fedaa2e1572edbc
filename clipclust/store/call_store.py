"""Cached model answers (the CallStore protocol): fixed-width keys and one byte column of answer text.

Format 1 kept keys and answers as variable-length strings, which live in HDF5's global heap: reading
the key column means one heap lookup per key.  Format 2 stores keys as fixed 64-byte digests (a column
that reads as one array, so the per-process index is built fast) and appends the UTF-8 bytes of each
answer to ``text`` and its end offset to ``end`` (read back with two small slices).  A format-1 call
store is converted by the first write, inside that write's transaction.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterator

import h5py
import numpy as np

from clipclust.store.files import WorkspaceFile
from clipclust.store.rows import SHA, append, create_rows, decode, read_rows

_HEX64 = re.compile(r"[0-9a-f]{64}")


def call_key(key: str) -> str:
    """The stored key: the caller's key when it is already a sha256 hex digest (all of clipclust's are)."""
    return key if _HEX64.fullmatch(key) else hashlib.sha256(key.encode("utf-8")).hexdigest()


class Calls:
    """The call store of a workspace: model answers by key, the CallStore protocol of the models."""

    def __init__(self, file: WorkspaceFile) -> None:
        self._file = file

    def _index(self, f: h5py.File) -> dict[str, int]:
        return self._file.key_indexes.of(f["calls/keys"], self._file.guard(f) + "|calls")

    def get_many(self, keys: list[str]) -> dict[str, str]:
        """The CallStore protocol: cached answers for the keys present."""
        with self._file.open_read() as f:
            if f is None or "calls/keys" not in f:
                return {}
            g = f["calls"]
            if "values" in g:  # format 1, not yet upgraded by a write
                index = self._file.key_indexes.of(g["keys"], self._file.guard(f) + "|calls-v1")
                found = {k: index[k] for k in set(keys) if k in index}
                return {k: decode([g["values"][i]])[0] for k, i in found.items()}
            index = self._index(f)
            found = {k: index[c] for k in set(keys) if (c := call_key(k)) in index}
            if not found:
                return {}
            names = list(found)
            rows = np.array([found[k] for k in names])
            ends = read_rows(g["end"], rows)
            starts = np.where(rows > 0, read_rows(g["end"], np.maximum(rows - 1, 0)), 0)
            text = g["text"]
            return {k: text[s:e].tobytes().decode("utf-8") for k, s, e in zip(names, starts, ends)}

    def put_many(self, entries: dict[str, str]) -> None:
        """The CallStore protocol: append answers (keys already present keep their first answer)."""
        if not entries:
            return
        with self._file.open_write() as f:
            g = f.require_group("calls")
            if "keys" not in g:
                _new_calls(g)
            have = self._index(f)
            new: dict[str, bytes] = {}
            for k, v in entries.items():
                c = call_key(k)
                if c not in have and c not in new:
                    new[c] = v.encode("utf-8")
            if new:
                _append_calls(g, list(new), list(new.values()))

    def count(self) -> int:
        with self._file.open_read() as f:
            return 0 if f is None or "calls/keys" not in f else int(f["calls/keys"].shape[0])

    def blocks(self, chunk: int = 65536) -> Iterator[dict[str, str]]:
        """The stored answers block by block, keyed as stored, for copying them into another workspace.

        ``put_many`` of a block stores the answers under the same keys (stored keys are kept as they are).
        """
        start = 0
        while True:
            with self._file.open_read() as f:
                if f is None or "calls/keys" not in f:
                    return
                g = f["calls"]
                stop = min(int(g["keys"].shape[0]), start + chunk)
                if stop <= start:
                    return
                keys = decode(g["keys"][start:stop])
                if "values" in g:  # format 1, not yet upgraded by a write
                    values = decode(g["values"][start:stop])
                else:
                    first = int(g["end"][start - 1]) if start else 0
                    bounds = np.concatenate([[first], g["end"][start:stop]]) - first
                    blob = g["text"][first:first + int(bounds[-1])].tobytes()
                    values = [blob[a:b].decode("utf-8") for a, b in zip(bounds[:-1], bounds[1:])]
            yield dict(zip(keys, values))
            start = stop


def _new_calls(g: h5py.Group) -> None:
    create_rows(g, "keys", SHA)
    create_rows(g, "end", "int64")
    g.create_dataset("text", shape=(0,), maxshape=(None,), dtype="uint8", chunks=(1 << 16,))


def _append_calls(g: h5py.Group, keys: list[str], blobs: list[bytes]) -> None:
    text, end = g["text"], g["end"]
    base = int(text.shape[0])
    append(g["keys"], np.array(keys, dtype=SHA))
    append(end, base + np.cumsum([len(b) for b in blobs], dtype=np.int64))
    append(text, np.frombuffer(b"".join(blobs), dtype=np.uint8))


def upgrade(f: h5py.File) -> None:
    """Format 1 -> 2: convert a format-1 call store (the one change between the formats)."""
    if "calls/values" in f:
        old = f["calls"]
        keys, values = decode(old["keys"][:]), decode(old["values"][:])
        del f["calls"]
        g = f.create_group("calls")
        _new_calls(g)
        seen: dict[str, bytes] = {}
        for k, v in zip(keys, values):
            seen.setdefault(call_key(k), v.encode("utf-8"))
        if seen:
            _append_calls(g, list(seen), list(seen.values()))
