"""Running a clustering request: check it, reuse an identical stored result, else compute and store it."""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any

import numpy as np

from clipclust.store import ClusteringRecord, Workspace
from clipclust.errors import InputError
from clipclust.core.progress import Reporter, SilentReporter
from clipclust.commands.levels import level_names, link_params, stale_levels
from clipclust.methods.inputs import jsonable, set_ref
from clipclust.methods.registry import (METHODS, REFINEMENTS, ClusteringSummary, ClusterRequest, MethodSpec,
                                        MethodOutput, PreparedInput, RefinementSpec, get_method, get_refinement,
                                        resolve_options)

__all__ = ["ClusteringSummary", "run_clustering"]


def _check_name(name: str) -> str:
    """A name that reads back as it was given: no '/', no control characters (a newline would split every
    table it is shown in), not the suffix the store gives a clustering half-written."""
    if (not name or name.strip() != name or "/" in name or name in (".", "..") or not name.isprintable()
            or name.endswith(".replacing")):
        raise InputError(f"{name!r}: use a non-empty name of printable characters without '/', surrounding "
                         "spaces or a '.replacing' ending, e.g. kmeans-image", option="name")
    return name


def _check_request(req: ClusterRequest) -> None:
    """What the request itself says, checked before any input is read or any model is opened."""
    if req.name is not None:
        _check_name(req.name)
    if req.seed is not None and not 0 <= req.seed < 2**32:  # what every method's random generator takes
        raise InputError(f"{req.seed}: expected a whole number from 0 to {2**32 - 1}", option="seed")
    low, high = req.k_range
    if str(req.k).strip().lower() == "auto" and not 2 <= low <= high:
        raise InputError(f"{low}:{high}: expected MIN:MAX with 2 <= MIN <= MAX, e.g. 2:10", option="k_range")


def _summary(name: str, stored: dict[str, Any], reused: bool, replaced: bool, seconds: float) -> ClusteringSummary:
    params = stored["params"]
    ids = np.asarray(stored["ids"])
    sizes = {str(i): int(c) for i, c in zip(*np.unique(ids, return_counts=True))}
    test_set = params.get("sets", {}).get("test")
    return ClusteringSummary(
        name=name, method=params.get("method", ""), on=params.get("sets", {}).get("input", {}).get("name", ""),
        n_items=int(ids.shape[0]), n_clusters=int(np.unique(ids[ids >= 0]).shape[0]), n_noise=int((ids < 0).sum()),
        sizes=sizes, seed=params.get("seed"), k=params.get("k"), reused=reused, replaced=replaced,
        k_table=params.get("k_table"), n_test=params.get("n_test"), test_on=None if test_set is None else test_set["name"],
        seconds=seconds, params=params, names=list(stored["names"]) if "names" in stored else None,
    )


def _refinement(req: ClusterRequest, spec: MethodSpec) -> RefinementSpec | None:
    if req.refine is None:
        return None
    refinement = get_refinement(req.refine)
    if not spec.refinable:
        raise InputError(f"the head starts from k-means: use the kmeans method with it, not {spec.name}",
                         option="refine")
    return refinement


def run_clustering(workspace: Workspace, request: ClusterRequest | None = None, *,
                   reporter: Reporter | None = None, **fields: Any) -> ClusteringSummary:
    """Cluster a stored set and store the result under a name; an identical earlier request is reused.

    Pass a :class:`ClusterRequest` or its fields as keywords (``on="image", method="kmeans", k=10``); keywords
    that are not common fields are the method's options (``criterion="mood"`` for ictc) or the refinement's
    (``epochs=20`` with ``refine="head"``).
    """
    req = request or ClusterRequest.of(**fields)
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    spec = get_method(req.method)
    _check_request(req)
    options, refine_options = resolve_options(spec, req.options, METHODS, _refinement(req, spec), REFINEMENTS)
    req = dataclasses.replace(req, options=options, refine_options=refine_options)
    prepared = spec.prepare(workspace, req)
    try:
        return _run_prepared(workspace, req, spec, prepared, reporter, started)
    finally:
        if prepared.cleanup is not None:
            prepared.cleanup()


def _run_prepared(workspace: Workspace, req: ClusterRequest, spec: MethodSpec, prepared: PreparedInput,
                  reporter: Reporter, started: float) -> ClusteringSummary:
    name = _check_name(req.name if req.name is not None else prepared.default_name)
    identity = jsonable(prepared.identity)

    replaced = other = False
    if name in workspace.list_clusterings():
        stored = workspace.read_clustering(name)
        levels_stored = set(stored["params"].get("levels") or []) <= set(workspace.list_clusterings())
        if not req.force and stored["params"].get("request") == identity and levels_stored:
            return _summary(name, stored, True, False, time.perf_counter() - started)  # every level with it
        replaced, other = True, stored["params"].get("request") != identity

    label = prepared.sets["input"].name
    with warnings.catch_warnings(record=True) as caught, \
            reporter.task(f"{req.method} on {label} ({prepared.identity.get('n_items', len(prepared.keys))} items)",
                          None):
        warnings.simplefilter("always")
        output = spec.compute(prepared, req, reporter)
    for message in dict.fromkeys(str(w.message) for w in caught):  # e.g. sklearn's "Graph is not fully connected"
        reporter.warn(f"{req.method} on '{label}': {message}")
    params = {
        "method": req.method, "refine": req.refine or "", "request": identity,
        "sets": {role: set_ref(info) for role, info in prepared.sets.items()},
        "n_items": len(output.keys), **output.details,
    }
    if replaced and other:  # said when it happens: a run that fails replaces nothing
        reporter.warn(f"clustering '{name}' exists with other inputs or parameters; replacing it")
    _save_levels(workspace, name, output, params, reporter)
    return _summary(name, workspace.read_clustering(name), False, replaced, time.perf_counter() - started)


def _save_levels(workspace: Workspace, name: str, output: MethodOutput, params: dict[str, Any],
                 reporter: Reporter) -> None:
    """Store the clustering and its coarser levels (``NAME.level1`` ...) linked, in one transaction; the levels
    an earlier run of ``name`` stored and this one does not are removed in it (commands/levels.py)."""
    old = workspace.clustering_params(name)
    names = level_names(name, len(output.levels) + 1)
    stale = stale_levels(workspace, name, old, names)
    if not output.levels and not stale:  # a flat clustering, stored exactly as before levels existed
        workspace.save_clustering(name, keys=output.keys, ids=output.ids, params=params, centroids=output.centroids,
                                  cluster_names=output.cluster_names, extra=output.extra)
        return
    ids = [np.asarray(level.ids, dtype=np.int64) for level in output.levels] + [np.asarray(output.ids, np.int64)]
    links = link_params(names, ids) if output.levels else [{}]
    shared = {key: params[key] for key in ("method", "refine", "request", "sets", "n_items")}
    records = []
    for level_name, level, link, level_ids in zip(names, output.levels, links, ids):
        taken = workspace.clustering_params(level_name)
        if taken is not None and (taken.get("levels") or [None])[-1] != name:
            reporter.warn(f"clustering '{level_name}' exists and is not a level of '{name}'; replacing it")
        k = int(np.unique(level_ids[level_ids >= 0]).shape[0])
        records.append(ClusteringRecord(level_name, output.keys, level_ids, {**shared, **level.details, "k": k, **link},
                                        cluster_names=level.cluster_names))
    records.append(ClusteringRecord(name, output.keys, output.ids, {**params, **links[-1]}, output.centroids,
                                    output.cluster_names, output.extra))
    workspace.save_clusterings(records, remove=stale)
