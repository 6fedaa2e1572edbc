"""Named clusterings of stored sets: the library behind `clipclust cluster`.

A clustering is computed from vectors already in the workspace and stored under a name together with
the request that produced it; the same request (same set, same items, same parameters) finds the
stored result instead of computing it again.  Methods plug in through ``METHODS``, a table from the
``--method`` value to a :class:`MethodSpec` (``prepare`` finds and reads the inputs and says what
identifies the request, ``compute`` makes the ids), so IC|TC or ESMC become further entries without
touching the orchestration.

Labels: the classic methods and the ESMC head see vectors only.  The fused workflow (seed 000) reads
the training split's labels for its majority vote, which is the method; evaluation reads labels later.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .cache import SetInfo, Workspace
from .errors import InputError
from .methods.clustering import cluster, choose_k
from .progress import Reporter, SilentReporter

__all__ = [
    "METHODS",
    "ClusterRequest",
    "ClusteringSummary",
    "MethodOutput",
    "MethodSpec",
    "PreparedInput",
    "choose_clustering",
    "keys_digest",
    "label_space",
    "register_method",
    "resolve_item_set",
    "rows_for_keys",
    "run_clustering",
    "slugify",
]

DEFAULT_K_RANGE = (2, 10)
REFINEMENTS = ("head",)
FUSED_DEFAULT_SEED = 42  # SpectralClustering(random_state=42) in the paper's code

# Method-specific settings the CLI exposes, by method; anything else is refused with the flag's name.
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "kmeans": ("n_init",),
    "spectral": ("n_neighbors",),
    "agglomerative": ("linkage", "metric"),
    "hdbscan": ("min_cluster_size", "min_samples"),
    "fused": ("n_neighbors",),
}


# ---------------------------------------------------------------------------------------------- requests
@dataclass
class ClusterRequest:
    """Everything `clipclust cluster` can be asked for; the defaults are the CLI's defaults.

    ``k`` is an int, ``"auto"`` (silhouette over ``k_range``) or None (the method's default, when it has
    one).  ``seed`` None means the method's own default (0; 42 for the fused workflow, as in the paper).
    ``options`` holds method-specific settings (``n_neighbors``, ``linkage``, ``min_cluster_size``...).
    """

    method: str = "kmeans"
    on: str | None = None
    k: int | str | None = None
    seed: int | None = None
    name: str | None = None
    model: str | None = None
    split: str | None = None
    refine: str | None = None
    ratio: float = 0.3
    epochs: int = 100
    device: str = "auto"
    k_range: tuple[int, int] = DEFAULT_K_RANGE
    options: dict[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    test_split: str = "test"
    force: bool = False
    # --method ictc: the criterion, the LLM (a spec and its backend options, or an open generator), how
    # step 3 assigns, prompt overrides, step 2b's extra instruction and the label-count threshold.
    criterion: str | None = None
    llm: str | None = None
    llm_options: dict[str, Any] = field(default_factory=dict)
    generator: Any = None
    assign: str | None = None
    prompts_dir: str | None = None
    extra: str | None = None
    min_count: int | None = None


@dataclass
class PreparedInput:
    """What a method's ``prepare`` found: the vectors to cluster and what identifies the request.

    ``identity`` is JSON-able and complete: two requests with equal identities give the same result,
    so a stored clustering whose identity is equal is reused.  ``sets`` maps a role ("input", "train",
    "test") to the stored set it came from; ``context`` carries whatever else ``compute`` needs.
    """

    identity: dict[str, Any]
    default_name: str
    sets: dict[str, SetInfo]
    keys: list[str]
    vectors: np.ndarray
    context: dict[str, Any] = field(default_factory=dict)
    cleanup: Callable[[], None] | None = None  # releases what prepare opened (an LLM), reused or not


@dataclass
class MethodOutput:
    """What a method's ``compute`` returns, stored as the clustering (``details`` go into its params)."""

    keys: list[str]
    ids: np.ndarray
    centroids: np.ndarray | None = None
    cluster_names: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """One ``--method`` value: how to read its inputs and how to compute it."""

    name: str
    summary: str
    prepare: Callable[[Workspace, ClusterRequest], PreparedInput]
    compute: Callable[[PreparedInput, ClusterRequest, Reporter], MethodOutput]


METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add (or replace) a ``--method``; later methods (ictc, esmc) register themselves the same way."""
    METHODS[spec.name] = spec
    return spec


@dataclass
class ClusteringSummary:
    """What a `cluster` run did; the CLI prints it, tests assert on it."""

    name: str
    method: str
    on: str
    n_items: int
    n_clusters: int
    n_noise: int
    sizes: dict[str, int]
    seed: int | None
    k: int | None
    reused: bool = False
    replaced: bool = False
    k_table: list[dict[str, Any]] | None = None
    n_test: int | None = None
    test_on: str | None = None
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    names: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"names": self.names,
            "name": self.name, "method": self.method, "on": self.on, "n_items": self.n_items,
            "n_clusters": self.n_clusters, "n_noise": self.n_noise, "sizes": self.sizes, "seed": self.seed,
            "k": self.k, "reused": self.reused, "replaced": self.replaced, "k_table": self.k_table,
            "n_test": self.n_test, "test_on": self.test_on, "seconds": round(self.seconds, 3), "params": self.params,
        }


# ---------------------------------------------------------------------------------------------- helpers
def slugify(text: str, max_length: int = 64) -> str:
    """A shell-friendly name part: lower case letters, digits and single dashes ('This is <>' -> 'this-is')."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_length].rstrip("-") or "set"


