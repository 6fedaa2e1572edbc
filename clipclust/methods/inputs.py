"""Reading what methods cluster: sets by name, description sets, split filters, K checks, default names.

Shared by every method module; nothing here knows a particular method.  ``DESCRIPTION_KINDS`` is the one
list of the set kinds that hold descriptions (written by describe, read by ictc and esmc).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Callable, Sequence

import numpy as np

from clipclust.store import SetInfo, Workspace
from clipclust.errors import InputError, opt, step

__all__ = [
    "DESCRIPTION_KINDS",
    "check_k",
    "default_name",
    "description_set",
    "description_sets",
    "full_centroids",
    "jsonable",
    "keys_digest",
    "known_splits",
    "label_space",
    "parse_k",
    "read_clusterable",
    "resolve_item_set",
    "rows_for_keys",
    "set_ref",
    "slugify",
    "split_keys",
    "split_of",
]


def slugify(text: str, max_length: int = 64) -> str:
    """A shell-friendly name part: lower case letters, digits and single dashes ('This is <>' -> 'this-is')."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_length].rstrip("-") or "set"


def keys_digest(keys: Sequence[str]) -> str:
    """A short fingerprint of an ordered key list: a changed item set means a different request."""
    return hashlib.sha256("\n".join(keys).encode("ascii", "replace")).hexdigest()[:16]


def jsonable(value: Any) -> Any:
    """The value as it reads back from the params JSON (tuples become lists), for equality checks."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def set_ref(info: SetInfo) -> dict[str, Any]:
    return {"id": info.id, "name": info.name, "kind": info.kind, "model": info.model, "prompt": info.prompt}


def resolve_item_set(workspace: Workspace, spec: str, model: str | None = None) -> SetInfo:
    """The item-keyed set a request names (name, kind or id, as `info` lists them)."""
    if not workspace.exists():
        raise InputError(f"no workspace at {workspace.path}; run {step('embed', 'IMAGES')} first or pass the "
                         "workspace's path")
    return workspace.resolve_set(spec, model=model, keyed_by="item")


def rows_for_keys(workspace: Workspace, set_id: str, keys: Sequence[str]) -> np.ndarray | None:
    """The (N, D) rows of ``keys`` in a stored set, in that order; None when the set or a key is gone (a set
    that cannot be read, holding NaN rows, is an error)."""
    if workspace.is_derived(set_id) is None:
        return None
    stored_keys, data = workspace.read_set(set_id)
    row_of = {k: i for i, k in enumerate(stored_keys)}
    if data.ndim != 2 or any(k not in row_of for k in keys):
        return None
    return data[[row_of[k] for k in keys]]


def split_of(workspace: Workspace) -> dict[str, str]:
    items = workspace.items()
    return dict(zip(items.sha256, items.split))


def known_splits(splits: dict[str, str], keys: Sequence[str]) -> str:
    names = sorted({splits.get(k, "") for k in keys})
    return ", ".join(f"'{n}'" if n else "(none)" for n in names) or "none"


def split_keys(workspace: Workspace, info: SetInfo, keys: Sequence[str], split: str | None) -> list[int]:
    """Row positions of ``keys`` in ``split`` (all rows when no split is asked); an empty split is an error."""
    if split is None:
        return list(range(len(keys)))
    splits = split_of(workspace)
    keep = [i for i, k in enumerate(keys) if splits.get(k, "") == split]
    if not keep:
        raise InputError(f"no item of set '{info.name}' is in split '{split}' (its splits: "
                         f"{known_splits(splits, keys)}); pick another split or embed with one", option="split")
    return keep


def read_clusterable(workspace: Workspace, info: SetInfo, split: str | None) -> tuple[list[str], np.ndarray]:
    """The (N, D) rows of a set to cluster, restricted to one split when asked."""
    if len(info.shape) != 2:
        hint = ""
        if info.kind == "fused-all":
            other = info.name.replace("fused-all", "fused-label", 1)
            hint = f"; cluster '{other}' or a fused-zeroshot set instead, or use the fused method"
        raise InputError(
            f"set '{info.name}' holds rows of shape {tuple(info.shape[1:])} (one vector per class for each item), "
            f"not one vector per item{hint}", option="on"
        )
    keys, vectors = workspace.read_set(info.id)
    keep = split_keys(workspace, info, keys, split)
    if split is not None:
        keys, vectors = [keys[i] for i in keep], vectors[keep]
    if not keys:
        raise InputError(f"set '{info.name}' is empty; run {step('embed')} first", option="on")
    return keys, vectors


def parse_k(k: int | str | None) -> int | str | None:
    if k is None or isinstance(k, int):
        return k
    text = str(k).strip().lower()
    if text == "auto":
        return "auto"
    if text.isdecimal():  # not isdigit(): int() refuses its superscripts
        return int(text)
    raise InputError(f"'{k}': expected a whole number of clusters or 'auto'", option="k")


def silhouette_k(X: np.ndarray, method: str, k_range: tuple[int, int], seed: int, reporter: Any,
                 **options: Any) -> tuple[int, list[dict[str, Any]]]:
    """K by the silhouette of ``method`` over ``k_range`` (capped at the items minus one), and the table
    of every K tried: how ``auto`` chooses for methods that cluster vectors."""
    from clipclust.core.clustering import choose_k

    low, high = k_range
    high = min(high, X.shape[0] - 1)
    if low < 2 or low > high:
        raise InputError(f"auto: the range {k_range[0]}:{k_range[1]} leaves no k between 2 and "
                         f"{X.shape[0] - 1} (the items minus one); pass a range with smaller numbers",
                         option="k_range")
    with reporter.task(f"choosing k in {low}..{high} by silhouette", None):
        return choose_k(X, method, range(low, high + 1), seed, metric="euclidean", **options)


def check_k(k: int, n_items: int, info: SetInfo, split: str | None) -> int:
    where = f"set '{info.name}'" + (f" (split '{split}')" if split else "")
    if k < 2:
        raise InputError(f"{k}: at least 2 clusters are needed", option="k")
    if k > n_items:
        more = "describe more images" if info.kind == "description" else "embed more images"
        raise InputError(f"{k} is larger than the {n_items} items of {where}; ask for {n_items} clusters or "
                         f"fewer, or {more}", option="k")
    return k


def full_centroids(X: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
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


def default_name(workspace: Workspace, base: str, info: SetInfo) -> str:
    """``base`` (method + set, e.g. 'kmeans-image'), made unique per model when several models' sets share
    the set's name, so a second model's run gets its own clustering instead of replacing the first's."""
    twins = [s for s in workspace.list_sets() if s.name == info.name and s.id != info.id]
    if not twins:
        return base
    model = info.model.split("@", 1)[0].rsplit(":", 1)[-1].rsplit("/", 1)[-1]
    return f"{base}-{slugify(model, 32)}-{info.id[:6]}"


