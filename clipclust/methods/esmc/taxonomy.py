"""ESMC without a given K, and with coarser levels: Ward merges over cluster centroids, cut where the data jumps.

Clusters (k-means on the criterion states) are leaves with their centroid and size;
Ward merges the pair whose merge raises the within-cluster sum of squares least (``na*nb/(na+nb) *
|ca-cb|^2``), so a big cluster is not swallowed by a far one.  Cutting the tree at K clusters is good when
the next merge costs much more than the last one did: the *jump* ``h(K -> K-1) / h(K+1 -> K)``.

* ``--levels 2|3`` cuts the fine clusters' tree at the K (two K's) with the largest jumps, below the fine K:
  every fine cluster lies in exactly one coarse cluster by construction.
* ``-k auto`` does not use the tree: the largest jump marks the coarsest split (animal / vehicle on the
  CIFAR-10 descriptions), not a finer one.  When the criterion names its values ("animal or vehicle")
  their number is K (:mod:`clipclust.methods.criterion_values`); otherwise :func:`auto_k` takes the
  K most scales of the states' cosine k-NN graph put their largest eigengap after, each scale's pick
  being the evidence the report prints.  Measured with Qwen2.5-0.5B's last layer on the 10 CIFAR-10
  classes: 10 (ACC 0.894, as the known K), where the jump chose 2 and the k-means silhouette 7 (ACC 0.657).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipclust.methods.criterion_values import k_from_values

__all__ = ["Cut", "WardTree", "auto_k", "choose_k", "coarse_cuts", "ward_tree"]


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


DENSE_EIGEN_MAX = 1500
"""Up to this many items the Laplacian's spectrum is computed whole; above it, Lanczos finds the few needed."""


def neighbour_counts(n: int) -> list[int]:
    """The graph scales ``-k auto`` reads: neighbours per item from sqrt(N)/2 to sqrt(N), at least 3, fewer than N.
    One scale alone follows the group size (a 10-item group needs fewer than 7 neighbours, a 20-item one
    more than 8, measured); the K most scales agree on is the one kept."""
    root = math.sqrt(n)
    return sorted({max(1, min(n - 1, max(3, round(root * f)))) for f in np.linspace(0.5, 1.0, 6)})


def laplacian_spectrum(X: np.ndarray, n_values: int, nn: int) -> np.ndarray:
    """The ``n_values`` smallest eigenvalues of the normalised Laplacian of the symmetric cosine ``nn``-NN
    graph of ``X``, ascending. The spectrum is the union of the connected
    components' (Lanczos misses repeated eigenvalues, so each component, with one 0, is solved alone):
    whole for a component up to :data:`DENSE_EIGEN_MAX` items, else its few smallest by Lanczos."""
    from scipy.sparse.csgraph import connected_components, laplacian
    from sklearn.neighbors import kneighbors_graph

    graph = kneighbors_graph(X, nn, metric="cosine", include_self=False)
    graph = graph.maximum(graph.T).astype(np.float64)
    lap = laplacian(graph, normed=True).tocsr()
    _, component = connected_components(graph, directed=False)
    found: list[np.ndarray] = []
    for c in np.unique(component):
        rows = np.flatnonzero(component == c)
        block = lap[rows][:, rows]
        want = min(n_values, rows.size)
        if rows.size <= DENSE_EIGEN_MAX or want >= rows.size - 1:
            found.append(np.linalg.eigvalsh(block.toarray())[:want])
        else:
            from scipy.sparse import identity
            from scipy.sparse.linalg import eigsh

            # The largest of 2I - L are the smallest of L; Lanczos finds the largest ones quickly.
            top = eigsh(2 * identity(rows.size) - block, k=want, which="LA", return_eigenvectors=False)
            found.append(2 - top)
    values = np.sort(np.concatenate(found))[:n_values]
    return np.clip(values, 0.0, None)


def auto_k(X: np.ndarray, k_range: tuple[int, int], seed: int) -> tuple[int, list[str], list[dict[str, Any]]]:
    """The K of ``k_range`` after which the spectrum of the states' k-NN graph jumps most (the eigengap),
    as most graph scales (:func:`neighbour_counts`) agree.

    K well-separated groups give K eigenvalues near 0 and then a jump; the gap ``l[K] - l[K-1]`` of the
    normalised Laplacian's ascending eigenvalues ``l`` marks it. Each scale votes for its largest gap;
    ties go to the larger summed gap, then the smaller K. Measured on Qwen2.5-0.5B's last layer: 10 for
    CIFAR-10's descriptions (ACC 0.894, as the known K; the k-means silhouette, flat at 0.30-0.34, chose
    7) and 6 for the 6-class fruit/tool set (the silhouette chose 2). ``seed`` is unused (the spectrum is
    deterministic). Returns ``(k, evidence lines, table)``, a row ``{"k", "votes", "eigengap"}`` per
    candidate (the gap summed over the scales).
    """
    X = np.asarray(X, np.float64)
    low, high = k_range[0], min(k_range[1], X.shape[0] - 1)
    too_few = [f"{X.shape[0]} items: too few to choose K in {k_range[0]}..{k_range[1]}; K={low}"]
    if high < low:
        return low, too_few, []
    scales = neighbour_counts(X.shape[0])
    votes: dict[int, int] = {}
    summed: dict[int, float] = {}
    picks = []
    for nn in scales:
        values = laplacian_spectrum(X, high + 1, nn)
        gaps = {k: float(values[k] - values[k - 1]) for k in range(low, high + 1) if k < values.size}
        if not gaps:
            return low, too_few, []
        best = max(gaps, key=lambda c: (gaps[c], -c))
        picks.append(f"{nn}: K={best}")
        votes[best] = votes.get(best, 0) + 1
        for c, g in gaps.items():
            summed[c] = summed.get(c, 0.0) + g
    k = max(summed, key=lambda c: (votes.get(c, 0), summed[c], -c))
    rows = [{"k": c, "votes": votes.get(c, 0), "eigengap": round(summed[c], 4)} for c in sorted(summed)]
    lines = [f"largest eigengap of the states' cosine k-NN graph (normalised Laplacian) per neighbour count: "
             + ", ".join(picks),
             f"chosen K={k} ({votes[k]} of {len(scales)} scales, in {low}..{high})"]
    return int(k), lines, rows


def choose_k(X: np.ndarray, criterion: str, k_range: tuple[int, int], seed: int) -> tuple[int, list[str], list[dict[str, Any]]]:
    """``-k auto``: the number of values the criterion names ("animal or vehicle": 2) when it names
    fewer than the items, else :func:`auto_k` on the states. Same return as :func:`auto_k`."""
    found = k_from_values(criterion, np.asarray(X).shape[0])
    if found is not None:
        return found[0], [found[1]], []
    return auto_k(X, k_range, seed)