def keys_digest(keys: Sequence[str]) -> str:
    """A short fingerprint of an ordered key list: a changed item set means a different request."""
    return hashlib.sha256("\n".join(keys).encode("ascii", "replace")).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    """The value as it reads back from the params JSON (tuples become lists), for equality checks."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _set_ref(info: SetInfo) -> dict[str, Any]:
    return {"id": info.id, "name": info.name, "kind": info.kind, "model": info.model, "prompt": info.prompt}


def resolve_item_set(workspace: Workspace, spec: str, model: str | None = None) -> SetInfo:
    """The item-keyed set named by ``--on`` (name, kind or id, as `info` lists them)."""
    if not workspace.exists():
        raise InputError(f"no workspace at {workspace.path}; run 'clipclust embed IMAGES' first or pass --cache")
    return workspace.resolve_set(spec, model=model, keyed_by="item")


def rows_for_keys(workspace: Workspace, set_id: str, keys: Sequence[str]) -> np.ndarray | None:
    """The (N, D) rows of ``keys`` in a stored set, in that order; None when the set or a key is gone."""
    try:
        stored_keys, data = workspace.read_set(set_id)
    except InputError:
        return None
    row_of = {k: i for i, k in enumerate(stored_keys)}
    if data.ndim != 2 or any(k not in row_of for k in keys):
        return None
    return data[[row_of[k] for k in keys]]


def _split_of(workspace: Workspace) -> dict[str, str]:
    items = workspace.items()
    return dict(zip(items.sha256, items.split))


def _known_splits(split_of: dict[str, str], keys: Sequence[str]) -> str:
    names = sorted({split_of.get(k, "") for k in keys})
    return ", ".join(f"'{n}'" if n else "(none)" for n in names) or "none"


def _read_clusterable(workspace: Workspace, info: SetInfo, split: str | None) -> tuple[list[str], np.ndarray]:
    """The (N, D) rows of a set to cluster, restricted to one split when asked."""
    if len(info.shape) != 2:
        hint = ""
        if info.kind == "fused-all":
            other = info.name.replace("fused-all", "fused-label", 1)
            hint = f"; cluster '{other}' or a fused-zeroshot set instead, or use --method fused"
        raise InputError(
            f"set '{info.name}' holds rows of shape {tuple(info.shape[1:])} (one vector per class for each item), "
            f"not one vector per item{hint}"
        )
    keys, vectors = workspace.read_set(info.id)
    if split is not None:
        split_of = _split_of(workspace)
        keep = [i for i, k in enumerate(keys) if split_of.get(k, "") == split]
        if not keep:
            raise InputError(
                f"no item of set '{info.name}' is in split '{split}' (its splits: {_known_splits(split_of, keys)}); "
                "pass another --split or embed with --split"
            )
        keys, vectors = [keys[i] for i in keep], vectors[keep]
    if not keys:
        raise InputError(f"set '{info.name}' is empty; run 'clipclust embed' first")
    return keys, vectors


def _parse_k(k: int | str | None) -> int | str | None:
    if k is None or isinstance(k, int):
        return k
    text = str(k).strip().lower()
    if text == "auto":
        return "auto"
    if text.isdigit():
        return int(text)
    raise InputError(f"-k {k}: expected a whole number of clusters or 'auto'")


def _check_k(k: int, n_items: int, info: SetInfo, split: str | None) -> int:
    where = f"set '{info.name}'" + (f" (split '{split}')" if split else "")
    if k < 2:
        raise InputError(f"-k {k}: at least 2 clusters are needed")
    if k > n_items:
        raise InputError(f"-k {k} is larger than the {n_items} items of {where}; pass -k {n_items} or less, "
                         "or embed more images")
    return k


def _check_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    allowed = METHOD_OPTIONS.get(method, ())
    given = {key: value for key, value in options.items() if value is not None}
    for key in given:
        if key not in allowed:
            owners = [m for m, keys in METHOD_OPTIONS.items() if key in keys]
            flag = "--" + key.replace("_", "-")
            raise InputError(f"{flag} applies to --method {' or '.join(owners) or '(none)'}, not {method}")
    return given


def _full_centroids(X: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Mean vector of each id 0..k-1 (NaN rows for ids that ended up empty), so row i is cluster i."""
    sums = np.zeros((k, X.shape[1]))
    keep = ids >= 0
    np.add.at(sums, ids[keep], X[keep])
    counts = np.bincount(ids[keep], minlength=k).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def label_space(params: dict[str, Any]) -> Callable[[str], str]:
    """How a true label reads in the space of a clustering's names and predictions.

    The fused workflow with a many-to-one class map (grouped prompts) votes and predicts groups, so
    labels must be mapped to their group before they are compared; otherwise labels stay as they are.
    """
    mapping = params.get("label_map") or {}
    if params.get("prediction_space") == "group" and mapping:
        return lambda label: mapping.get(label, "")
    return lambda label: label


# ---------------------------------------------------------------------------------------------- classic
def _prepare_classic(workspace: Workspace, req: ClusterRequest) -> PreparedInput:
    info = resolve_item_set(workspace, req.on or "image", req.model)
    keys, vectors = _read_clusterable(workspace, info, req.split)
    k = _parse_k(req.k)
    if req.method == "hdbscan":
        if k is not None:
            raise InputError("hdbscan decides the number of clusters itself; drop -k (tune --min-cluster-size instead)")
    elif k is None:
        raise InputError(f"--method {req.method} needs -k K (the number of clusters) or -k auto")
    elif k != "auto":
        _check_k(int(k), len(keys), info, req.split)
    if req.refine is not None and req.method != "kmeans":
        raise InputError(f"--refine {req.refine} starts from k-means; use --method kmeans (the default) with it")
    seed = 0 if req.seed is None else req.seed
    options = _check_options(req.method, req.options)
    identity: dict[str, Any] = {
        "method": req.method, "set_id": info.id, "split": req.split or "", "n_items": len(keys),
        "keys_sha256": keys_digest(keys), "k": k, "seed": seed, "options": options, "refine": req.refine or "",
    }
    if k == "auto":
        identity["k_range"] = list(req.k_range)
    if req.refine == "head":
        identity.update(ratio=req.ratio, epochs=req.epochs)
    name = f"{req.method}{'-' + req.refine if req.refine else ''}-{slugify(info.name)}"
    if req.split:
        name += f"-{slugify(req.split)}"
    return PreparedInput(identity, name, {"input": info}, keys, vectors, {"seed": seed, "k": k, "options": options})


