"""Pictures of clusterings: 2-D scatter plots, confusion matrices and image montages, as PNG files.

Plots use matplotlib's Agg backend through ``Figure`` objects (never ``pyplot``), so nothing leaks
between calls and no display is needed. Every function writes an image of a documented, exact pixel
size (``figsize * dpi`` for figures; ``bbox_inches="tight"`` is never used because it changes it).
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import matplotlib

# Figures here are rendered by an explicit Agg canvas, so no display is ever needed. Selecting Agg
# globally keeps a headless run from probing for a GUI backend; it is skipped when pyplot is already
# in use (a notebook), where switching would silently stop the user's own inline plots.
if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont, ImageOps

from clipclust.core.metrics import NOISE_ID, cluster_accuracy, contingency_table
from clipclust.core.outputs import output_path

__all__ = [
    "CONFUSION_FIGSIZE",
    "SCATTER_FIGSIZE",
    "confusion_plot",
    "montage",
    "montage_size",
    "project_2d",
    "scatter_2d",
]

DPI = 100
SCATTER_FIGSIZE = (14.0, 6.0)  # inches: 1400 x 600 px at 100 dpi (two panels); one panel: (7, 6)
CONFUSION_FIGSIZE = (9.0, 8.0)  # inches: 900 x 800 px at 100 dpi
LEGEND_MAX_CLASSES = 20  # above this a legend is unreadable; the title gives the count instead
COUNTS_MAX_CELLS = 30  # annotate confusion cells with counts up to 30 x 30
MARKERS = ("o", "s", "^", "D", "v", "P", "*")  # 20 tab20 colours x 7 shapes = 140 distinct styles


def _style(index: int) -> tuple[tuple[float, float, float, float], str]:
    """Colour and marker of the index-th group: tab20 colours first, then the next marker shape."""
    colour = matplotlib.colormaps["tab20"](index % 20)
    return colour, MARKERS[(index // 20) % len(MARKERS)]


def _save(figure: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(figure)
    with output_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=figure.dpi)
    return Path(path)


def project_2d(
    X: np.ndarray,
    kind: Literal["tsne", "pca"] = "tsne",
    seed: int = 0,
    perplexity: float = 30.0,
) -> np.ndarray:
    """Project (N, D) vectors to (N, 2) for plotting.

    ``tsne`` (sklearn TSNE, init="pca", seeded) shows local neighbourhoods, which is what cluster
    structure looks like; its perplexity is clamped below N (to (N - 1) / 3, at least 1) so that small
    sets work. ``pca`` is linear and fast, for large sets or a global view.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2:
        raise ValueError(f"project_2d needs an (N, D) array with N >= 2; got shape {X.shape}.")
    if kind == "pca":
        from sklearn.decomposition import PCA

        n_components = min(2, X.shape[0], X.shape[1])
        coords = PCA(n_components=n_components, random_state=seed).fit_transform(X)
        if n_components < 2:  # a single feature or two points: pad so callers always get (N, 2)
            coords = np.hstack([coords, np.zeros((X.shape[0], 2 - n_components))])
        return coords
    if kind == "tsne":
        from sklearn.manifold import TSNE

        clamped = float(min(perplexity, max(1.0, (X.shape[0] - 1) / 3.0)))
        tsne = TSNE(n_components=2, init="pca", perplexity=clamped, random_state=seed)
        return tsne.fit_transform(X)
    raise ValueError(f"kind must be 'tsne' or 'pca', not {kind!r}.")


def _draw_groups(ax, coords: np.ndarray, groups: np.ndarray, order: Sequence[Hashable], styles: dict) -> None:
    marker_size = 14 if coords.shape[0] <= 2000 else 8 if coords.shape[0] <= 10000 else 3
    for group in order:
        mask = groups == group
        if not mask.any():
            continue
        colour, marker = styles[group]
        ax.scatter(
            coords[mask, 0], coords[mask, 1], s=marker_size, c=[colour], marker=marker,
            linewidths=0, label=str(group),
        )
    if len(order) <= LEGEND_MAX_CLASSES:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, markerscale=1.5, frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])


