"""Stored results as rows and arrays for other tools: `clipclust export` writes them.

A clustering: one row per clustered item, then (fused workflow) one per classified test item, with the
columns of ``COLUMNS``: where the file is, its content hash, its label and split, its cluster id (-1 =
noise or no cluster), the cluster's name when the method gives one, and the predicted class.  A level of a
taxonomy (``--levels``) adds, for every level i (1 = coarsest), ``level{i}`` and ``level{i}_name`` (the
item's cluster at that level) and ``parent``: the id its cluster's parent has in the next coarser level.

A stored set (vectors or descriptions): one row per key with ``SET_COLUMNS`` (key = content hash, or the
class name of a text-embedding set) and then the text, or the vector as columns v0..v{D-1} (CSV), a list
(JSON lines) or one float32 matrix (.npy, with the keys beside it in FILE.keys.csv).  Parquet is not
offered: it would need pyarrow, which clipclust does not depend on.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TextIO

import numpy as np

from clipclust.store import SetInfo, Workspace
from clipclust.commands.levels import levels_of
from clipclust.commands.selection import choose_clustering
from clipclust.core.outputs import output_path
from clipclust.errors import InputError, step

__all__ = ["COLUMNS", "FORMATS", "SET_COLUMNS", "SET_FORMATS", "SetExport", "clustering_rows", "columns_of",
           "export_set", "write_rows"]

COLUMNS = ("path", "sha256", "label", "split", "cluster", "cluster_name", "predicted")
FORMATS = ("csv", "jsonl")
SET_COLUMNS = ("key", "path", "label", "split")
SET_FORMATS = ("csv", "jsonl", "npy")


def clustering_rows(workspace: Workspace, name: str | None = None) -> list[dict[str, Any]]:
    """The rows of a stored clustering (the only one when ``name`` is None)."""
    name = choose_clustering(workspace, name)
    stored = workspace.read_clustering(name)
    items = workspace.items()
    row_of = items.index()
    names = list(stored.get("names") or [])

    def row(key: str, cluster_id: int, predicted: str) -> dict[str, Any]:
        i = row_of.get(key)
        return {
            "path": items.path[i] if i is not None else "",
            "sha256": key,
            "label": items.label[i] if i is not None else "",
            "split": items.split[i] if i is not None else "",
            "cluster": int(cluster_id),
            "cluster_name": names[cluster_id] if 0 <= cluster_id < len(names) else "",
            "predicted": predicted,
        }

    rows = [row(k, int(c), "") for k, c in zip(stored["keys"], stored["ids"])]
    if "test_keys" in stored:
        rows += [row(k, int(c), str(p)) for k, c, p in zip(stored["test_keys"], stored["test_ids"], stored["predicted"])]
    levels = levels_of(workspace, stored["params"])
    if levels:
        parents = list(stored["params"].get("parents") or [])
        at = [{key: i for i, key in enumerate(level.keys)} for level in levels]
        for r in rows:
            for level, where in zip(levels, at):
                i = where.get(r["sha256"])
                cluster = int(level.ids[i]) if i is not None else -1
                r[f"level{level.level}"] = cluster
                r[f"level{level.level}_name"] = level.cluster_name(cluster)
            c = r["cluster"]
            r["parent"] = parents[c] if 0 <= c < len(parents) else -1
    return rows


def columns_of(rows: Sequence[dict[str, Any]]) -> Sequence[str]:
    """The columns of a clustering's rows: ``COLUMNS``, and a taxonomy's level columns when it has levels."""
    return list(rows[0]) if rows else COLUMNS


def _set_rows(workspace: Workspace, info: SetInfo, chunk: int) -> Iterator[tuple[dict[str, Any], Any]]:
    """(key, path, label, split) and the row, for each row of a set, read block by block.

    Path, label and split are empty for class-keyed sets (text embeddings keyed by class name).
    """
    items = workspace.items() if info.keyed_by == "item" else None
    row_of = items.index() if items is not None else {}
    for keys, data in workspace.iter_set(info.id, chunk):
        for key, row in zip(keys, data):
            i = row_of.get(key)
            if items is None or i is None:
                yield {"key": key, "path": "", "label": "", "split": ""}, row
            else:
                yield {"key": key, "path": items.path[i], "label": items.label[i], "split": items.split[i]}, row


@dataclass
class SetExport:
    """What export_set wrote: which set, how many rows, and the files (none when it wrote to a stream)."""

    set: SetInfo
    rows: int
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"set": {"id": self.set.id, "name": self.set.name, "model": self.set.model,
                        "shape": list(self.set.shape)}, "rows": self.rows, "files": self.files}


def export_set(workspace: Workspace, spec: str, fmt: str, stream: TextIO | None = None, out: str | Path | None = None,
               model: str | None = None, chunk: int = 65536) -> SetExport:
    """Write a stored set (found as ``resolve_set`` finds it) as CSV or JSON lines on ``stream``, or as .npy at ``out``.

    The set is read block by block, never whole.  Vectors keep float32 precision: CSV writes 9
    significant digits, which read back to the same float32.
    """
    if fmt not in SET_FORMATS:
        raise InputError(f"format {fmt}: a set exports as one of {', '.join(SET_FORMATS)}")
    if not workspace.exists():
        raise InputError(f"no workspace at {workspace.path}; run {step('embed', 'IMAGES')} first")
    info = workspace.resolve_set(spec, model=model, keyed_by=None)
    is_text = len(info.shape) == 1  # text sets hold one string per key; vector sets a row of floats
    rows = _set_rows(workspace, info, chunk)
    if fmt == "npy":
        if is_text:
            raise InputError(f"'{info.name}' holds text; export it as csv or jsonl, not npy")
        if out is None:
            raise InputError("npy is binary: name the output file (e.g. vectors.npy; its keys go to vectors.keys.csv)")
        target = Path(out) if str(out).endswith(".npy") else Path(f"{out}.npy")
        keys_file = target.with_suffix(".keys.csv")
        with output_path(target) as tmp_matrix, output_path(keys_file) as tmp_keys:
            matrix = np.lib.format.open_memmap(tmp_matrix, mode="w+", dtype=np.float32, shape=info.shape)

            def keys_filling_matrix() -> Iterator[dict[str, Any]]:
                for n, (meta, row) in enumerate(rows):
                    if n == len(matrix):  # rows appended since the set was looked up wait for the next export
                        return
                    matrix[n] = row
                    yield meta

            with open(tmp_keys, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
                count = write_rows(keys_filling_matrix(), "csv", fh, columns=SET_COLUMNS)
            matrix.flush()
            del matrix
        return SetExport(info, count, [str(target), str(keys_file)])
    assert stream is not None
    if is_text:
        texts = ({**meta, "text": text.decode("utf-8") if isinstance(text, bytes) else str(text)}
                 for meta, text in rows)
        return SetExport(info, write_rows(texts, fmt, stream, columns=(*SET_COLUMNS, "text")))
    width = int(np.prod(info.shape[1:]))
    if fmt == "csv":
        names = [f"v{j}" for j in range(width)]
        table = ({**meta, **dict(zip(names, (format(v, ".9g") for v in np.ravel(row).tolist())))} for meta, row in rows)
        return SetExport(info, write_rows(table, fmt, stream, columns=(*SET_COLUMNS, *names)))
    lines = ({**meta, "vector": np.asarray(row, dtype=np.float32).tolist()} for meta, row in rows)
    return SetExport(info, write_rows(lines, fmt, stream, columns=(*SET_COLUMNS, "vector")))


def write_rows(rows: Iterable[dict[str, Any]], fmt: str, stream: TextIO, columns: Sequence[str] = COLUMNS) -> int:
    """Write rows as CSV (with a header of ``columns``) or JSON lines; returns the number of rows written."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(stream, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow(r)
            count += 1
    else:
        for r in rows:
            stream.write(json.dumps(r, ensure_ascii=False) + "\n")
            count += 1
    return count