def _compute_classic(prepared: PreparedInput, req: ClusterRequest, reporter: Reporter) -> MethodOutput:
    X = prepared.vectors
    seed, k, options = prepared.context["seed"], prepared.context["k"], prepared.context["options"]
    details: dict[str, Any] = {"seed": seed, "options": options}
    if k == "auto":
        low, high = req.k_range
        high = min(high, X.shape[0] - 1)
        if low < 2 or low > high:
            raise InputError(f"-k auto: the range {req.k_range[0]}:{req.k_range[1]} leaves no k between 2 and "
                             f"{X.shape[0] - 1} (the items minus one); pass --k-range with smaller numbers")
        with reporter.task(f"choosing k in {low}..{high} by silhouette", None):
            k, table = choose_k(X, req.method, range(low, high + 1), seed, metric="euclidean", **options)
        details["k_table"] = table
    if req.refine == "head":
        from .methods.head import esmc_head

        result = esmc_head(X, int(k), ratio=req.ratio, seed=seed, epochs=req.epochs, device=req.device)
        details.update(k=int(k), head=result.params, final_loss=result.loss_curve[-1])
        return MethodOutput(
            keys=prepared.keys, ids=result.ids, centroids=_full_centroids(np.asarray(X, np.float64), result.ids, int(k)),
            extra={"kmeans_ids": result.kmeans_ids, "pseudo_indices": result.pseudo_indices}, details=details,
        )
    result = cluster(X, req.method, None if k is None else int(k), seed, **options)  # type: ignore[arg-type]
    details.update(k=result.params["k"], method_params={key: v for key, v in result.params.items()
                                                        if key not in ("method", "k", "seed")})
    centroids = result.centroids
    if k is not None and centroids.shape[0] < int(k):  # keep row i = cluster i even if top ids are empty
        centroids = _full_centroids(np.asarray(X, np.float64), result.ids, int(k))
    return MethodOutput(keys=prepared.keys, ids=result.ids, centroids=centroids, details=details)


for _method, _summary in (
    ("kmeans", "k-means (n_init=10), or the ESMC head with --refine head"),
    ("spectral", "spectral clustering on a 10-nearest-neighbour graph"),
    ("agglomerative", "agglomerative clustering, Ward linkage by default"),
    ("hdbscan", "HDBSCAN: density decides the number of clusters, noise gets -1"),
):
    register_method(MethodSpec(_method, _summary, _prepare_classic, _compute_classic))


# ---------------------------------------------------------------------------------------------- fused
def _counterpart(workspace: Workspace, info: SetInfo, kind: str) -> SetInfo:
    """The fused-label / fused-all set made from the same model, template, class map and classes."""
    suffix = info.name.split(":", 1)[1] if ":" in info.name else ""
    wanted = f"{kind}:{suffix}"
    found = [s for s in workspace.list_sets() if s.kind == kind and s.name == wanted and s.model == info.model]
    same_classes = [s for s in found if s.attrs.get("classes") == info.attrs.get("classes")]
    if same_classes:
        return same_classes[0]
    split_flag, fuse_flag = ("train", "label") if kind == "fused-label" else ("test", "all")
    if found:
        raise InputError(f"'{wanted}' exists but for other classes than '{info.name}'; embed both splits with "
                         "the same --classes")
    raise InputError(f"the fused workflow needs '{wanted}' next to '{info.name}'; run 'clipclust embed IMAGES "
                     f"--split {split_flag} --prompt \"{info.prompt}\" --fuse {fuse_flag}'")