def scatter_2d(
    coords: np.ndarray,
    labels: Sequence[Hashable] | np.ndarray | None,
    clusters: Sequence[Hashable] | np.ndarray,
    path: str | Path,
    title: str = "",
) -> Path:
    """Two scatter panels of 2-D points: coloured by ground truth (left) and by cluster (right).

    Writes a 1400 x 600 px PNG (``SCATTER_FIGSIZE`` at 100 dpi); without labels only the cluster panel
    is drawn, 700 x 600 px. Up to 140 groups get distinct styles (tab20 colours x marker shapes); a
    legend is drawn only up to 20 groups. Each cluster is drawn in the style of the class it is
    matched to by the Hungarian matching (so agreeing panels look alike); unmatched clusters get
    further styles, and noise (-1) is light grey.
    """
    coords = np.asarray(coords, dtype=np.float64)
    clusters = np.asarray(clusters)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must be (N, 2) (use project_2d first); got shape {coords.shape}.")
    if clusters.shape != (coords.shape[0],):
        raise ValueError(f"Pass one cluster id per point: {clusters.shape} ids for {coords.shape[0]} points.")
    cluster_order = [c.item() if isinstance(c, np.generic) else c for c in np.unique(clusters)]
    cluster_styles: dict = {}
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != clusters.shape:
            raise ValueError(f"Pass one label per point: {labels.shape} labels for {coords.shape[0]} points.")
        class_order = [c.item() if isinstance(c, np.generic) else c for c in np.unique(labels)]
        class_styles = {c: _style(i) for i, c in enumerate(class_order)}
        mapping = cluster_accuracy(labels, clusters).mapping
        cluster_styles = {c: class_styles[mapping[c]] for c in cluster_order if c in mapping}
        next_style = len(class_order)
    else:
        next_style = 0
    for c in cluster_order:
        if c in cluster_styles:
            continue
        if clusters.dtype.kind in "iu" and c == NOISE_ID:
            cluster_styles[c] = ((0.8, 0.8, 0.8, 1.0), "x")
        else:
            cluster_styles[c] = _style(next_style)
            next_style += 1

    n_panels = 1 if labels is None else 2
    figure = Figure(figsize=(SCATTER_FIGSIZE[0] * n_panels / 2, SCATTER_FIGSIZE[1]), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, n_panels, squeeze=False)[0]
    if labels is not None:
        _draw_groups(axes[0], coords, labels, class_order, class_styles)
        axes[0].set_title(f"ground truth ({len(class_order)} classes)", fontsize=10)
    _draw_groups(axes[-1], coords, clusters, cluster_order, cluster_styles)
    n_noise = int(np.sum(clusters == NOISE_ID)) if clusters.dtype.kind in "iu" else 0
    n_real = len(cluster_order) - (1 if n_noise else 0)
    noise_note = f", {n_noise} noise points" if n_noise else ""
    axes[-1].set_title(f"clusters ({n_real}{noise_note})", fontsize=10)
    if title:
        figure.suptitle(title, fontsize=12)
    return _save(figure, path)


