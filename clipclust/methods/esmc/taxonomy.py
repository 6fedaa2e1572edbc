"""ESMC without a given K, and with coarser levels: Ward merges over cluster centroids, cut where the data jumps.

Clusters (k-means on the criterion states) are leaves with their centroid and size;
Ward merges the pair whose merge raises the within-cluster sum of squares least (``na*nb/(na+nb) *
|ca-cb|^2``), so a big cluster is not swallowed by a far one.  Cutting the tree at K clusters is good when
the next merge costs much more than the last one did: the *jump* ``h(K -> K-1) / h(K+1 -> K)``.

* ``--levels 2|3`` cuts the fine clusters' tree at the K (two K's) with the largest jumps, below the fine K:
  every fine cluster lies in exactly one coarse cluster by construction.
* ``-k auto`` does not use the tree: the largest jump marks the coarsest split (animal / vehicle on the
  CIFAR-10 descriptions), not a finer one.  It takes the K of the request's range whose k-means clustering
  of the states has the highest cosine silhouette (ties: the smaller K); the candidates' silhouettes are
  the evidence the report prints.  Measured with Qwen2.5-0.5B's last layer: 7 for the 10 CIFAR-10 classes
  (cat+dog, automobile+truck, deer+horse together) where the jump chose 2, and 2 (fruit / tool) for a
  6-class set: the silhouette, too, may prefer a coarser level than the labels'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Cut", "WardTree", "auto_k", "coarse_cuts", "ward_tree"]


@dataclass
class WardTree:
    """The merges of ``m`` weighted centroids, cheapest first: ``merges[j] = (a, b, cost)``, new node m + j."""

    m: int
    merges: list[tuple[int, int, float]] = field(default_factory=list)

    @property
    def heights(self) -> np.ndarray:
        return np.array([cost for _, _, cost in self.merges], dtype=np.float64)

    def cut(self, k: int) -> np.ndarray:
        """The group 0..k-1 of each leaf when the tree is cut into ``k`` groups (numbered by first leaf)."""
        parent = list(range(self.m + len(self.merges)))
        for j, (a, b, _) in enumerate(self.merges[: self.m - k]):
            parent[a] = parent[b] = self.m + j

        def root(i: int) -> int:
            while parent[i] != i:
                i = parent[i]
            return i

        roots = [root(i) for i in range(self.m)]
        order = {r: n for n, r in enumerate(dict.fromkeys(roots))}
        return np.array([order[r] for r in roots], dtype=np.int64)

    def jump(self, k: int) -> float:
        """How much dearer the merge that would leave ``k - 1`` groups is than the one that left ``k``."""
        h = self.heights
        after, before = h[self.m - k], h[self.m - k - 1]
        return float(after / before) if before > 0 else float("inf") if after > 0 else 1.0


def ward_tree(centroids: np.ndarray, sizes: np.ndarray) -> WardTree:
    """Ward's agglomeration of ``centroids`` weighted by ``sizes`` (a few hundred at most: plain O(m^3))."""
    C = [np.asarray(c, dtype=np.float64) for c in centroids]
    n = [float(s) for s in sizes]
    alive = list(range(len(C)))
    tree = WardTree(len(C))
    while len(alive) > 1:
        best = (np.inf, -1, -1)
        for x, a in enumerate(alive):
            for b in alive[x + 1:]:
                cost = n[a] * n[b] / (n[a] + n[b]) * float(np.sum((C[a] - C[b]) ** 2))
                if cost < best[0]:
                    best = (cost, a, b)
        cost, a, b = best
        C.append((n[a] * C[a] + n[b] * C[b]) / (n[a] + n[b]))
        n.append(n[a] + n[b])
        tree.merges.append((a, b, cost))
        alive = [i for i in alive if i not in (a, b)] + [len(C) - 1]
    return tree


def _centroids(X: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.bincount(ids, minlength=k).astype(np.float64)
    sums = np.zeros((k, X.shape[1]))
    np.add.at(sums, ids, X)
    return sums / np.maximum(sizes, 1.0)[:, None], sizes


@dataclass
class Cut:
    """A coarser level: each item's group, its K and the evidence lines (the jumps of the candidates)."""

    ids: np.ndarray
    k: int
    evidence: list[str]


def coarse_cuts(X: np.ndarray, ids: np.ndarray, k: int, depth: int) -> list[Cut]:
    """``depth - 1`` coarser levels of the clustering ``ids`` (0..k-1), coarsest first: Ward over the fine
    clusters' centroids weighted by their sizes, cut at the K's 2..k-1 with the largest jumps."""
    candidates = list(range(2, k))
    if depth < 2 or len(candidates) < depth - 1:
        return []
    centroids, sizes = _centroids(np.asarray(X, np.float64), np.asarray(ids), k)
    present = np.flatnonzero(sizes > 0)
    tree = ward_tree(centroids[present], sizes[present])
    candidates = [c for c in candidates if c < tree.m]
    if len(candidates) < depth - 1:
        return []
    jumps = {c: tree.jump(c) for c in candidates}
    chosen = sorted(sorted(candidates, key=lambda c: (-jumps[c], c))[: depth - 1])
    lines = ["coarse K by the jump in Ward merge cost over the fine clusters: "
             + ", ".join(f"K={c} {jumps[c]:.2f}" for c in candidates)]
    leaf_of = np.full(k, -1, dtype=np.int64)
    leaf_of[present] = np.arange(present.size)
    out = []
    for c in chosen:
        group_of_leaf = tree.cut(c)
        out.append(Cut(ids=group_of_leaf[leaf_of[np.asarray(ids)]], k=c, evidence=lines + [f"level K={c} chosen"]))
    return out


def auto_k(X: np.ndarray, k_range: tuple[int, int], seed: int) -> tuple[int, list[str], list[dict[str, Any]]]:
    """The K of ``k_range`` whose k-means clustering of the states has the highest (cosine) silhouette.

    Returns ``(k, evidence lines, table)``; the table has one row ``{"k", "silhouette"}`` per candidate.
    The k-means at the chosen K is the one a run given that K makes (same seed).
    """
    from clipclust.core.clustering import choose_k

    X = np.asarray(X, np.float64)
    low, high = k_range[0], min(k_range[1], X.shape[0] - 1)
    if high < low:
        return low, [f"{X.shape[0]} items: too few to choose K in {k_range[0]}..{k_range[1]}; K={low}"], []
    k, table = choose_k(X, "kmeans", range(low, high + 1), seed, metric="cosine")
    rows = [{"k": int(r["k"]), "silhouette": None if r["silhouette"] is None else round(float(r["silhouette"]), 4)}
            for r in table]
    lines = ["cosine silhouette of k-means at each K: "
             + ", ".join(f"K={r['k']} {'-' if r['silhouette'] is None else format(r['silhouette'], '.3f')}"
                         for r in rows),
             f"chosen K={k} (highest silhouette in {low}..{high})"]
    return int(k), lines, rows
