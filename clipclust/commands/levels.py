"""A taxonomy's levels as linked clusterings: how `cluster` stores them and how `evaluate`, `export` and the
report read them back.

A method may return coarser levels beside its clustering (``MethodOutput.levels``, coarsest first).  The
finest level is stored under the clustering's own name, so a flat run is stored exactly as before; each
coarser one as ``NAME.level1`` (the coarsest) ... ``NAME.level{n-1}``.  Every level's params say where it
sits: ``level`` (1 = coarsest), ``levels`` (the names of all levels, coarse to fine), ``parent`` (the next
coarser level's name; absent on the coarsest), ``parents`` (for each cluster id of this level, its parent's
id in ``parent``, -1 for an id no item has) and, on every level but the finest, ``children_of`` (for each
cluster id, the ids of its children in the next finer level).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from clipclust.errors import ClipclustError, InputError
from clipclust.store import Workspace

__all__ = ["Level", "check_nesting", "level_names", "levels_of", "mapped_scores", "parents_of", "read_label_map",
           "stale_levels", "taxonomy_tree", "with_levels"]


def level_names(name: str, n_levels: int) -> list[str]:
    """The names of a taxonomy's levels, coarse to fine: ``NAME.level1`` ... and ``NAME`` itself last."""
    return [f"{name}.level{i}" for i in range(1, n_levels)] + [name]


def parents_of(coarse: np.ndarray, fine: np.ndarray) -> list[int]:
    """For each cluster id 0..max of ``fine``, the id of the one ``coarse`` cluster holding all its items.

    A fine cluster spread over two coarse ones, or inside the coarse level's noise, is a method's bug: an
    internal error, and nothing is stored.  Fine noise (-1) may sit anywhere.
    """
    coarse, fine = np.asarray(coarse, dtype=np.int64), np.asarray(fine, dtype=np.int64)
    if coarse.shape != fine.shape:
        raise ClipclustError(f"a level holds {coarse.shape[0]} ids where its finer level holds {fine.shape[0]}; "
                             "the taxonomy was not stored")
    top = int(fine.max()) if fine.size else -1
    parents = [-1] * (top + 1)
    for cluster in range(top + 1):
        held = np.unique(coarse[fine == cluster])
        if held.size == 0:
            continue
        if held.size != 1 or held[0] < 0:
            raise ClipclustError(f"fine cluster {cluster} lies in coarse clusters {', '.join(map(str, held))}, not "
                                 "in exactly one; the taxonomy was not stored")
        parents[cluster] = int(held[0])
    return parents


def check_nesting(levels: Sequence[np.ndarray]) -> list[list[int]]:
    """The parents of every level after the first (coarse to fine), checking that each nests in the one above."""
    return [parents_of(levels[i - 1], levels[i]) for i in range(1, len(levels))]


def children_of(parents: Sequence[int], n_coarse: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(n_coarse)]
    for child, parent in enumerate(parents):
        if 0 <= parent < n_coarse:
            out[parent].append(child)
    return out


