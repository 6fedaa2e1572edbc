"""Classic clustering of embedding vectors: k-means, spectral, agglomerative, HDBSCAN.

These are the unsupervised baselines every method is compared with, and the engines inside the
methods (spectral clustering for fused embeddings, k-means for the ESMC head's initialisation).
They see only the vectors, never labels. Every method is deterministic for a given ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["METHODS", "ClusterResult", "centroids_of", "choose_k", "cluster"]

Method = Literal["kmeans", "spectral", "agglomerative", "hdbscan"]
METHODS: tuple[str, ...] = ("kmeans", "spectral", "agglomerative", "hdbscan")

NOISE_ID = -1  # HDBSCAN's id for points it leaves unclustered (same as clipclust.core.metrics.NOISE_ID)


@dataclass(frozen=True)
class ClusterResult:
    """A clustering: one id per item, the mean vector of each cluster, and the parameters used.

    ``ids`` are 0..n_clusters-1, except HDBSCAN's noise points, which keep the id -1.
    ``centroids[i]`` is the mean of the items with id ``i`` (noise excluded); ``params`` records
    everything needed to reproduce the result (method, k, seed and the method's own settings).
    """

    ids: np.ndarray
    centroids: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])


def _validate_X(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array (items x dimensions); got shape {X.shape}.")
    if X.shape[0] == 0:
        raise ValueError("X is empty: there are no items to cluster; embed some images first.")
    if not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"X must hold numbers; got dtype {X.dtype}.")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinite values; re-embed the affected items.")
    return X.astype(np.float64, copy=False)


def _validate_k(k: int | None, n_items: int) -> int:
    if k is None:
        raise ValueError("Pass the number of clusters k (or use choose_k to pick one).")
    if int(k) != k:
        raise ValueError(f"k must be an integer, got {k!r}.")
    k = int(k)
    if k < 2:
        raise ValueError(f"k must be at least 2 (got {k}); one cluster says nothing about the data.")
    if k > n_items:
        raise ValueError(f"k={k} is larger than the number of items ({n_items}); pass k <= {n_items}.")
    return k


def centroids_of(X: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Mean vector of each cluster id 0..max(ids); noise (-1) is excluded, empty ids give NaN rows.

    Methods without centroids (spectral, agglomerative, HDBSCAN) are summarised this way, which is
    what the fused-embedding paper does ("centroids are approximated as the mean position").
    """
    X = np.asarray(X, dtype=np.float64)
    ids = np.asarray(ids)
    keep = ids != NOISE_ID
    n_clusters = int(ids[keep].max()) + 1 if keep.any() else 0
    sums = np.zeros((n_clusters, X.shape[1]))
    np.add.at(sums, ids[keep], X[keep])
    counts = np.bincount(ids[keep], minlength=n_clusters).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def cluster(
    X: np.ndarray,
    method: Method = "kmeans",
    k: int | None = None,
    seed: int = 0,
    **params: Any,
) -> ClusterResult:
    """Cluster the rows of ``X`` into ``k`` groups with ``method``.

    - ``kmeans``: ``KMeans(k, n_init=10, random_state=seed)``; params: ``n_init``.
    - ``spectral``: ``SpectralClustering(k, affinity="nearest_neighbors", n_neighbors=10,
      assign_labels="kmeans", random_state=seed)``, the fused-embedding paper's setting; ``n_neighbors``
      is clamped to N - 1 for tiny inputs. Finds non-convex groups that k-means splits.
    - ``agglomerative``: ``AgglomerativeClustering(k, linkage="ward")``; params: ``linkage``
      (ward|average|complete|single) and ``metric`` (only euclidean with ward).
    - ``hdbscan``: ``sklearn.cluster.HDBSCAN``; ``k`` is ignored (density decides how many clusters);
      params: ``min_cluster_size`` (default 5), ``min_samples``. Points in no dense region get id -1
      (noise) and keep it: forcing them into a cluster would hide that they fit nowhere.

    Raises ``ValueError`` for empty or non-finite ``X``, and for k < 2 or k > N (not for HDBSCAN).
    """
    X = _validate_X(X)
    n_items = X.shape[0]
    if method == "kmeans":
        from sklearn.cluster import KMeans

        k = _validate_k(k, n_items)
        n_init = int(params.pop("n_init", 10))
        _reject_unknown(method, params)
        model = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
        ids = model.fit_predict(X)
        used = {"n_init": n_init}
    elif method == "spectral":
        from sklearn.cluster import SpectralClustering

        k = _validate_k(k, n_items)
        requested_neighbors = int(params.pop("n_neighbors", 10))
        _reject_unknown(method, params)
        n_neighbors = max(1, min(requested_neighbors, n_items - 1))
        model = SpectralClustering(
            n_clusters=k,
            affinity="nearest_neighbors",
            n_neighbors=n_neighbors,
            assign_labels="kmeans",
            random_state=seed,
        )
        ids = model.fit_predict(X)
        used = {"n_neighbors": n_neighbors, "affinity": "nearest_neighbors", "assign_labels": "kmeans"}
    elif method == "agglomerative":
        from sklearn.cluster import AgglomerativeClustering

        k = _validate_k(k, n_items)
        linkage = params.pop("linkage", "ward")
        metric = params.pop("metric", "euclidean")
        _reject_unknown(method, params)
        if linkage not in ("ward", "average", "complete", "single"):
            raise ValueError(f"linkage must be ward, average, complete or single; got {linkage!r}.")
        if linkage == "ward" and metric != "euclidean":
            raise ValueError("Ward linkage works only with metric='euclidean'; use linkage='average'.")
        model = AgglomerativeClustering(n_clusters=k, linkage=linkage, metric=metric)
        ids = model.fit_predict(X)
        used = {"linkage": linkage, "metric": metric}
    elif method == "hdbscan":
        from sklearn.cluster import HDBSCAN

        min_cluster_size = int(params.pop("min_cluster_size", 5))
        min_samples = params.pop("min_samples", None)
        _reject_unknown(method, params)
        if min_cluster_size < 2:
            raise ValueError(f"min_cluster_size must be at least 2, got {min_cluster_size}.")
        if min_cluster_size > n_items:
            raise ValueError(
                f"min_cluster_size={min_cluster_size} is larger than the number of items ({n_items})."
            )
        model = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True)
        ids = model.fit_predict(X)
        k = None  # decided by the data
        used = {"min_cluster_size": min_cluster_size, "min_samples": min_samples}
    else:
        raise ValueError(f"Unknown clustering method {method!r}; choose one of {', '.join(METHODS)}.")
    ids = np.asarray(ids, dtype=np.int64)
    return ClusterResult(
        ids=ids,
        centroids=centroids_of(X, ids),
        params={"method": method, "k": k, "seed": seed, **used},
    )


