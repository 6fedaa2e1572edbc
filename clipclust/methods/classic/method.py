"""The classic methods' registry entries: k-means, spectral, agglomerative and HDBSCAN on any stored item set.

The algorithms are :func:`clipclust.core.clustering.cluster`; this module reads the set, decides what
identifies a request (the set's digest, never its vectors), and lets k-means hand over to the ESMC head
(:mod:`clipclust.methods.head`) with ``refine="head"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clipclust.store import Workspace
from clipclust.errors import InputError, step
from clipclust.core.clustering import cluster
from clipclust.core.progress import Reporter
from clipclust.methods.inputs import (check_k, default_name, full_centroids, keys_digest, parse_k, read_clusterable,
                     resolve_item_set, silhouette_k, slugify, split_keys)
from clipclust.methods.head.method import head_identity, refine_with_head
from clipclust.methods.registry import (ClusterRequest, MethodOutput, MethodSpec, Option, PreparedInput, at_least_one,
                                        register_method)


def prepare_classic(workspace: Workspace, req: ClusterRequest) -> PreparedInput:
    info = resolve_item_set(workspace, req.on or "image", req.model)
    if len(info.shape) != 2:
        read_clusterable(workspace, info, req.split)  # raises the explanation
    # The reuse identity never reads the set's vectors: the whole set is named by its digest (one attribute,
    # changed by every write to the set); one split by the digest of its keys.  Vectors are read only when the
    # clustering is really computed.
    if req.split is None:
        keys: list[str] = []
        n_items, keys_id = int(info.shape[0]), "set:" + workspace.set_digest(info.id)
    else:
        all_keys = sorted(workspace.set_keys(info.id))
        keys = [all_keys[i] for i in split_keys(workspace, info, all_keys, req.split)]
        n_items, keys_id = len(keys), keys_digest(keys)
    if not n_items:
        raise InputError(f"set '{info.name}' is empty; run {step('embed')} first", option="on")
    k = parse_k(req.k)
    if req.method == "hdbscan":
        if k is not None:
            raise InputError("hdbscan decides the number of clusters itself; leave k out (tune min_cluster_size "
                             "instead)", option="k")
    elif k is None:
        raise InputError(f"the {req.method} method needs the number of clusters (a whole number, or 'auto')",
                         option="k")
    elif k != "auto":
        check_k(int(k), n_items, info, req.split)
    seed = 0 if req.seed is None else req.seed
    options = {key: value for key, value in req.options.items() if value is not None}
    identity: dict[str, Any] = {
        "method": req.method, "set_id": info.id, "split": req.split or "", "n_items": n_items,
        "keys_sha256": keys_id, "k": k, "seed": seed, "options": options, "refine": req.refine or "",
    }
    if k == "auto":
        identity["k_range"] = list(req.k_range)
    if req.refine == "head":
        identity.update(head_identity(req.refine_options))
    base = f"{req.method}{'-' + req.refine if req.refine else ''}-{slugify(info.name)}"
    if req.split:
        base += f"-{slugify(req.split)}"

    prepared = PreparedInput(identity, default_name(workspace, base, info), {"input": info}, keys, lambda: load(),
                             {"seed": seed, "k": k, "options": options})

    def load() -> np.ndarray:  # the set's own row order, so results do not depend on how keys sort
        prepared.keys, vectors = read_clusterable(workspace, info, req.split)
        return vectors

    return prepared


def compute_classic(prepared: PreparedInput, req: ClusterRequest, reporter: Reporter) -> MethodOutput:
    X = prepared.vectors
    seed, k, options = prepared.context["seed"], prepared.context["k"], prepared.context["options"]
    details: dict[str, Any] = {"seed": seed, "options": options}
    if k == "auto":
        k, details["k_table"] = silhouette_k(X, req.method, req.k_range, seed, reporter, **options)
    if req.refine == "head":
        result = refine_with_head(X, int(k), seed, req.refine_options)
        details.update(k=int(k), head=result.params, final_loss=result.loss_curve[-1])
        return MethodOutput(
            keys=prepared.keys, ids=result.ids, centroids=full_centroids(np.asarray(X, np.float64), result.ids, int(k)),
            extra={"kmeans_ids": result.kmeans_ids, "pseudo_indices": result.pseudo_indices}, details=details,
        )
    try:
        result = cluster(X, req.method, None if k is None else int(k), seed, **options)  # type: ignore[arg-type]
    except ValueError as exc:  # scikit-learn's word on a setting that does not fit these data
        raise InputError(f"the {req.method} method on '{prepared.sets['input'].name}': "
                         f"{str(exc).rstrip('.')}") from None
    details.update(k=result.params["k"], method_params={key: v for key, v in result.params.items()
                                                        if key not in ("method", "k", "seed")})
    centroids = result.centroids
    if k is not None and centroids.shape[0] < int(k):  # keep row i = cluster i even if top ids are empty
        centroids = full_centroids(np.asarray(X, np.float64), result.ids, int(k))
    return MethodOutput(keys=prepared.keys, ids=result.ids, centroids=centroids, details=details)


_N_NEIGHBORS = Option("n_neighbors", type=int, check=at_least_one, shown_default="10",
                      help="neighbours of the affinity graph")
for _method, _summary, _options in (
    ("kmeans", "k-means; refine head adds the ESMC head",
     (Option("n_init", type=int, check=at_least_one, shown_default="10", help="k-means restarts"),)),
    ("spectral", "spectral clustering on a nearest-neighbour graph", (_N_NEIGHBORS,)),
    ("agglomerative", "agglomerative clustering",
     (Option("linkage", choices=("ward", "average", "complete", "single"), shown_default="ward",
             help="how the distance between clusters is measured"),
      Option("metric", choices=("euclidean", "cosine", "manhattan", "l1", "l2"), shown_default="euclidean",
             help="distance between items (ward needs euclidean)"))),
    ("hdbscan", "HDBSCAN: density decides the number of clusters, noise gets -1",
     (Option("min_cluster_size", type=int, check=at_least_one, shown_default="5", help="smallest cluster"),
      Option("min_samples", type=int, check=at_least_one,
             help="neighbours a point needs to be dense (default: the smallest cluster size)"))),
):
    register_method(MethodSpec(_method, _summary, prepare_classic, compute_classic, _options,
                               refinable=_method == "kmeans"))