def link_params(names: Sequence[str], levels: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """The params that link each level to its neighbours (see the module docstring), coarse to fine."""
    parents = check_nesting(levels)
    out = []
    for i, name in enumerate(names):
        params: dict[str, Any] = {"level": i + 1, "levels": list(names)}
        if i > 0:
            params.update(parent=names[i - 1], parents=parents[i - 1])
        if i + 1 < len(names):
            top = int(np.max(levels[i])) + 1 if len(levels[i]) else 0
            params["children_of"] = children_of(parents[i], top)
        out.append(params)
    return out


def stale_levels(workspace: Workspace, name: str, old_params: dict[str, Any] | None, keep: Sequence[str]) -> list[str]:
    """Coarser levels an earlier run of ``name`` stored that the new run does not: removed with its save."""
    old = list((old_params or {}).get("levels") or [])
    stale = []
    for level in old:
        if level == name or level in keep:
            continue
        params = workspace.clustering_params(level)
        if params is not None and (params.get("levels") or [None])[-1] == name:
            stale.append(level)
    return stale


@dataclass
class Level:
    """One stored level of a taxonomy, as evaluate, export and the report show it."""

    name: str
    level: int
    keys: list[str]
    ids: np.ndarray
    names: list[str]
    parent: str | None
    parents: list[int]

    def cluster_name(self, cluster: int) -> str:
        return self.names[cluster] if 0 <= cluster < len(self.names) and self.names[cluster] else ""


def levels_of(workspace: Workspace, params: dict[str, Any]) -> list[Level]:
    """Every stored level of the taxonomy a clustering with these params belongs to, coarse to fine
    (empty for a flat clustering, or when a level is no longer stored)."""
    names = list(params.get("levels") or [])
    known = set(workspace.list_clusterings())
    if len(names) < 2 or not all(n in known for n in names):
        return []
    out = []
    for name in names:
        stored = workspace.read_clustering(name)
        p = stored["params"]
        out.append(Level(name=name, level=int(p.get("level", 0)), keys=list(stored["keys"]),
                         ids=np.asarray(stored["ids"], dtype=np.int64), names=list(stored.get("names") or []),
                         parent=p.get("parent"), parents=list(p.get("parents") or [])))
    return out


def with_levels(workspace: Workspace, names: Sequence[str]) -> list[str]:
    """``names`` with every level of each one's taxonomy, coarse to fine in its place (evaluate shows them all)."""
    out: dict[str, None] = {}
    for name in names:
        params = workspace.clustering_params(name) or {}
        levels = [n for n in params.get("levels") or [] if workspace.clustering_params(n) is not None]
        for level in levels if name in levels else [name]:
            out[level] = None
    return list(out)


def read_label_map(path: str) -> dict[str, str]:
    """A label -> coarser label map from a file: a JSON object, or lines ``LABEL,COARSE`` (CSV; a first line
    ``label,...`` is a header).  Labels it does not list stay as they are."""
    import csv
    import io
    import json

    from clipclust.core.textfiles import read_user_text

    text = read_user_text(path)
    if text.lstrip().startswith("{"):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})", option="label_map") from None
        mapping = {str(k): str(v) for k, v in loaded.items() if str(k).strip() and str(v).strip()}
    else:
        mapping = {}
        for n, row in enumerate(csv.reader(io.StringIO(text)), 1):
            cells = [c.strip() for c in row]
            if not any(cells) or (n == 1 and cells[0].lower() == "label"):
                continue
            if len(cells) < 2 or not cells[0] or not cells[1]:
                raise InputError(f"{path}: line {n}: expected LABEL,COARSE, e.g. cat,animal", option="label_map")
            mapping[cells[0]] = cells[1]
    if not mapping:
        raise InputError(f"{path}: maps no label; write one LABEL,COARSE line per label, e.g. cat,animal",
                         option="label_map")
    return mapping


def mapped_scores(truth: np.ndarray, ids: np.ndarray, label_map: dict[str, str]) -> dict[str, Any] | None:
    """ACC, NMI and the number of classes against the labels mapped by ``label_map`` (labelled items only)."""
    from clipclust.core.metrics import clustering_report

    labelled = truth != ""
    if not labelled.any():
        return None
    coarse = np.array([label_map.get(str(t), str(t)) for t in truth[labelled]], dtype=str)
    report = clustering_report(coarse, ids[labelled])
    return {key: report[key] for key in ("n_classes", "acc", "nmi", "ari", "mapping")}


def taxonomy_tree(levels: Sequence[Level]) -> dict[str, Any]:
    """The taxonomy as nested nodes from the coarsest level: ``{"levels": [names], "clusters": [{"id", "name",
    "size", "level", "children": [...]}]}``, each coarse cluster with its children of the next finer level."""
    def nodes(depth: int, wanted: Sequence[int] | None) -> list[dict[str, Any]]:
        level = levels[depth]
        sizes = np.bincount(level.ids[level.ids >= 0], minlength=0)
        out = []
        for cluster in (wanted if wanted is not None else range(sizes.shape[0])):
            if cluster >= sizes.shape[0] or not sizes[cluster]:
                continue
            children: list[dict[str, Any]] = []
            if depth + 1 < len(levels):
                finer = levels[depth + 1]
                children = nodes(depth + 1, [c for c, p in enumerate(finer.parents) if p == cluster])
            out.append({"id": int(cluster), "name": level.cluster_name(cluster) or f"cluster {cluster}",
                        "size": int(sizes[cluster]), "level": level.name, "children": children})
        return out

    return {"levels": [level.name for level in levels], "clusters": nodes(0, None) if levels else []}