def _prepare_fused(workspace: Workspace, req: ClusterRequest) -> PreparedInput:
    on = req.on or "fused-label"
    try:
        info = resolve_item_set(workspace, on, req.model)
    except InputError as exc:
        if req.on is None and str(exc).startswith("no stored set"):
            raise InputError(
                "the fused workflow needs a 'fused-label' set (training images fused with their own label's prompt); "
                "run 'clipclust embed TRAIN_IMAGES --split train --prompt TEMPLATE --fuse label' and the same with "
                "TEST_IMAGES --split test --fuse all"
            ) from None
        raise
    k = _parse_k(req.k)
    if k == "auto":
        raise InputError("--method fused takes -k N or its default (2 x the number of prompts), not -k auto")
    if req.refine is not None:
        raise InputError("--refine applies to --method kmeans, not fused")
    if req.split is not None:
        raise InputError("--method fused uses --train-split and --test-split, not --split")
    options = _check_options("fused", req.options)
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
        train_info = info if info.kind == "fused-label" else _counterpart(workspace, info, "fused-label")
        test_info = info if info.kind == "fused-all" else _counterpart(workspace, info, "fused-all")
        classes = json.loads(test_info.attrs.get("classes", "[]"))
        provenance = json.loads(train_info.attrs.get("provenance", "{}"))
        label_map = {str(a): str(b) for a, b in (provenance.get("class_map") or {}).items()}
    else:
        raise InputError(f"--method fused runs on a prompt's fused sets (--on fused-label:TEMPLATE) or on 'image' "
                         f"(the image-only baseline); '{info.name}' is a {info.kind} set")

    if len(train_info.shape) != 2:
        raise InputError(f"set '{train_info.name}' does not hold one vector per item; it cannot train the workflow")
    all_train_keys, all_train_vecs = workspace.read_set(train_info.id)
    to_class = (lambda lab: label_map.get(lab, "")) if label_map else (lambda lab: lab)
    train_rows = []
    for i, key in enumerate(all_train_keys):
        if split_of.get(key, "") != req.train_split:
            continue
        cls = to_class(labels.get(key, ""))
        if cls and (classes is None or cls in classes):
            train_rows.append(i)
    if not train_rows:
        raise InputError(
            f"the fused workflow needs labelled training items: no item of '{train_info.name}' in split "
            f"'{req.train_split}' has a label (splits there: {_known_splits(split_of, all_train_keys)}); embed the "
            f"training images from class folders (or with --labels) and --split {req.train_split}"
        )
    train_keys = [all_train_keys[i] for i in train_rows]
    train_labels = [to_class(labels[k]) for k in train_keys]

    all_test_keys, all_test_vecs = workspace.read_set(test_info.id)
    test_rows = [i for i, key in enumerate(all_test_keys) if split_of.get(key, "") == req.test_split]
    if not test_rows:
        fuse_hint = "" if info.kind == "image" else f" --prompt \"{test_info.prompt}\" --fuse all"
        raise InputError(
            f"no item of '{test_info.name}' is in split '{req.test_split}' (splits there: "
            f"{_known_splits(split_of, all_test_keys)}); run 'clipclust embed TEST_IMAGES --split {req.test_split}"
            f"{fuse_hint}' or pass --test-split"
        )
    test_keys = [all_test_keys[i] for i in test_rows]
    if classes is not None and (all_test_vecs.ndim != 3 or all_test_vecs.shape[1] != len(classes)):
        raise InputError(f"'{test_info.name}' does not hold one fused vector per class of its 'classes' attribute")
    if k is not None:
        _check_k(int(k), len(train_keys), train_info, req.train_split)

    injective = bool(label_map) and len(set(label_map.values())) == len(label_map)
    identity = {
        "method": "fused", "train_set_id": train_info.id, "test_set_id": test_info.id,
        "train_split": req.train_split, "test_split": req.test_split,
        "train_keys_sha256": keys_digest(train_keys), "train_labels_sha256": keys_digest(train_labels),
        "test_keys_sha256": keys_digest(test_keys), "k": k, "seed": seed, "options": options,
    }
    if info.kind == "image":
        name = "fused-image"
    else:
        name = "fused-" + slugify(train_info.name.split(":", 1)[1])
    return PreparedInput(
        identity, name, {"input": train_info, "train": train_info, "test": test_info}, train_keys,
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


def _compute_fused(prepared: PreparedInput, req: ClusterRequest, reporter: Reporter) -> MethodOutput:
    from .methods.fused import classify_fused, classify_image_only

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
    "fused", "seed 000's workflow: spectral clusters of fused training vectors, majority-vote labels, "
    "test images classified by the filtered nearest centroid", _prepare_fused, _compute_fused))


