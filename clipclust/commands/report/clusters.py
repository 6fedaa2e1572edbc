"""What a report says about one clustering: a card per cluster, its scores and its cluster x label table.

A card's representatives are the members nearest the cluster's centroid, its borderline members those
nearest another cluster (the smallest gap between their similarity to their own centroid and to the
closest other one).  Centroids are the mean unit vectors of the members in the clustering's own input
vectors or, for a clustering of descriptions (IC|TC, ESMC), in the map's vectors; without either, the
cards show members spread over the cluster and no borderline ones.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from clipclust.commands.report.catalog import Catalog, TextSet
from clipclust.commands.report.layout import MapLayout
from clipclust.core.metrics import clustering_report
from clipclust.core.vectors import unit_rows
from clipclust.methods.inputs import DESCRIPTION_KINDS, label_space, rows_for_keys
from clipclust.store import Workspace

__all__ = ["Card", "ClusteringView", "TABLE_LABELS", "view_clustering"]

TABLE_LABELS = 40  # label columns of the cluster x label table; the rest are summed as "other"
RAW_LABELS = 12  # an LLM method's raw labels listed per card


@dataclass
class Card:
    """One cluster: ids are the clustering's, members are catalog rows."""

    id: int
    name: str
    size: int
    representatives: list[int]
    borderline: list[tuple[int, int]]  # (row, the cluster it is nearest to)
    raw_labels: list[tuple[str, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClusteringView:
    """Everything the page shows of one clustering."""

    name: str
    method: str
    on: str
    criterion: str
    created: str
    rows: np.ndarray
    ids: np.ndarray
    cards: list[Card]
    ranked_by: str
    scores: dict[str, Any] | None
    table: dict[str, Any] | None
    text_set: str | None
    taxonomy: dict[str, Any] | None = None  # its levels' tree when it is a level of a taxonomy (--levels)

    @property
    def n_clusters(self) -> int:
        return sum(1 for card in self.cards if card.id >= 0)


def _spread(members: np.ndarray, n: int) -> list[int]:
    picks = np.unique(np.linspace(0, members.size - 1, min(members.size, n)).round().astype(int))
    return [int(members[p]) for p in picks]


def _rank(X: np.ndarray, ids: np.ndarray, clusters: list[int], per_cluster: int, borderline: int
          ) -> dict[int, tuple[list[int], list[tuple[int, int]]]]:
    """Per cluster: positions of the members nearest its centroid, and of those nearest another cluster."""
    X = unit_rows(X, np.float32)
    C = unit_rows(np.stack([X[ids == c].mean(axis=0) for c in clusters]), np.float32)
    column = {c: j for j, c in enumerate(clusters)}
    own = np.full(len(ids), -np.inf, dtype=np.float32)
    other = np.full(len(ids), -np.inf, dtype=np.float32)
    near = np.full(len(ids), -1, dtype=np.int64)
    for start in range(0, len(ids), 8192):
        stop = min(len(ids), start + 8192)
        S = X[start:stop] @ C.T
        cols = np.array([column.get(int(c), -1) for c in ids[start:stop]])
        inside = cols >= 0
        own[start:stop][inside] = S[inside, cols[inside]]
        S[inside, cols[inside]] = -np.inf
        if len(clusters) > 1:
            near[start:stop] = np.asarray(clusters)[S.argmax(axis=1)]
            other[start:stop] = S.max(axis=1)
    out = {}
    for c in clusters:
        members = np.flatnonzero(ids == c)
        typical = members[np.argsort(-own[members], kind="stable")][:per_cluster]
        rest = np.setdiff1d(members, typical)
        edge = [] if len(clusters) < 2 else rest[np.argsort(own[rest] - other[rest], kind="stable")][:borderline]
        out[c] = ([int(i) for i in typical], [(int(i), int(near[i])) for i in edge])
    return out


def _scores(truth: np.ndarray, ids: np.ndarray) -> dict[str, Any] | None:
    labelled = truth != ""
    if not labelled.any():
        return None
    report = clustering_report(truth[labelled].astype(str), ids[labelled])
    keep = ("acc", "nmi", "ari", "purity", "n_classes", "mapping")
    return {"n_labelled": int(labelled.sum()), **{key: report[key] for key in keep}}


def _table(truth: np.ndarray, ids: np.ndarray, order: list[int], mapping: dict[str, Any]) -> dict[str, Any]:
    """Counts of each cluster (rows, card order) by label (columns: each cluster's matched label first)."""
    counts = Counter(str(t) for t in truth if t != "")
    matched = [str(mapping[str(c)]) for c in order if str(c) in mapping]
    labels = list(dict.fromkeys(matched + [lab for lab, _ in counts.most_common()]))
    shown, other = labels[:TABLE_LABELS], labels[TABLE_LABELS:]
    column = {lab: j for j, lab in enumerate(shown)}
    row = {c: i for i, c in enumerate(order)}
    matrix = np.zeros((len(order), len(shown) + (1 if other else 0)), dtype=np.int64)
    for t, c in zip(truth, ids):
        if t != "":
            matrix[row[int(c)], column.get(str(t), len(shown))] += 1
    return {"labels": shown + (["other"] if other else []), "other": bool(other), "clusters": order,
            "counts": matrix.tolist()}


def view_clustering(workspace: Workspace, stored: dict[str, Any], catalog: Catalog, layout: MapLayout | None,
                    texts: list[TextSet], *, per_cluster: int, borderline: int) -> ClusteringView:
    """The cards, scores and table of one stored clustering."""
    params = stored["params"]
    keys = list(stored["keys"])
    ids = np.asarray(stored["ids"], dtype=np.int64)
    source = params.get("sets", {}).get("input") or {}
    vectors, ranked_by = None, "spread over the cluster (no vectors)"
    if source.get("id") and source.get("kind") not in DESCRIPTION_KINDS:
        vectors = rows_for_keys(workspace, source["id"], keys)
        ranked_by = f"centroids in '{source.get('name', '')}'"
    if vectors is None and layout is not None:
        vectors = layout.rows(keys)
        ranked_by = f"centroids in '{layout.set_name}'" if vectors is not None else ranked_by
    clusters = sorted(int(c) for c in np.unique(ids) if c >= 0)
    ranked = _rank(vectors, ids, clusters, per_cluster, borderline) if vectors is not None and clusters else {}
    names = list(stored.get("names") or [])
    raw = list(stored.get("raw_labels") or [])
    rows = catalog.rows(keys)
    cards = []
    for c in sorted(np.unique(ids).tolist(), key=lambda c: (c < 0, -int((ids == c).sum()), c)):
        members = np.flatnonzero(ids == c)
        typical, edge = ranked.get(c, (_spread(members, per_cluster), []))
        name = "noise" if c < 0 else (str(names[c]) if c < len(names) and names[c] else f"cluster {c}")
        labels = Counter(raw[i] for i in members if i < len(raw) and raw[i]).most_common(RAW_LABELS)
        cards.append(Card(id=int(c), name=name, size=int(members.size),
                          representatives=[int(rows[i]) for i in typical],
                          borderline=[(int(rows[i]), near) for i, near in edge], raw_labels=labels))
    to_space = label_space(params)
    truth = np.array([to_space(catalog.labels[r]) for r in rows], dtype=object)
    scores = _scores(truth, ids)
    table = _table(truth, ids, [card.id for card in cards], scores["mapping"]) if scores else None
    text_set = next((t.id for t in texts if t.id == source.get("id")), texts[0].id if texts else None)
    return ClusteringView(name=stored["name"], method=params.get("method", "") + (
        f"+{params['refine']}" if params.get("refine") else ""), on=source.get("name", ""),
        criterion=str(params.get("criterion") or ""), created=str(stored.get("created", "")), rows=rows, ids=ids,
        cards=cards, ranked_by=ranked_by, scores=scores, table=table, text_set=text_set)
