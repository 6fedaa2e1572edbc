"""Thumbnails of a report's items, made once and kept in the workspace.

A thumbnail is a small WebP (at most ``size`` pixels a side) kept as base64 text in an item-keyed set of
kind ``thumbnail`` ("thumbnails:64px"; its id derives from the size and the encoding).  A second report of
the same items reads them back and decodes no image; the workspace carries them wherever it is copied,
and a report still shows an image whose file has since moved.  Items without an image (text-only
descriptions) get none; an image whose file is gone, changed size since it was embedded, or does not
decode is *missing*: the report shows a placeholder for it and counts it.
"""

from __future__ import annotations

import base64
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from clipclust.commands.report.catalog import Catalog
from clipclust.core.images import IMAGE_EXTENSIONS, UnreadableImage, decode_image
from clipclust.core.progress import Reporter
from clipclust.store import SetSpec, Workspace

__all__ = ["IMAGE", "MISSING", "TEXT", "Thumbnails", "gather_thumbnails", "item_kinds", "make_thumbnail",
           "thumbnail_spec"]

KIND = "thumbnail"
QUALITY = 70
BLOCK = 512  # thumbnails made and stored per workspace transaction
IMAGE, MISSING, TEXT = 0, 1, 2  # what an item shows: its thumbnail, a placeholder, its text


def thumbnail_spec(size: int) -> SetSpec:
    """The set that keeps thumbnails of at most ``size`` pixels a side."""
    return SetSpec.of(["thumbnail", "webp", int(size), QUALITY], name=f"thumbnails:{int(size)}px", kind=KIND,
                      dtype="str", provenance={"size": int(size), "format": "webp", "quality": QUALITY})


def make_thumbnail(data: bytes, size: int) -> str:
    """The base64 WebP thumbnail of an image file's bytes (raises UnreadableImage)."""
    image = decode_image(data, min_size=size)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=QUALITY, method=4)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass
class Thumbnails:
    """What a report found: the thumbnails asked for (by item key), what each item shows, and the counts."""

    data: dict[str, str] = field(default_factory=dict)
    kinds: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    made: int = 0
    reused: int = 0
    missing: list[str] = field(default_factory=list)


def item_kinds(paths: Sequence[str], widths: Sequence[int]) -> np.ndarray:
    """TEXT for the items made from a description alone (no recorded image size, no image file name), else
    IMAGE (MISSING is found out by :func:`gather_thumbnails`)."""
    return np.array([TEXT if int(w) <= 0 and Path(p).suffix.lower() not in IMAGE_EXTENSIONS else IMAGE
                     for p, w in zip(paths, widths)], dtype=np.int8)


def _file_state(path: str, size: int) -> bool:
    """Whether the item's file is there with the size it had when it was embedded (0: not recorded)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    return st.st_size == size if size > 0 else os.path.isfile(path)


def _make(path: str, size: int) -> str | None:
    try:
        return make_thumbnail(Path(path).read_bytes(), size)
    except (OSError, UnreadableImage):
        return None


def gather_thumbnails(workspace: Workspace, catalog: Catalog, kinds: np.ndarray, wanted: np.ndarray, *, size: int,
                      reporter: Reporter, workers: int | None = None) -> Thumbnails:
    """The thumbnails of the ``wanted`` items (a mask over the catalog): read from the workspace where kept,
    else made from the files and kept.  Image items whose file is not there become MISSING."""
    spec = thumbnail_spec(size)
    keys, paths, sizes = catalog.keys, catalog.paths, catalog.sizes
    out = Thumbnails(kinds=kinds.copy())
    kept = workspace.set_keys(spec.id) if any(s.id == spec.id for s in workspace.list_sets()) else set()
    for i, key in enumerate(keys):
        if out.kinds[i] == IMAGE and key not in kept and not _file_state(paths[i], int(sizes[i])):
            out.kinds[i] = MISSING
    to_make = [i for i in np.flatnonzero(wanted & (out.kinds == IMAGE)) if keys[i] not in kept]
    if to_make:
        workers = workers or min(8, os.cpu_count() or 1)
        with reporter.task(f"thumbnails of {len(to_make)} images", len(to_make)) as advance, \
                ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(to_make), BLOCK):
                block = to_make[start:start + BLOCK]
                made = list(pool.map(lambda i: _make(paths[i], size), block))
                good = [(keys[i], text) for i, text in zip(block, made) if text is not None]
                for i, text in zip(block, made):
                    if text is None:
                        out.kinds[i] = MISSING
                if good:
                    workspace.write_batch(rows=[(spec, [k for k, _ in good], [t for _, t in good])])
                    out.data.update(good)
                advance(len(block))
        out.made = len(out.data)
    want_kept = {keys[i] for i in np.flatnonzero(wanted) if keys[i] in kept}
    if want_kept:
        for block_keys, texts in workspace.iter_set(spec.id, chunk=8192):
            out.data.update((k, str(t)) for k, t in zip(block_keys, texts) if k in want_kept)
        out.reused = len(want_kept)
    out.missing = [paths[i] for i in np.flatnonzero(out.kinds == MISSING)]
    return out