# ---------------------------------------------------------------------------------------------- ictc
ICTC_ASSIGN = ("generate", "constrained", "embed")
DESCRIPTION_KINDS = ("description", "group-description")


def _description_set(workspace: Workspace, on: str | None, model: str | None) -> SetInfo:
    """The description set IC|TC clusters: ``--on`` (name, kind or id), else the only one stored."""
    if not workspace.exists():
        raise InputError(f"no workspace at {workspace.path}; run 'clipclust describe' first or pass --cache")
    if on is not None:
        info = workspace.resolve_set(on, model=model, keyed_by="item")
        if info.kind not in DESCRIPTION_KINDS:
            raise InputError(f"--method ictc clusters descriptions; '{info.name}' is a {info.kind} set "
                             "(pass --on with a description set that 'clipclust info' lists)")
        return info
    found = [s for s in workspace.list_sets() if s.kind in DESCRIPTION_KINDS and s.keyed_by == "item"
             and (not model or s.model == model or s.model.endswith(model))]
    if not found:
        raise InputError("--method ictc needs descriptions and the workspace holds none; run 'clipclust describe "
                         "IMAGES --criterion C --vlm MODEL' or 'clipclust describe --from FILE' first")
    if len(found) > 1:
        listing = "; ".join(f"{s.id} = {s.name}" for s in found)
        raise InputError(f"{len(found)} description sets are stored ({listing}); pick one with --on NAME or ID")
    return found[0]


def _prepare_ictc(workspace: Workspace, req: ClusterRequest) -> PreparedInput:
    from .methods.ictc import default_prompts, STEPS
    from .models.llm import DecodeParams, load_generator

    if not req.criterion or not req.criterion.strip():
        raise InputError("--method ictc needs --criterion TEXT (what to cluster by, e.g. mood)")
    k = _parse_k(req.k)
    if k is None or k == "auto":
        raise InputError("--method ictc needs -k K (the number of clusters the LLM names); -k auto is not supported")
    if req.refine is not None:
        raise InputError("--refine applies to --method kmeans, not ictc")
    _check_options("ictc", req.options)
    mode = req.assign or "generate"
    if mode not in ICTC_ASSIGN:
        raise InputError(f"--assign {mode}: expected one of {', '.join(ICTC_ASSIGN)}")
    if req.llm is None and req.generator is None:
        raise InputError("--method ictc needs --llm SPEC (a .gguf file, hf:ORG/NAME or http://HOST:PORT/v1)")
    if req.min_count is not None and req.min_count < 1:
        raise InputError(f"--min-count {req.min_count}: expected 1 or more")
    info = _description_set(workspace, req.on, req.model)
    keys, texts = workspace.read_set(info.id)
    if req.split is not None:
        split_of = _split_of(workspace)
        keep = [i for i, key in enumerate(keys) if split_of.get(key, "") == req.split]
        if not keep:
            raise InputError(f"no item of set '{info.name}' is in split '{req.split}' (its splits: "
                             f"{_known_splits(split_of, keys)}); pass another --split")
        keys, texts = [keys[i] for i in keep], texts[keep]
    if not keys:
        raise InputError(f"set '{info.name}' is empty; run 'clipclust describe' first")
    _check_k(int(k), len(keys), info, req.split)
    criterion = req.criterion.strip()
    prompts = default_prompts(criterion, prompt_dir=req.prompts_dir)
    seed = 0 if req.seed is None else req.seed
    options = {key: v for key, v in req.llm_options.items() if v is not None}
    params = DecodeParams(temperature=float(options.pop("temperature", 0.0)), seed=seed)
    generator = req.generator
    owned = generator is None
    if owned:
        generator = load_generator(req.llm, seed=seed, **options)  # type: ignore[arg-type]
    identity = {
        "method": "ictc", "set_id": info.id, "split": req.split or "", "n_items": len(keys),
        "keys_sha256": keys_digest(keys), "texts_sha256": keys_digest([str(t) for t in texts]),
        "criterion": criterion, "k": int(k), "assign": mode, "llm": generator.identity, "params": params.to_dict(),
        "prompts": {step: getattr(prompts, step) for step in STEPS}, "extra": req.extra, "min_count": req.min_count,
    }
    return PreparedInput(
        identity, f"ictc-{slugify(criterion)}", {"input": info}, keys, np.asarray(texts, dtype=object),
        {"workspace": workspace, "generator": generator, "criterion": criterion, "k": int(k), "mode": mode,
         "prompts": prompts, "params": params, "seed": seed},
        cleanup=generator.close if owned else None,
    )


