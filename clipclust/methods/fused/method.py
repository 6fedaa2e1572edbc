"""The fused workflow's registry entry (the fused-embedding paper): spectral clusters of labelled training
vectors, majority-vote labels, and test images classified by the nearest centroid among those labelled with
each prompt's class.  This module finds the fused-label / fused-all sets and their splits; the maths is
:mod:`clipclust.methods.fused.workflow`.

Labels: the majority vote is the method, so this is the one method that reads the training split's labels.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from clipclust.store import SetInfo, Workspace
from clipclust.errors import InputError, opt, step
from clipclust.core.progress import Reporter
from clipclust.methods.inputs import check_k, default_name, keys_digest, known_splits, parse_k, resolve_item_set, slugify
from clipclust.methods.registry import (ClusterRequest, MethodOutput, MethodSpec, Option, PreparedInput, at_least_one,
                                        register_method)

FUSED_DEFAULT_SEED = 42  # SpectralClustering(random_state=42) in the paper's code


def counterpart_set(workspace: Workspace, info: SetInfo, kind: str) -> SetInfo:
    """The fused-label / fused-all set made from the same model, template, class map and classes."""
    suffix = info.name.split(":", 1)[1] if ":" in info.name else ""
    wanted = f"{kind}:{suffix}"
    found = [s for s in workspace.list_sets() if s.kind == kind and s.name == wanted and s.model == info.model]
    same_classes = [s for s in found if s.attrs.get("classes") == info.attrs.get("classes")]
    if same_classes:
        return same_classes[0]
    split, fuse = ("train", "label") if kind == "fused-label" else ("test", "all")
    if found:
        raise InputError(f"'{wanted}' exists but for other classes than '{info.name}'; embed both splits with "
                         f"the same {opt('classes')}")
    raise InputError(f"the fused workflow needs '{wanted}' next to '{info.name}'; run {step('embed', 'IMAGES')} "
                     f"with {opt('split')} {split}, {opt('prompt')} \"{info.prompt}\" and {opt('fuse')} {fuse}")


def prepare_fused(workspace: Workspace, req: ClusterRequest) -> PreparedInput:
    on = req.on or "fused-label"
    try:
        info = resolve_item_set(workspace, on, req.model)
    except InputError as exc:
        if req.on is None and exc.message.startswith("no stored set"):
            raise InputError(
                "the fused workflow needs a 'fused-label' set (training images fused with their own label's prompt); "
                f"run {step('embed', 'TRAIN_IMAGES')} with {opt('split')} train, {opt('prompt')} TEMPLATE and "
                f"{opt('fuse')} label, and the same with TEST_IMAGES, {opt('split')} test and {opt('fuse')} all"
            ) from None
        raise
    k = parse_k(req.k)
    if k == "auto":
        raise InputError("the fused method takes a number of clusters or its default (2 x the number of prompts), "
                         "not 'auto'", option="k")
    if req.split is not None:
        raise InputError("the fused method uses train_split and test_split, not split", option="split")
    train_split, test_split = req.option("train_split"), req.option("test_split")
    options = {"n_neighbors": req.options["n_neighbors"]} if req.options.get("n_neighbors") is not None else {}
    seed = FUSED_DEFAULT_SEED if req.seed is None else req.seed
    items = workspace.items()
    split_of = dict(zip(items.sha256, items.split))
    # The majority vote is the method: it needs the training labels (and nothing else reads them here).
    labels = {sha: label for sha, label in zip(items.sha256, items.label) if label}

    if info.kind == "image":
        train_info = test_info = info
        label_map: dict[str, str] = {}
        classes: list[str] | None = None
    elif info.kind in ("fused-label", "fused-all"):
        train_info = info if info.kind == "fused-label" else counterpart_set(workspace, info, "fused-label")
        test_info = info if info.kind == "fused-all" else counterpart_set(workspace, info, "fused-all")
        classes = json.loads(test_info.attrs.get("classes", "[]"))
        provenance = json.loads(train_info.attrs.get("provenance", "{}"))
        label_map = {str(a): str(b) for a, b in (provenance.get("class_map") or {}).items()}
    else:
        raise InputError(f"the fused method runs on a prompt's fused sets ('fused-label:TEMPLATE') or on 'image' "
                         f"(the image-only baseline); '{info.name}' is a {info.kind} set", option="on")

    if len(train_info.shape) != 2:
        raise InputError(f"set '{train_info.name}' does not hold one vector per item; it cannot train the workflow")
    all_train_keys, all_train_vecs = workspace.read_set(train_info.id)
    to_class = (lambda lab: label_map.get(lab, "")) if label_map else (lambda lab: lab)
    train_rows = []
    for i, key in enumerate(all_train_keys):
        if split_of.get(key, "") != train_split:
            continue
        cls = to_class(labels.get(key, ""))
        if cls and (classes is None or cls in classes):
            train_rows.append(i)
    if not train_rows:
        raise InputError(
            f"the fused workflow needs labelled training items: no item of '{train_info.name}' in split "
            f"'{train_split}' has a label (splits there: {known_splits(split_of, all_train_keys)}); embed the "
            f"training images from class folders (or with {opt('labels')}) and {opt('split')} {train_split}",
            option="train_split"
        )
    train_keys = [all_train_keys[i] for i in train_rows]
    train_labels = [to_class(labels[k]) for k in train_keys]

    all_test_keys, all_test_vecs = workspace.read_set(test_info.id)
    test_rows = [i for i, key in enumerate(all_test_keys) if split_of.get(key, "") == test_split]
    if not test_rows:
        fuse_hint = "" if info.kind == "image" else f", {opt('prompt')} \"{test_info.prompt}\" and {opt('fuse')} all"
        raise InputError(
            f"no item of '{test_info.name}' is in split '{test_split}' (splits there: "
            f"{known_splits(split_of, all_test_keys)}); run {step('embed', 'TEST_IMAGES')} with {opt('split')} "
            f"{test_split}{fuse_hint}, or pick another test split", option="test_split"
        )
    test_keys = [all_test_keys[i] for i in test_rows]
    if classes is not None and (all_test_vecs.ndim != 3 or all_test_vecs.shape[1] != len(classes)):
        raise InputError(f"'{test_info.name}' does not hold one fused vector per class of its 'classes' attribute")
    if k is not None:
        check_k(int(k), len(train_keys), train_info, train_split)

    injective = bool(label_map) and len(set(label_map.values())) == len(label_map)
    identity = {
        "method": "fused", "train_set_id": train_info.id, "test_set_id": test_info.id,
        "train_split": train_split, "test_split": test_split,
        "train_keys_sha256": keys_digest(train_keys), "train_labels_sha256": keys_digest(train_labels),
        "test_keys_sha256": keys_digest(test_keys), "k": k, "seed": seed, "options": options,
    }
    if info.kind == "image":
        name = "fused-image"
    else:
        name = "fused-" + slugify(train_info.name.split(":", 1)[1])
    return PreparedInput(
        identity, default_name(workspace, name, train_info), {"input": train_info, "train": train_info, "test": test_info}, train_keys,
        all_train_vecs[train_rows],
        {"seed": seed, "k": k, "options": options, "train_labels": train_labels, "test_keys": test_keys,
         "test_vectors": all_test_vecs[test_rows], "classes": classes, "label_map": label_map,
         "injective": injective, "image_only": info.kind == "image"},
    )


def _nearest_allowed_cluster(vectors: np.ndarray, chosen: np.ndarray, prompt_classes: np.ndarray,
                             centroids: np.ndarray, cluster_labels: Sequence[Any]) -> np.ndarray:
    """For each test item, the filtered centroid that decided its class (its cluster in the export)."""
    from scipy.spatial.distance import cdist

    ids = np.full(vectors.shape[0], -1, dtype=np.int64)
    for p in np.unique(chosen):
        rows = np.flatnonzero(chosen == p)
        allowed = np.flatnonzero([lab is not None and lab == prompt_classes[p] for lab in cluster_labels])
        if allowed.size:
            ids[rows] = allowed[cdist(vectors[rows, p, :], centroids[allowed]).argmin(axis=1)]
    return ids


def compute_fused(prepared: PreparedInput, req: ClusterRequest, reporter: Reporter) -> MethodOutput:
    from clipclust.methods.fused.workflow import classify_fused, classify_image_only

    ctx = prepared.context
    k = None if ctx["k"] is None else int(ctx["k"])
    n_neighbors = int(ctx["options"].get("n_neighbors", 10))
    if ctx["image_only"]:
        result = classify_image_only(prepared.vectors, np.asarray(ctx["train_labels"]), ctx["test_vectors"],
                                     n_clusters=k, seed=ctx["seed"], n_neighbors=n_neighbors)
        test_vectors = np.broadcast_to(ctx["test_vectors"][:, None, :], (
            ctx["test_vectors"].shape[0], result.prompt_classes.shape[0], ctx["test_vectors"].shape[1]))
    else:
        result = classify_fused(prepared.vectors, np.asarray(ctx["train_labels"]), np.asarray(ctx["classes"]),
                                ctx["test_vectors"], n_clusters=k, seed=ctx["seed"], n_neighbors=n_neighbors)
        test_vectors = ctx["test_vectors"]
    chosen = np.argmin(result.distances, axis=1)
    test_ids = _nearest_allowed_cluster(np.asarray(test_vectors, np.float64), chosen, result.prompt_classes,
                                        result.centroids, result.cluster_labels)
    names = ["" if lab is None else str(lab) for lab in result.cluster_labels]
    predicted = [str(p) for p in result.predictions]
    space = "label"
    if ctx["label_map"] and ctx["injective"]:  # swapped prompts: report classes, not the prompt each was paired with
        inverse = {group: label for label, group in ctx["label_map"].items()}
        names = [inverse.get(n, n) if n else n for n in names]
        predicted = [inverse.get(p, p) for p in predicted]
    elif ctx["label_map"]:
        space = "group"
    details = {
        "seed": ctx["seed"], "options": ctx["options"], "k": int(result.params["n_clusters"]),
        "fused": result.params, "classes": [str(c) for c in result.prompt_classes.tolist()],
        "label_map": ctx["label_map"], "prediction_space": space, "n_test": len(ctx["test_keys"]),
        "image_only": ctx["image_only"],
    }
    return MethodOutput(
        keys=prepared.keys, ids=result.train_ids, centroids=result.centroids, cluster_names=names,
        extra={"test_keys": ctx["test_keys"], "test_ids": test_ids, "predicted": predicted}, details=details,
    )


register_method(MethodSpec(
    "fused", "the fused-embedding paper's workflow: spectral clusters of the training split's fused vectors, "
    "majority-vote labels (the one method that reads labels), test images classified by the nearest filtered "
    "centroid; on image: the image-only baseline", prepare_fused, compute_fused,
    options=(Option("n_neighbors", type=int, check=at_least_one, shown_default="10",
                    help="neighbours of the affinity graph"),
             Option("train_split", default="train", help="split clustered with its labels"),
             Option("test_split", default="test", help="split classified"))))