def _reject_unknown(method: str, params: dict[str, Any]) -> None:
    if params:
        raise ValueError(f"Unknown parameter(s) for {method}: {', '.join(sorted(params))}.")


def choose_k(
    X: np.ndarray,
    method: Method = "kmeans",
    k_range: range | list[int] | tuple[int, ...] = range(2, 11),
    seed: int = 0,
    metric: Literal["cosine", "euclidean"] = "euclidean",
    **params: Any,
) -> tuple[int, list[dict[str, Any]]]:
    """Pick k by the silhouette of each candidate clustering, for when the number of groups is unknown.

    Returns ``(best_k, table)`` with one row ``{"k": k, "silhouette": s}`` per candidate (s is None
    when undefined). Ties go to the smaller k. Candidates above N are an error, not silently skipped.
    """
    from clipclust.core.metrics import silhouette

    if method == "hdbscan":
        raise ValueError("HDBSCAN chooses its own number of clusters; choose_k applies to the other methods.")
    X = _validate_X(X)
    candidates = sorted({_validate_k(k, X.shape[0]) for k in k_range})
    if not candidates:
        raise ValueError("k_range is empty; pass candidate cluster counts such as range(2, 11).")
    table: list[dict[str, Any]] = []
    for k in candidates:
        result = cluster(X, method, k, seed, **dict(params))
        table.append({"k": k, "silhouette": silhouette(X, result.ids, metric=metric, seed=seed)})
    scored = [row for row in table if row["silhouette"] is not None]
    if not scored:
        raise ValueError("No candidate k gave a defined silhouette; try other values of k.")
    best = max(scored, key=lambda row: (row["silhouette"], -row["k"]))
    return int(best["k"]), table