def _compute_ictc(prepared: PreparedInput, req: ClusterRequest, reporter: Reporter) -> MethodOutput:
    from .methods.ictc import ngram_embedder, run_ictc
    from .models.llm import CachedGenerator

    ctx = prepared.context
    cached = CachedGenerator(ctx["generator"], ctx["workspace"])
    result = run_ictc(
        cached, [str(t) for t in prepared.vectors], ctx["criterion"], ctx["k"], mode=ctx["mode"],
        prompts=ctx["prompts"], params=ctx["params"], min_count=req.min_count, extra=req.extra,
        embed=ngram_embedder() if ctx["mode"] == "embed" else None,
    )
    n = len(prepared.keys)
    details = {
        "seed": ctx["seed"], "k": ctx["k"], "criterion": result.criterion, "assign": result.mode,
        "llm": cached.identity, "llm_name": cached.name, "prompts_source": result.prompts_source,
        "extra": result.extra, "decode": result.params.to_dict(), "names": result.names,
        "dictionary": result.dictionary, "kept": result.kept, "min_count": result.min_count,
        "names_outputs": result.names_outputs, "names_attempts": result.names_attempts,
        "names_fallback": result.names_fallback, "n_unmatched": result.n_unmatched,
        "calls": {step: {"hits": c.hits, "misses": c.misses} for step, c in result.stats.items()},
        "calls_total": {"hits": cached.stats.hits, "misses": cached.stats.misses},
    }
    extra: dict[str, Any] = {"answers": [str(a) for a in result.answers],
                             "matched": np.asarray(result.matched, dtype=np.int8)}
    if len(result.raw_labels) == n:
        extra["raw_labels"] = [str(lab) for lab in result.raw_labels]
        extra["raw_outputs"] = [str(o) for o in result.raw_outputs]
    return MethodOutput(keys=prepared.keys, ids=np.asarray(result.cluster_ids, dtype=np.int64),
                        cluster_names=list(result.names), extra=extra, details=details)


register_method(MethodSpec(
    "ictc", "IC|TC: an LLM labels each description for --criterion, names K clusters and assigns every item "
    "(--assign generate|constrained|embed)", _prepare_ictc, _compute_ictc))


# ---------------------------------------------------------------------------------------------- orchestration
def _check_name(name: str) -> str:
    if not name or name.strip() != name or "/" in name or name in (".", ".."):
        raise InputError(f"--name '{name}': use a non-empty name without '/' or surrounding spaces, e.g. kmeans-image")
    return name


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