def confusion_plot(
    y_true: Sequence[Hashable] | np.ndarray,
    y_pred: Sequence[Hashable] | np.ndarray,
    path: str | Path,
    title: str = "",
) -> Path:
    """Heat map of true classes (rows) against clusters (columns), clusters ordered by their match.

    Columns are reordered by the Hungarian matching of :func:`clipclust.core.metrics.cluster_accuracy`, so
    a good clustering shows a bright diagonal; unmatched clusters follow on the right, and noise points
    (-1) are left out. Cells carry their counts when the table is at most 30 x 30. Writes a 900 x 800
    px PNG (``CONFUSION_FIGSIZE`` at 100 dpi).
    """
    table, cluster_ids, classes = contingency_table(y_true, y_pred)
    mapping = cluster_accuracy(y_true, y_pred).mapping
    class_position = {c.item() if isinstance(c, np.generic) else c: i for i, c in enumerate(classes)}
    python_ids = [c.item() if isinstance(c, np.generic) else c for c in cluster_ids]
    column_order = sorted(
        range(len(python_ids)),
        key=lambda j: (0, class_position[mapping[python_ids[j]]]) if python_ids[j] in mapping else (1, j),
    )
    matrix = table.T[:, column_order]  # rows: classes, columns: clusters

    figure = Figure(figsize=CONFUSION_FIGSIZE, dpi=DPI, layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(matrix, cmap="Blues", aspect="auto", interpolation="nearest")
    figure.colorbar(image, ax=ax, shrink=0.8, label="items")
    n_rows, n_cols = matrix.shape
    tick_size = 8 if max(n_rows, n_cols) <= 30 else 5
    if n_cols <= 60:
        ax.set_xticks(range(n_cols), [str(python_ids[j]) for j in column_order], fontsize=tick_size, rotation=90)
    if n_rows <= 60:
        ax.set_yticks(range(n_rows), [str(c) for c in class_position], fontsize=tick_size)
    ax.set_xlabel("cluster (ordered by matched class)")
    ax.set_ylabel("true class")
    if max(n_rows, n_cols) <= COUNTS_MAX_CELLS:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(n_rows):
            for j in range(n_cols):
                if matrix[i, j]:
                    ax.text(
                        j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] > threshold else "black",
                    )
    ax.set_title(title or "true class vs cluster", fontsize=11)
    return _save(figure, path)


MONTAGE_PAD = 4  # px between thumbnails and around the grid
MONTAGE_LABEL_HEIGHT = 16  # px of the name line above each cluster's row
MONTAGE_BACKGROUND = (255, 255, 255)


def montage_size(n_clusters: int, per_cluster: int = 8, thumb: int = 64) -> tuple[int, int]:
    """Pixel (width, height) of the PNG :func:`montage` writes for these arguments.

    width = pad + per_cluster * (thumb + pad); height = pad + n_clusters * (label + thumb + pad), with
    pad = 4 and label = 16.
    """
    width = MONTAGE_PAD + per_cluster * (thumb + MONTAGE_PAD)
    height = MONTAGE_PAD + n_clusters * (MONTAGE_LABEL_HEIGHT + thumb + MONTAGE_PAD)
    return width, height


def montage(
    images_by_cluster: Mapping[str, Sequence[Image.Image]],
    path: str | Path,
    per_cluster: int = 8,
    thumb: int = 64,
) -> Path:
    """A sheet with one row per cluster: its name, then up to ``per_cluster`` sample thumbnails.

    Looking at samples is how a person judges whether a cluster means something. Drawn with PIL (no
    figure), so the size is exact: see :func:`montage_size`. Thumbnails keep their aspect ratio,
    padded to ``thumb`` x ``thumb``; rows follow the mapping's order; extra images are ignored and
    missing ones leave blank cells. Names too long for the row are cut with "...".
    """
    if not images_by_cluster:
        raise ValueError("images_by_cluster is empty; pass at least one cluster name with its images.")
    if per_cluster < 1 or thumb < 8:
        raise ValueError("per_cluster must be >= 1 and thumb >= 8 pixels.")
    width, height = montage_size(len(images_by_cluster), per_cluster, thumb)
    sheet = Image.new("RGB", (width, height), MONTAGE_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    top = MONTAGE_PAD
    for name, images in images_by_cluster.items():
        label = _fit_text(draw, str(name), font, width - 2 * MONTAGE_PAD)
        draw.text((MONTAGE_PAD, top + 2), label, fill=(0, 0, 0), font=font)
        top += MONTAGE_LABEL_HEIGHT
        for column, image in enumerate(list(images)[:per_cluster]):
            tile = ImageOps.pad(image.convert("RGB"), (thumb, thumb), color=(235, 235, 235))
            sheet.paste(tile, (MONTAGE_PAD + column * (thumb + MONTAGE_PAD), top))
        top += thumb + MONTAGE_PAD
    with output_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return Path(path)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, max_width: int) -> str:
    if draw.textlength(text, font=font) <= max_width:
        return text
    while text and draw.textlength(text + "...", font=font) > max_width:
        text = text[:-1]
    return text + "..."
