"""`clipclust visualize`: parse options, call clipclust.commands.visualize.visualize, print where the PNG went."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from clipclust.commands.visualize import KINDS, visualize
from clipclust.cli import common

HELP = """Draw a stored clustering as a PNG (matplotlib Agg; no display needed).

--kind tsne|pca: two scatter panels, coloured by ground-truth label and by cluster (coordinates are kept
in the workspace); --kind confusion: true classes against clusters ordered by their Hungarian match;
--kind montage: sample images of each cluster (those nearest its centroid) under its name or id.

Example:  clipclust visualize kmeans-image --kind montage -o kmeans.png
"""


def register(app: typer.Typer) -> None:
    app.command("visualize", help=HELP)(visualize_command)


def visualize_command(
    name: Optional[str] = typer.Argument(None, metavar="NAME", help="Clustering to draw (default: the only one)."),
    kind: str = typer.Option("tsne", "--kind", help=f"One of: {', '.join(KINDS)}."),
    clustering: Optional[str] = typer.Option(None, "--clustering", "-c", metavar="NAME", help=common.CLUSTERING_HELP),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="PNG file to write (default: NAME-KIND.png)."),
    seed: int = typer.Option(0, "--seed", help="t-SNE / PCA seed."),
    perplexity: float = typer.Option(30.0, "--perplexity", help="t-SNE perplexity (clamped below N / 3)."),
    per_cluster: int = typer.Option(8, "--per-cluster", help="montage: images per cluster."),
    thumb: int = typer.Option(64, "--thumb", help="montage: thumbnail size in pixels (8 to 1024)."),
    title: str = typer.Option("", "--title", help="Figure title (default: clustering name and set)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    with common.errors():
        summary = visualize(
            common.workspace(), common.one_clustering(name, clustering), kind, output, seed=seed,
            perplexity=perplexity, per_cluster=per_cluster, thumb=thumb, title=title, reporter=common.RichReporter(quiet=common.STATE.quiet),
        )
    if common.want_json(json_out):
        common.emit_json(summary.to_dict())
        return
    note = ""
    if summary.kind in ("tsne", "pca"):
        note = ", coordinates reused from the workspace" if summary.cached else ", coordinates stored in the workspace"
    if summary.skipped:
        note += f", {len(summary.skipped)} unreadable images left out"
    typer.echo(f"{summary.path}: {summary.kind} of '{summary.clustering}' ({summary.n_points} items), "
               f"{summary.width}x{summary.height} px{note}")
