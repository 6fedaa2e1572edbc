"""The report's map: 2-D coordinates of the items, from one vector set, kept in the workspace.

One map serves every clustering of the report, so switching clusterings recolours the same points.  Its
vectors come from the image set that holds the most of the report's items (or the set named), else from
a clustering's own input vectors.  The coordinates are `visualize`'s (:func:`projection`): stored as a
``tsne`` / ``pca`` set and reused by the next report or plot of the same points.  ``auto`` draws t-SNE up
to ``TSNE_LIMIT`` points and PCA beyond, where t-SNE would take many minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from clipclust.commands.visualize import projection
from clipclust.core.progress import Reporter
from clipclust.errors import InputError, opt
from clipclust.methods.inputs import DESCRIPTION_KINDS, resolve_item_set, set_ref
from clipclust.store import SetInfo, Workspace

__all__ = ["LAYOUTS", "MapLayout", "TSNE_LIMIT", "map_layout"]

LAYOUTS = ("auto", "tsne", "pca")
TSNE_LIMIT = 10_000


@dataclass
class MapLayout:
    """Where each item sits on the map (NaN: not on it), and the vectors it was made from."""

    kind: str
    set_name: str
    xy: np.ndarray
    matrix: np.ndarray
    row_of: dict[str, int]
    cached: bool

    @property
    def n_points(self) -> int:
        return int(np.isfinite(self.xy[:, 0]).sum())

    def rows(self, keys: Sequence[str]) -> np.ndarray | None:
        """The map's vectors of ``keys``, in that order (None when one of them is not on the map)."""
        if any(k not in self.row_of for k in keys):
            return None
        return self.matrix[[self.row_of[k] for k in keys]]


def _vector_sets(workspace: Workspace) -> list[SetInfo]:
    return [s for s in workspace.list_sets()
            if s.keyed_by == "item" and len(s.shape) == 2 and s.kind not in DESCRIPTION_KINDS
            and s.kind not in ("tsne", "pca")]


def _choose_set(workspace: Workspace, keys: Sequence[str], on: str | None, inputs: Sequence[dict[str, Any]]
                ) -> SetInfo | None:
    if on is not None:
        info = resolve_item_set(workspace, on)
        if len(info.shape) != 2:
            raise InputError(f"'{info.name}' holds no vectors to place items on a map; name a vector set",
                             option="map_on")
        return info
    wanted = set(keys)
    candidates = _vector_sets(workspace)
    input_ids = [ref.get("id") for ref in inputs]
    best: tuple[tuple[int, int, int], SetInfo] | None = None
    for info in candidates:
        covered = len(wanted & workspace.set_keys(info.id))
        if covered < 2:
            continue
        rank = (int(info.kind == "image"), int(info.id in input_ids), covered)
        if best is None or rank > best[0]:
            best = (rank, info)
    return None if best is None else best[1]


def map_layout(workspace: Workspace, keys: Sequence[str], *, kind: str = "auto", on: str | None = None,
               inputs: Sequence[dict[str, Any]] = (), seed: int = 0, perplexity: float = 30.0,
               reporter: Reporter) -> MapLayout | None:
    """The map of ``keys`` (None when no stored vectors cover two of them)."""
    if kind not in LAYOUTS:
        raise InputError(f"{kind}: expected one of {', '.join(LAYOUTS)}", option="layout")
    if perplexity <= 0:
        raise InputError(f"{opt('perplexity')} {perplexity}: expected a number above 0, such as 30")
    info = _choose_set(workspace, keys, on, inputs)
    if info is None:
        return None
    stored_keys, data = workspace.read_set(info.id)
    row_of = {k: i for i, k in enumerate(stored_keys)}
    placed = [i for i, k in enumerate(keys) if k in row_of]
    placed_keys = [keys[i] for i in placed]
    vectors = np.asarray(data[[row_of[k] for k in placed_keys]], dtype=np.float32)
    if kind == "auto":
        kind = "tsne" if len(placed) <= TSNE_LIMIT else "pca"
    with reporter.task(f"{kind} map of {len(placed)} items", None):
        coords, cached = projection(workspace, set_ref(info), placed_keys, vectors, kind, seed, perplexity)
    xy = np.full((len(keys), 2), np.nan)
    xy[placed] = coords
    return MapLayout(kind=kind, set_name=info.name, xy=xy, matrix=vectors,
                     row_of={k: i for i, k in enumerate(placed_keys)}, cached=cached)
