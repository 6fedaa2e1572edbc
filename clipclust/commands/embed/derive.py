"""Rows of the item-keyed sets derived from image and text vectors: zero-shot and agnostic similarities,
fused vectors (or, for fused sets computed on read, which text row each item is fused with).

New images get their derived rows in the batch that encodes them (``images.py``); items whose image
vectors are stored already get theirs here, in one streamed pass over the image set.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from clipclust.commands.embed.plan import EmbedPlan, TextSet
from clipclust.store import SetSpec, Workspace

def derive(text: TextSet, image_vecs: np.ndarray, classes_of_items: list[str | None]) -> list[tuple[SetSpec, list[int], Any]]:
    """Rows of each derived set for a block of image vectors: (spec, row indices into the block, data)."""
    assert text.vectors is not None
    # einsum's own loop, not BLAS: a row's similarities then do not depend on which rows share its batch,
    # so shards, batch sizes and resumed runs store bit-identical rows (BLAS differed in the last bit)
    sims = np.einsum("id,cd->ic", image_vecs, text.vectors)
    out: list[tuple[SetSpec, list[int], Any]] = []
    for spec in text.derived:
        kind = spec.kind
        if kind in ("zeroshot", "agnostic"):
            out.append((spec, list(range(len(image_vecs))), sims))
        elif kind.startswith("fused-"):
            rows, cls = _fused_text_rows(kind, text, sims, classes_of_items)
            if not rows:
                continue
            if spec.recipe is not None:  # computed on read: store which text row each item is fused with
                out.append((spec, rows, cls))
            elif kind == "fused-all":
                out.append((spec, rows, (image_vecs[:, None, :] + text.vectors[None]) / 2))
            else:
                out.append((spec, rows, (image_vecs[rows] + text.vectors[cls]) / 2))
    return out


def block_rows(plan: EmbedPlan, keys: list[str], vecs: np.ndarray) -> Iterator[tuple[SetSpec, list[str], Any]]:
    """Every derived set's rows for a block of image vectors, keyed by the items' sha256s."""
    classes = [plan.item_class(k) for k in keys]
    for ts in plan.texts:
        for spec, idx, data in derive(ts, vecs, classes):
            yield spec, [keys[i] for i in idx], data


def _fused_text_rows(kind: str, text: TextSet, sims: np.ndarray,
                     classes_of_items: list[str | None]) -> tuple[list[int], np.ndarray]:
    """The items of a block a fused set holds, and the text row (index into classes) each is fused with.

    fused-all fuses with every class: its text row is -1.
    """
    if kind == "fused-zeroshot":
        return list(range(len(sims))), sims.argmax(1).astype(np.int32)
    if kind == "fused-all":
        return list(range(len(sims))), np.full(len(sims), -1, dtype=np.int32)
    index = {c: i for i, c in enumerate(text.classes)}
    rows = [i for i, c in enumerate(classes_of_items) if c is not None and c in index]
    return rows, np.array([index[classes_of_items[i]] for i in rows], dtype=np.int32)  # type: ignore[index]


def plan_fused_storage(workspace: Workspace, ts: TextSet, image_set: str, store_fused: bool) -> None:
    """Fused sets are computed on read unless asked to be stored; an existing set keeps how it was made."""
    assert ts.vectors is not None
    for n, d in enumerate(ts.derived):
        if not d.kind.startswith("fused-"):
            continue
        derived = workspace.is_derived(d.id)
        if derived is None:
            derived = not store_fused
        if derived:
            fuse = d.kind.removeprefix("fused-")
            shape = ts.vectors.shape if fuse == "all" else ts.vectors.shape[1:]
            ts.derived[n] = d.replace_fields(
                recipe={"image_set": image_set, "text_set": ts.spec.id, "fuse": fuse, "row_shape": shape},
                provenance={**d.provenance, "stored": "computed on read"})


def missing_rows(workspace: Workspace, plan: EmbedPlan, cached: list[str], relabelled: set[str]) -> dict[str, set[str]]:
    """Derived-set id -> the cached items (sha256) it lacks a row for (e.g. a new prompt).

    A relabelled item's fused-label row is computed again and replaces the old one.
    """
    wanted = {}
    for ts in plan.texts:
        for n, d in enumerate(ts.derived):
            have = workspace.set_keys(d.id)
            want = {sha for sha in cached if sha not in have}
            if d.kind == "fused-label":
                ts.derived[n] = d = d.replace_fields(replace=bool(relabelled & have))
                want = {sha for sha in want | (relabelled & have) if plan.item_class(sha) in ts.classes}
            if want:
                wanted[d.id] = want
    return wanted


def derive_from_store(workspace: Workspace, plan: EmbedPlan, shas: list[str], wanted: dict[str, set[str]],
                      chunk: int = 16384) -> int:
    """Derived rows from stored image vectors: one streamed pass over the image set, one write per block."""
    needed = {s for s in shas if any(s in want for want in wanted.values())}
    added = 0
    for keys, vecs in workspace.iter_set(plan.image.id, chunk):
        picked = [i for i, k in enumerate(keys) if k in needed]
        if not picked:
            continue
        block = [keys[i] for i in picked]
        rows = []
        for spec, row_keys, data in block_rows(plan, block, np.asarray(vecs[picked], dtype=np.float32)):
            want = wanted.get(spec.id, set())
            keep = [j for j, k in enumerate(row_keys) if k in want]
            if keep:
                rows.append((spec, [row_keys[j] for j in keep], data[keep]))
        added += workspace.write_batch(rows=rows)
    return added
