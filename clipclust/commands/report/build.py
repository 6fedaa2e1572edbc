"""`clipclust report` as a library call: one offline HTML page that shows what the clusters are."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clipclust.commands.levels import levels_of, taxonomy_tree, with_levels
from clipclust.commands.report.catalog import build_catalog, text_sets
from clipclust.commands.report.clusters import ClusteringView, view_clustering
from clipclust.commands.report.layout import map_layout
from clipclust.commands.report.page import (PACK, build_payload, folder_for, render_page, writable_target,
                                            write_report)
from clipclust.commands.report.thumbnails import IMAGE, TEXT, Thumbnails, gather_thumbnails, item_kinds
from clipclust.core.progress import Reporter, SilentReporter
from clipclust.errors import InputError, opt, step
from clipclust.store import Workspace
from clipclust.version import __version__

__all__ = ["HOVER_INLINE", "ReportSummary", "THUMBNAIL_MODES", "report"]

THUMBNAIL_MODES = ("inline", "folder", "none")
HOVER_INLINE = 2000  # inline mode: thumbnails inlined for the map's hover besides the cards' own


@dataclass
class ReportSummary:
    """What `report` wrote; the CLI prints it, tests assert on it."""

    path: str
    bytes: int
    clusterings: list[str]
    n_items: int
    n_cards: int
    thumbnails: str
    n_thumbnails: int  # inlined in the page (plus, with folder, every item's in the packs)
    thumbnails_made: int  # decoded from image files by this run
    thumbnails_reused: int  # read back from the workspace
    missing: list[str] = field(default_factory=list)  # image files gone, changed or unreadable
    n_text_items: int = 0
    folder: str | None = None
    map: str | None = None  # "tsne of 'image'"; None: no vectors placed the items
    map_cached: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stored_clusterings(workspace: Workspace, names: Sequence[str]) -> list[dict[str, Any]]:
    if not workspace.exists():
        raise InputError(f"no workspace at {workspace.path}; run {step('embed', 'IMAGES')} first or pass the "
                         "workspace's path")
    known = workspace.list_clusterings()
    if not known:
        raise InputError(f"the workspace holds no clustering yet; run {step('cluster')} first")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"no clustering named '{unknown[0]}' (known: {', '.join(known)})")
    return [workspace.read_clustering(n) for n in with_levels(workspace, list(dict.fromkeys(names)) or known)]


def _card_rows(views: Sequence[ClusteringView], n: int) -> np.ndarray:
    """A mask of the rows some card shows."""
    shown = np.zeros(n, dtype=bool)
    for view in views:
        for card in view.cards:
            shown[card.representatives] = True
            shown[[row for row, _ in card.borderline]] = True
    return shown


def _spread(kinds: np.ndarray, count: int) -> np.ndarray:
    """A mask of up to ``count`` image rows spread evenly over the catalog."""
    images = np.flatnonzero(kinds == IMAGE)
    mask = np.zeros(kinds.shape[0], dtype=bool)
    if images.size:
        mask[images[np.unique(np.linspace(0, images.size - 1, min(images.size, count)).astype(int))]] = True
    return mask


def report(workspace: Workspace, names: Sequence[str] = (), out: str | Path = "report.html", *,
           thumbnails: str = "inline", layout: str = "auto", map_on: str | None = None, per_cluster: int = 6,
           borderline: int = 4, thumb: int = 64, seed: int = 0, perplexity: float = 30.0, title: str = "",
           reporter: Reporter | None = None) -> ReportSummary:
    """Write one self-contained HTML report of the named clusterings (all when none is named).

    It holds a card per cluster (name, size, criterion, typical and borderline thumbnails, an LLM method's
    raw labels), a map of the items coloured by cluster, the scores and a cluster x label table where
    items have labels, a switcher between the clusterings, search and CSV downloads.  ``thumbnails``:
    ``inline`` (the cards' and a sample for the map, in the page), ``folder`` (also every item's, in
    packs beside the page) or ``none``.  Thumbnails are kept in the workspace for the next report.
    """
    started = time.perf_counter()
    reporter = reporter or SilentReporter()
    if thumbnails not in THUMBNAIL_MODES:
        raise InputError(f"{thumbnails}: expected one of {', '.join(THUMBNAIL_MODES)}", option="thumbnails")
    if per_cluster < 1 or borderline < 0:
        raise InputError(f"{opt('per_cluster')} must be at least 1 and {opt('borderline')} at least 0")
    if thumb < 16 or thumb > 512:
        raise InputError(f"{thumb}: expected a size in pixels from 16 to 512", option="thumb")
    stored = _stored_clusterings(workspace, names)
    target = writable_target(Path(out))
    catalog = build_catalog(workspace, stored)
    if not len(catalog):
        raise InputError("the chosen clusterings hold no items")
    inputs = [s["params"].get("sets", {}).get("input") or {} for s in stored]
    placed = map_layout(workspace, catalog.keys, kind=layout, on=map_on, inputs=inputs, seed=seed,
                        perplexity=perplexity, reporter=reporter)
    texts = text_sets(workspace, catalog, stored)
    views = [view_clustering(workspace, s, catalog, placed, texts, per_cluster=per_cluster, borderline=borderline)
             for s in stored]
    for view, s in zip(views, stored):  # a level of a taxonomy shows the tree of its levels
        levels = levels_of(workspace, s["params"])
        view.taxonomy = taxonomy_tree(levels) if levels else None
    found = Thumbnails(kinds=item_kinds(catalog.paths, catalog.widths))
    inline = np.zeros(len(catalog), dtype=bool)
    if thumbnails != "none":
        inline = _card_rows(views, len(catalog))
        if thumbnails == "inline":
            inline |= _spread(found.kinds, HOVER_INLINE)
        wanted = np.ones(len(catalog), dtype=bool) if thumbnails == "folder" else inline
        found = gather_thumbnails(workspace, catalog, found.kinds, wanted, size=thumb, reporter=reporter)
    inline_keys = [catalog.keys[i] for i in np.flatnonzero(inline) if catalog.keys[i] in found.data]
    slots, packs = None, None
    if thumbnails == "folder":
        first = np.full(len(catalog), np.iinfo(np.int64).max)
        first[views[0].rows] = views[0].ids  # a cluster of the first clustering shown fills few packs
        have = sorted((i for i, k in enumerate(catalog.keys) if k in found.data), key=lambda i: (first[i], i))
        slots = np.full(len(catalog), -1, dtype=np.int64)
        slots[have] = np.arange(len(have))
        ordered = [found.data[catalog.keys[i]] for i in have]
        packs = [ordered[i:i + PACK] for i in range(0, len(ordered), PACK)]
    label_maps = [s["params"].get("label_map") if s["params"].get("prediction_space") == "group" else None
                  for s in stored]
    title = title or f"{workspace.path.name}: {', '.join(v.name for v in views)}"
    payload = build_payload(title=title, catalog=catalog, views=views, label_maps=label_maps, layout=placed,
                            texts=texts, thumbs=found, inline=inline_keys, slots=slots, mode=thumbnails, size=thumb,
                            folder=folder_for(target).name)
    subtitle = (f"{len(catalog):,} items · {len(views)} clustering{'s' if len(views) != 1 else ''} · "
                f"workspace {workspace.path} · clipclust {__version__}")
    html = render_page(payload, [found.data[k] for k in inline_keys], title=title, subtitle=subtitle,
                       version=__version__)
    size = write_report(target, html, packs)
    if found.missing:
        reporter.warn(f"{len(found.missing)} image file(s) are missing or unreadable (moved or deleted since "
                      f"embedding?); the report shows placeholders, e.g. {found.missing[0]}")
    return ReportSummary(
        path=str(out), bytes=size, clusterings=[v.name for v in views], n_items=len(catalog),
        n_cards=sum(len(v.cards) for v in views), thumbnails=thumbnails, n_thumbnails=len(inline_keys),
        thumbnails_made=found.made, thumbnails_reused=found.reused, missing=found.missing,
        n_text_items=int((found.kinds == TEXT).sum()), folder=str(folder_for(Path(out))) if packs is not None else None,
        map=None if placed is None else f"{placed.kind} of '{placed.set_name}'",
        map_cached=bool(placed and placed.cached), seconds=time.perf_counter() - started)
