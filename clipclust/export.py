"""A stored clustering as rows for other tools: `clipclust export` writes them as CSV or JSON lines.

One row per clustered item, then (fused workflow) one per classified test item, with the columns of
``COLUMNS``: where the file is, its content hash, its label and split, its cluster id (-1 = noise or no
cluster), the cluster's name when the method gives one, and the predicted class when there is one.
"""

from __future__ import annotations

import csv
import json
from typing import Any, Iterable, TextIO

from .cache import Workspace
from .clusterings import choose_clustering

__all__ = ["COLUMNS", "FORMATS", "clustering_rows", "write_rows"]

COLUMNS = ("path", "sha256", "label", "split", "cluster", "cluster_name", "predicted")
FORMATS = ("csv", "jsonl")


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
    return rows


def write_rows(rows: Iterable[dict[str, Any]], fmt: str, stream: TextIO) -> int:
    """Write rows as CSV (with a header) or JSON lines; returns the number of rows written."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(stream, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow(r)
            count += 1
    else:
        for r in rows:
            stream.write(json.dumps(r, ensure_ascii=False) + "\n")
            count += 1
    return count
