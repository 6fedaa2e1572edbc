"""Writing the report: the data as one gzip+base64 JSON, the page from its jinja2 template, the packs.

The page is one file: the template, its style and script (``assets/``) and the data are inlined, so it
opens from disk, offline, and can be mailed.  The data is a JSON object (below), gzipped and base64'd; the
page inflates it with the browser's ``DecompressionStream``.  Thumbnails sit beside it as a JSON array of
base64 WebP strings (compressing them again would gain nothing).  With ``folder`` thumbnails, every
item's thumbnail also goes into packs of 256 beside the page (``NAME_files/thumbs-0000.js``, each a script
that hands its list to the page): a ``<script>`` loads from a ``file://`` page where ``fetch`` may not,
and a pack needs no re-encoding, so a second report decodes nothing.

Files are written under temporary names and renamed into place: a failure leaves no half-written report.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clipclust.commands.report.catalog import Catalog, TextSet
from clipclust.commands.report.clusters import ClusteringView
from clipclust.commands.report.layout import MapLayout
from clipclust.commands.report.thumbnails import Thumbnails
from clipclust.errors import InputError

__all__ = ["PACK", "build_payload", "folder_for", "render_page", "writable_target", "write_report"]

PACK = 256  # thumbnails per pack file
QUANT = 65535  # map coordinates are sent as integers 0..QUANT (-1: not on the map)


def folder_for(out: Path) -> Path:
    """The folder of thumbnail packs beside a report (``report.html`` -> ``report_files``)."""
    return out.with_name(f"{out.stem}_files")


def _quantised(xy: np.ndarray) -> tuple[list[int], list[int]]:
    placed = np.isfinite(xy[:, 0])
    out = np.full(xy.shape, -1, dtype=np.int64)
    if placed.any():
        lo, hi = xy[placed].min(axis=0), xy[placed].max(axis=0)
        span = float(max(hi - lo)) or 1.0
        centred = (xy[placed] - (lo + hi) / 2) / span + 0.5  # one scale for both axes: shapes keep their aspect
        out[placed] = np.clip(np.round(centred * QUANT), 0, QUANT).astype(np.int64)
    return out[:, 0].tolist(), out[:, 1].tolist()


def _clustering(view: ClusteringView, texts: Sequence[TextSet], label_map: dict[str, str] | None) -> dict[str, Any]:
    rows = view.rows.tolist()
    return {
        "name": view.name, "method": view.method, "on": view.on, "criterion": view.criterion, "created": view.created,
        "ranked_by": view.ranked_by, "rows": None if rows == list(range(len(rows))) else rows,
        "ids": view.ids.tolist(), "cards": [card.to_dict() for card in view.cards], "scores": view.scores,
        "table": view.table, "text": next((j for j, t in enumerate(texts) if t.id == view.text_set), -1),
        "label_map": label_map, "taxonomy": view.taxonomy,
    }


def build_payload(*, title: str, catalog: Catalog, views: Sequence[ClusteringView], label_maps: Sequence[Any],
                  layout: MapLayout | None, texts: Sequence[TextSet], thumbs: Thumbnails, inline: Sequence[str],
                  slots: np.ndarray | None, mode: str, size: int, folder: str) -> dict[str, Any]:
    """The JSON object the page reads; ``inline`` are the keys whose thumbnails are inlined, in order."""
    label_names = sorted({lab for lab in catalog.labels if lab})
    label_index = {lab: j for j, lab in enumerate(label_names)}
    inline_index = {key: j for j, key in enumerate(inline)}
    items: dict[str, Any] = {
        "keys": catalog.keys, "paths": catalog.paths,
        "labels": [label_index.get(lab, -1) for lab in catalog.labels],
        "kinds": thumbs.kinds.tolist(), "thumb": [inline_index.get(k, -1) for k in catalog.keys],
        "slot": slots.tolist() if slots is not None else None,
    }
    map_data = None
    if layout is not None:
        x, y = _quantised(layout.xy)
        map_data = {"kind": layout.kind, "set": layout.set_name, "x": x, "y": y}
    return {
        "title": title, "items": items, "label_names": label_names, "map": map_data,
        "texts": [{"name": t.name, "texts": t.texts} for t in texts],
        "clusterings": [_clustering(v, texts, m) for v, m in zip(views, label_maps)],
        "thumbs": {"mode": mode, "format": "webp", "size": size, "folder": folder, "pack": PACK},
    }


def encode_payload(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")


def render_page(payload: dict[str, Any], thumbnails: Sequence[str], *, title: str, subtitle: str, version: str) -> str:
    """The HTML page: the template with its style, script and data inlined."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("clipclust.commands.report", "assets"),
                             autoescape=True, keep_trailing_newline=True)
    assets = Path(__file__).with_name("assets")
    return env.get_template("report.html.j2").render(
        title=title, subtitle=subtitle, version=version, data=encode_payload(payload),
        thumbs=json.dumps(list(thumbnails), separators=(",", ":")),
        css=(assets / "report.css").read_text(encoding="utf-8"), js=(assets / "report.js").read_text(encoding="utf-8"))


def writable_target(out: Path) -> Path:
    """``out`` made absolute; an input error now, before any work, when it cannot be written.

    Missing folders are created only when the page is written, so a report that fails leaves none behind.
    """
    out = Path(out).expanduser().absolute()
    if out.is_dir():
        raise InputError(f"{out} is a folder; name the HTML file to write, e.g. {out / 'report.html'}", option="output")
    existing = out.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot write {out}: {existing} is not a folder", option="output")
    if not os.access(existing, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise InputError(f"cannot write {out}: permission denied", option="output")
    return out


def _write_packs(folder: Path, packs: Sequence[Sequence[str]]) -> Path:
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    staging.chmod(0o755)
    for n, pack in enumerate(packs):
        text = f"clipclustPack({n},{json.dumps(list(pack), separators=(',', ':'))});\n"
        (staging / f"thumbs-{n:04d}.js").write_text(text, encoding="ascii")
    return staging


def write_report(out: Path, html: str, packs: Sequence[Sequence[str]] | None) -> int:
    """Write the page (and, given ``packs``, its folder) atomically; returns the page's size in bytes."""
    folder = folder_for(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}", option="output") from None
    handle, temp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    staging: Path | None = None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as fh:
            fh.write(html)
        os.chmod(temp, 0o644)
        if packs is not None:
            staging = _write_packs(folder, packs)
            if folder.exists():
                old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".old"))
                folder.rename(old / folder.name)
                shutil.rmtree(old, ignore_errors=True)
            staging.rename(folder)
            staging = None
        os.replace(temp, out)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise InputError(f"cannot write {out}: {exc.strerror or exc}", option="output") from None
    return out.stat().st_size
