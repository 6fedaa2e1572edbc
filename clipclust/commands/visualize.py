"""Pictures of stored clusterings: `clipclust visualize` as a library call.

t-SNE and PCA coordinates are stored in the workspace as an item-keyed set of kind ``tsne`` / ``pca``
whose id derives from the source set, the exact list of projected items, the seed and the perplexity: a
t-SNE layout depends on every point together, so coordinates are reused only for the same points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipclust.store import SetSpec, Workspace
from clipclust.commands.selection import choose_clustering
from clipclust.methods.inputs import keys_digest, label_space, rows_for_keys
from clipclust.core.images import UnreadableImage, read_image
from clipclust.errors import InputError, opt, step
from clipclust.core.progress import Reporter, SilentReporter

__all__ = ["KINDS", "VisualSummary", "projection", "visualize"]

KINDS = ("tsne", "pca", "confusion", "montage")
UNLABELLED = "(no label)"
MAX_THUMB = 1024  # px: a thumbnail wider than a screen is not one, and each costs thumb^2 x 3 bytes
# px of a whole montage sheet: 50M pixels is ~150 MB in memory while it is drawn and a PNG any viewer opens
MAX_MONTAGE_PIXELS = 50_000_000


@dataclass
class VisualSummary:
    """What `visualize` wrote; the CLI prints it, tests assert on it."""

    path: str
    kind: str
    clustering: str
    width: int
    height: int
    n_points: int
    cached: bool = False
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "clustering": self.clustering, "width": self.width,
                "height": self.height, "n_points": self.n_points, "cached_coordinates": self.cached,
                "skipped_images": self.skipped}


def projection(workspace: Workspace, source: dict[str, Any], keys: list[str], vectors: np.ndarray, kind: str,
               seed: int = 0, perplexity: float = 30.0) -> tuple[np.ndarray, bool]:
    """2-D coordinates of ``vectors`` (rows of ``keys``), read from the workspace when stored; else computed
    and stored.  Returns ``(coords, was_cached)``."""
    from clipclust.core.plots import project_2d

    digest = keys_digest(keys)
    parts: list[Any] = ["projection", kind, source["id"], digest, seed]
    if kind == "tsne":
        parts.append(float(perplexity))
    spec = SetSpec.of(parts, name=f"{kind}:{source['name']}", kind=kind, model=source.get("model", ""),
                      prompt=source.get("prompt", ""),
                      provenance={"source_set": source["id"], "source_name": source["name"], "seed": seed,
                                  "perplexity": float(perplexity) if kind == "tsne" else None, "n_items": len(keys),
                                  "keys_sha256": digest})
    if set(keys) <= workspace.set_keys(spec.id):
        stored_keys, coords = workspace.read_set(spec.id)
        row_of = {k: i for i, k in enumerate(stored_keys)}
        return coords[[row_of[k] for k in keys]].astype(np.float64), True
    coords = project_2d(vectors, kind, seed=seed, perplexity=perplexity)  # type: ignore[arg-type]
    workspace.write_batch(rows=[(spec, keys, coords)])
    return coords, False


def _clustered(workspace: Workspace, name: str) -> tuple[dict[str, Any], list[str], np.ndarray, np.ndarray, dict]:
    stored = workspace.read_clustering(name)
    keys = list(stored["keys"])
    truth_of = label_space(stored["params"])
    items = workspace.items()
    labels = {s: truth_of(lab) for s, lab in zip(items.sha256, items.label) if lab}
    truth = np.array([labels.get(k, "") for k in keys], dtype=object)
    return stored, keys, np.asarray(stored["ids"], np.int64), truth, {"path": dict(zip(items.sha256, items.path)),
                                                                        "width": dict(zip(items.sha256, items.width))}


def _vectors(workspace: Workspace, stored: dict[str, Any], keys: list[str]) -> np.ndarray | None:
    source = stored["params"].get("sets", {}).get("input")
    return rows_for_keys(workspace, source["id"], keys) if source else None


def _cluster_title(cluster_id: int, names: list[str] | None, size: int) -> str:
    if cluster_id < 0:
        return f"noise ({size})"
    name = names[cluster_id] if names is not None and cluster_id < len(names) and names[cluster_id] else ""
    return f"{cluster_id}: {name} ({size})" if name else f"cluster {cluster_id} ({size})"


def _montage_images(stored: dict[str, Any], keys: list[str], ids: np.ndarray, vectors: np.ndarray | None,
                    paths: dict[str, str], per_cluster: int, thumb: int,
                    reporter: Reporter) -> tuple[dict[str, list], list[str]]:
    """Up to ``per_cluster`` images per cluster, the members nearest its centroid first (the typical ones).

    Members whose file cannot be read (or is over the decoding pixel limit) are replaced by the next
    ones, and listed in the returned paths.  JPEGs are decoded at the reduced scale a thumbnail needs.
    """
    centroids = stored.get("centroids")
    names = stored.get("names")
    rows: dict[str, list] = {}
    skipped: list[str] = []
    reasons: list[str] = []
    order = sorted(np.unique(ids), key=lambda c: (c < 0, c))
    for cluster_id in order:
        members = np.flatnonzero(ids == cluster_id)
        if vectors is not None and centroids is not None and 0 <= cluster_id < len(centroids) \
                and np.all(np.isfinite(centroids[cluster_id])):
            distance = ((vectors[members] - centroids[cluster_id]) ** 2).sum(axis=1)
            members = members[np.argsort(distance, kind="stable")]
        else:  # no centroid (noise): spread the picks over the members rather than take the first stored ones
            spread = np.unique(np.linspace(0, members.size - 1, min(members.size, per_cluster)).round().astype(int))
            members = np.concatenate([members[spread], np.delete(members, spread)])
        images = []
        for row in members:
            if len(images) >= per_cluster:
                break
            path = paths.get(keys[row], "")
            try:
                images.append(read_image(path, min_size=thumb))
            except OSError as exc:
                skipped.append(path or keys[row])
                reasons.append(f"{exc.strerror or exc} (moved or deleted since embedding?)")
            except UnreadableImage as exc:
                skipped.append(path or keys[row])
                reasons.append(str(exc))
        rows[_cluster_title(int(cluster_id), names, int(np.sum(ids == cluster_id)))] = images
    if skipped:
        reporter.warn(f"{len(skipped)} image(s) were left out of the montage, e.g. {skipped[0]}: {reasons[0]}")
    return rows, skipped


def _check_montage_size(n_clusters: int, per_cluster: int, thumb: int) -> None:
    """Refuse a montage sheet over MAX_MONTAGE_PIXELS before any image is read."""
    from clipclust.core.plots import montage_size

    width, height = montage_size(n_clusters, per_cluster, thumb)
    if width * height > MAX_MONTAGE_PIXELS:
        raise InputError(f"a montage of {n_clusters} clusters, {per_cluster} images of {thumb} px each would be "
                         f"{width}x{height} pixels, over the limit of {MAX_MONTAGE_PIXELS // 1_000_000}M: use a "
                         f"smaller {opt('thumb')} or {opt('per_cluster')}")


def visualize(workspace: Workspace, clustering: str | None = None, kind: str = "tsne", out: str | Path | None = None,
              *, seed: int = 0, perplexity: float = 30.0, per_cluster: int = 8, thumb: int = 64, title: str = "",
              reporter: Reporter | None = None) -> VisualSummary:
    """Write one PNG of a stored clustering (default file: NAME-KIND.png) and say what was drawn.

    ``tsne``/``pca``: two panels, ground truth and clusters (one panel without labels).  ``confusion``: true
    classes against clusters ordered by their Hungarian match (needs labels).  ``montage``: sample images
    per cluster under its name or id, read from the paths stored for the items (missing files are skipped).
    """
    from PIL import Image

    from clipclust.core import plots
    reporter = reporter or SilentReporter()
    if kind not in KINDS:
        raise InputError(f"{opt('kind')} {kind}: expected one of {', '.join(KINDS)}")
    if not 0 < perplexity < float("inf"):  # nan and inf too
        raise InputError(f"{opt('perplexity')} {perplexity}: expected a number above 0, such as 30")
    if per_cluster < 1 or not 8 <= thumb <= MAX_THUMB:
        raise InputError(f"{opt('per_cluster')} must be at least 1 and {opt('thumb')} from 8 to {MAX_THUMB} pixels")
    name = choose_clustering(workspace, clustering)
    stored, keys, ids, truth, context = _clustered(workspace, name)
    if kind == "montage":
        _check_montage_size(len(np.unique(ids)), per_cluster, thumb)
    path = Path(out) if out is not None else Path(f"{name}-{kind}.png")  # missing folders are created
    summary = VisualSummary(str(path), kind, name, 0, 0, len(keys))
    labelled = truth != ""

    if kind in ("tsne", "pca"):
        vectors = _vectors(workspace, stored, keys)
        if vectors is None:
            raise InputError(f"the vectors clustering '{name}' was made from are no longer stored; re-embed them")
        if len(keys) < 2:
            raise InputError(f"clustering '{name}' has {len(keys)} item(s); a scatter plot needs at least 2")
        source = stored["params"]["sets"]["input"]
        with reporter.task(f"{kind} of {len(keys)} points", None):
            coords, summary.cached = projection(workspace, source, keys, vectors, kind, seed, perplexity)
        shown_labels = None if not labelled.any() else np.where(labelled, truth, UNLABELLED).astype(str)
        plots.scatter_2d(coords, shown_labels, ids, path, title=title or f"{name} ({kind}, {source['name']})")
    elif kind == "confusion":
        if not labelled.any():
            raise InputError(f"no item of clustering '{name}' has a label; a confusion plot compares clusters with "
                             f"labels: embed the images from class folders or with {opt('labels')} CSV")
        plots.confusion_plot(truth[labelled].astype(str), ids[labelled], path, title=title or f"{name}: true class vs cluster")
        summary.n_points = int(labelled.sum())
    else:
        if not any(context["width"].get(k, 0) > 0 or Path(context["path"].get(k) or "").is_file() for k in keys):
            raise InputError(f"no item of clustering '{name}' has an image (text-only descriptions?); a montage "
                             f"shows images: list the members with {step('export', name)} instead")
        vectors = _vectors(workspace, stored, keys)
        rows, summary.skipped = _montage_images(stored, keys, ids, vectors, context["path"], per_cluster, thumb,
                                                reporter)
        plots.montage(rows, path, per_cluster=per_cluster, thumb=thumb)
    with Image.open(path) as image:
        summary.width, summary.height = image.size
    return summary
