"""Derived sets: fused vectors computed on read from the stored image and text vectors.

A fused row is (image + text) / 2 of two stored, L2-normalised vectors, so storing it costs D floats per
item (C x D for ``fused-all``) for nothing a block of arithmetic cannot give back.  A derived set stores
only its keys and, per key, which text row it was fused with (``data``, int32: an index into the set's
``classes`` attribute; -1 for ``fused-all``, which fuses with every class).  The recipe is in the
group's attributes, so plain h5py can compute the rows too (docs/cache-format.md).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import h5py
import numpy as np

from clipclust.errors import ClipclustError, opt, step
from clipclust.store.rows import decode, read_rows

RECIPE = "fuse-mean"  # the value of the `derived` attribute: (image + text) / 2
FUSE_KINDS = ("label", "zeroshot", "all")
TEXT_ROW = np.int32  # the dtype of a derived set's `data` column
BLOCK_BYTES = 1 << 28  # computed rows per block of a streamed read stay within this (fused-all rows are C x D)


def is_derived(g: h5py.Group) -> bool:
    return str(g.attrs.get("derived", "")) == RECIPE


def recipe_attrs(recipe: dict[str, Any]) -> dict[str, Any]:
    """The attributes a new derived set is created with, from the recipe ``embed`` plans."""
    if recipe.get("fuse") not in FUSE_KINDS:
        raise ValueError(f"unknown fuse kind {recipe.get('fuse')!r}")
    return {"derived": RECIPE, "image_set": recipe["image_set"], "text_set": recipe["text_set"],
            "fuse": recipe["fuse"], "row_shape": json.dumps([int(x) for x in recipe["row_shape"]])}


def row_shape(g: h5py.Group) -> tuple[int, ...]:
    return tuple(int(x) for x in json.loads(g.attrs["row_shape"]))


def block_rows(g: h5py.Group, chunk: int) -> int:
    """Rows per block of a streamed read: ``chunk``, fewer when computed rows would outgrow BLOCK_BYTES."""
    return max(1, min(chunk, BLOCK_BYTES // (4 * int(np.prod(row_shape(g))))))


def _source(f: h5py.File, g: h5py.Group, attr: str) -> h5py.Group:
    set_id = str(g.attrs[attr])
    path = f"sets/{set_id}"
    if path not in f:
        raise ClipclustError(f"the derived set {g.name} needs the set {set_id}, which the workspace lacks; "
                             f"run {step('check', opt('repair'))} or embed again with the same options")
    return f[path]


def text_vectors(f: h5py.File, g: h5py.Group) -> np.ndarray:
    """The text vectors a derived set fuses with, one row per entry of its ``classes`` attribute."""
    text = _source(f, g, "text_set")
    position = {k: i for i, k in enumerate(decode(text["keys"][:]))}
    classes = json.loads(g.attrs["classes"])
    missing = [c for c in classes if c not in position]
    if missing:
        raise ClipclustError(f"the derived set {g.name} needs text vectors for {missing[:3]}, which are not stored")
    return text["data"][:].astype(np.float32)[[position[c] for c in classes]]


def fused_rows(f: h5py.File, g: h5py.Group, keys: Sequence[str], text_rows: np.ndarray, texts: np.ndarray,
               image_index: Callable[[h5py.Group], dict[str, int]]) -> np.ndarray:
    """The fused rows of ``keys`` (their ``data`` entries are ``text_rows``), as float32."""
    image = _source(f, g, "image_set")
    index = image_index(image)
    try:
        rows = [index[k] for k in keys]
    except KeyError as exc:
        raise ClipclustError(f"the derived set {g.name} has key {exc.args[0]} without an image vector") from None
    vecs = read_rows(image["data"], rows).astype(np.float32, copy=False)
    if str(g.attrs["fuse"]) == "all":
        return (vecs[:, None, :] + texts[None]) / 2
    return (vecs + texts[np.asarray(text_rows, dtype=np.int64)]) / 2