DESCRIPTION_KINDS = ("description", "group-description")


def description_sets(workspace: Workspace) -> list[SetInfo]:
    """The stored description sets (item-keyed text), in ``info`` order."""
    return [s for s in workspace.list_sets() if s.kind in DESCRIPTION_KINDS and s.keyed_by == "item"]


def description_set(workspace: Workspace, on: str | None, model: str | None, *, reader: str,
                    hint: str = "", missing_option: str | None = None) -> SetInfo:
    """The description set a method reads: ``on`` (name, kind or id), else the only one stored.

    ``reader`` names who reads them in the messages ("the ictc method"); ``hint`` adds another way out
    to the wrong-kind message; ``missing_option`` is the option to blame when the workspace holds none.
    """
    if not workspace.exists():
        raise InputError(f"no workspace at {workspace.path}; run {step('describe')} first or pass the workspace's "
                         "path")
    if on is not None:
        info = workspace.resolve_set(on, model=model, keyed_by="item")
        if info.kind not in DESCRIPTION_KINDS:
            raise InputError(f"{reader} reads descriptions; '{info.name}' is a {info.kind} set (name a description "
                             f"set that {step('info')} lists{hint})", option="on")
        return info
    found = [s for s in description_sets(workspace) if not model or s.model == model or s.model.endswith(model)]
    if not found:
        raise InputError(f"{reader} needs descriptions and the workspace holds none; run {step('describe', 'IMAGES')} "
                         f"with {opt('criterion')} C and {opt('vlm')} MODEL, or import them with {opt('from')} FILE, "
                         "first", option=missing_option)
    if len(found) > 1:
        listing = "; ".join(f"{s.id} = {s.name}" for s in found)
        raise InputError(f"{len(found)} description sets are stored ({listing}); name one or give its id",
                         option="on")
    return found[0]
