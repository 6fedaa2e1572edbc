"""The items a report shows: every item of its clusterings, once, with what the workspace knows of them.

Clusterings of the same items share rows, so a report of three clusterings of 100k images holds 100k
paths, not 300k; each clustering refers to the rows of its own items.  Descriptions come along for
search and for the cards of text-only items: those of the description sets the clusterings were made
from or, when none was, of the workspace's newest description set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from clipclust.methods.inputs import DESCRIPTION_KINDS
from clipclust.store import Workspace

__all__ = ["Catalog", "TEXT_LIMIT", "TextSet", "build_catalog", "text_sets"]

TEXT_LIMIT = 1000  # characters of a description kept in the report


@dataclass
class Catalog:
    """Parallel columns, one row per distinct item of the report's clusterings."""

    keys: list[str]
    paths: list[str]
    labels: list[str]
    widths: np.ndarray
    sizes: np.ndarray
    row_of: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        return np.array([self.row_of[k] for k in keys], dtype=np.int64)


@dataclass
class TextSet:
    """One description set's texts by catalog row ("" where it holds none)."""

    id: str
    name: str
    texts: list[str]


def build_catalog(workspace: Workspace, clusterings: Sequence[dict[str, Any]]) -> Catalog:
    """The union of the clusterings' items, in the order they first appear."""
    row_of: dict[str, int] = {}
    for stored in clusterings:
        for key in stored["keys"]:
            if key not in row_of:
                row_of[key] = len(row_of)
    keys = list(row_of)
    items = workspace.items()
    at = items.index()
    where = [at.get(k) for k in keys]

    def column(values: Sequence[Any], default: Any) -> list[Any]:
        return [values[i] if i is not None else default for i in where]

    return Catalog(keys=keys, paths=column(items.path, ""), labels=column(items.label, ""),
                   widths=np.array(column(items.width, 0), dtype=np.int64),
                   sizes=np.array(column(items.size, 0), dtype=np.int64), row_of=row_of)


def text_sets(workspace: Workspace, catalog: Catalog, clusterings: Sequence[dict[str, Any]]) -> list[TextSet]:
    """The description sets whose texts the report carries (see the module docstring)."""
    known = {s.id: s for s in workspace.list_sets() if s.kind in DESCRIPTION_KINDS and s.keyed_by == "item"}
    chosen = [ref["id"] for stored in clusterings
              if (ref := stored["params"].get("sets", {}).get("input") or {}).get("id") in known]
    if not chosen and known:
        chosen = [max(known.values(), key=lambda s: (s.updated, s.created)).id]
    out = []
    for set_id in dict.fromkeys(chosen):
        texts = [""] * len(catalog)
        for keys, rows in workspace.iter_set(set_id):
            for key, text in zip(keys, rows):
                row = catalog.row_of.get(key)
                if row is not None:
                    texts[row] = str(text)[:TEXT_LIMIT]
        if any(texts):
            out.append(TextSet(set_id, known[set_id].name, texts))
    return out