def run_clustering(workspace: Workspace, request: ClusterRequest | None = None, *,
                   reporter: Reporter | None = None, **fields: Any) -> ClusteringSummary:
    """Cluster a stored set and store the result under a name; an identical earlier request is reused.

    Pass a :class:`ClusterRequest` or its fields as keywords (``on="image", method="kmeans", k=10``).
    Bad requests (unknown set, k larger than the items, a method's ValueError) raise InputError.
    """
    req = request or ClusterRequest(**fields)
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    spec = METHODS.get(req.method)
    if spec is None:
        raise InputError(f"--method {req.method}: expected one of {', '.join(METHODS)}")
    if req.refine is not None and req.refine not in REFINEMENTS:
        raise InputError(f"--refine {req.refine}: expected one of {', '.join(REFINEMENTS)}")
    if req.refine is not None and not 0.0 < req.ratio <= 1.0:
        raise InputError(f"--ratio {req.ratio}: expected a fraction in (0, 1], e.g. 0.3")
    given = [flag for flag, value in (("--criterion", req.criterion), ("--llm", req.llm), ("--assign", req.assign),
                                      ("--prompts", req.prompts_dir), ("--extra", req.extra),
                                      ("--min-count", req.min_count)) if value is not None]
    given += ["--" + key.replace("n_threads", "threads").replace("model", "model-name").replace("_", "-")
              for key, value in req.llm_options.items() if value is not None]
    if given and req.method != "ictc":
        raise InputError(f"{given[0]} applies to --method ictc, not {req.method}")
    prepared = spec.prepare(workspace, req)
    try:
        return _run_prepared(workspace, req, spec, prepared, reporter, started)
    finally:
        if prepared.cleanup is not None:
            prepared.cleanup()


def _run_prepared(workspace: Workspace, req: ClusterRequest, spec: MethodSpec, prepared: PreparedInput,
                  reporter: Reporter, started: float) -> ClusteringSummary:
    name = _check_name(req.name if req.name is not None else prepared.default_name)
    identity = _jsonable(prepared.identity)

    replaced = False
    if name in workspace.list_clusterings():
        stored = workspace.read_clustering(name)
        if not req.force and stored["params"].get("request") == identity:
            return _summary(name, stored, True, False, time.perf_counter() - started)
        replaced = True
        if stored["params"].get("request") != identity:
            reporter.warn(f"clustering '{name}' exists with other inputs or parameters; replacing it")

    label = prepared.sets["input"].name
    try:
        with warnings.catch_warnings(record=True) as caught, \
                reporter.task(f"{req.method} on {label} ({len(prepared.keys)} items)", None):
            warnings.simplefilter("always")
            output = spec.compute(prepared, req, reporter)
    except ValueError as exc:
        raise InputError(f"--method {req.method} on '{label}': {str(exc).rstrip('.')}") from None
    for message in dict.fromkeys(str(w.message) for w in caught):  # e.g. sklearn's "Graph is not fully connected"
        reporter.warn(f"{req.method} on '{label}': {message}")
    params = {
        "method": req.method, "refine": req.refine or "", "request": identity,
        "sets": {role: _set_ref(info) for role, info in prepared.sets.items()},
        "n_items": len(output.keys), **output.details,
    }
    workspace.save_clustering(name, keys=output.keys, ids=output.ids, params=params, centroids=output.centroids,
                              cluster_names=output.cluster_names, extra=output.extra)
    return _summary(name, workspace.read_clustering(name), False, replaced, time.perf_counter() - started)


def choose_clustering(workspace: Workspace, name: str | None) -> str:
    """The clustering a command works on: the named one, or the only one there is."""
    if not workspace.exists():
        raise InputError(f"no workspace at {workspace.path}; run 'clipclust embed IMAGES' first or pass --cache")
    names = workspace.list_clusterings()
    if name is not None:
        if name not in names:
            raise InputError(f"no clustering named '{name}' (known: {', '.join(names) or 'none'}); "
                             "run 'clipclust cluster' first")
        return name
    if not names:
        raise InputError("the workspace holds no clustering yet; run 'clipclust cluster' first")
    if len(names) > 1:
        raise InputError(f"the workspace holds {len(names)} clusterings ({', '.join(names)}); name one")
    return names[0]
