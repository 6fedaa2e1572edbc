"""`clipclust report`: parse options, call clipclust.commands.report.report, print where the page went."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from clipclust.cli import common

HELP = """Write one self-contained HTML page that shows what the clusters are: open it in any browser, offline,
from disk or mailed.

For each clustering (all, or those named): a card per cluster with its name, size and criterion, the
members nearest its centre and those nearest another cluster, and an LLM method's raw labels; a map of
the items (t-SNE up to 10,000 items, else PCA; kept in the workspace) coloured by cluster, with the
thumbnail and path on hover, zoom and pan; ACC/NMI/ARI and a cluster x label table where items have
labels; a switcher between the clusterings, a search box, and CSV downloads of a cluster or a search.

--thumbnails inline puts the cards' thumbnails and up to 2,000 more for the map in the page; folder also
writes every item's beside it (NAME_files/); none shows paths only.  Thumbnails are kept in the workspace,
so the next report decodes no image.  Missing image files get a placeholder and are counted.

Example:  clipclust report -o report.html
"""


def register(app: typer.Typer) -> None:
    app.command("report", help=HELP)(report_command)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def report_command(
    names: Optional[List[str]] = typer.Argument(None, metavar="NAME", help="Clusterings to show (default: all)."),
    clusterings: List[str] = typer.Option([], "--clustering", "-c", metavar="NAME", help="A clustering to show, as "
                                          "NAME (repeatable)."),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="The HTML file to write."),
    thumbnails: str = typer.Option("inline", "--thumbnails", help="inline, folder (every item's, beside the page) "
                                   "or none."),
    layout: str = typer.Option("auto", "--layout", help="The map: auto (t-SNE up to 10,000 items, else PCA), tsne "
                               "or pca."),
    map_on: Optional[str] = typer.Option(None, "--map-on", metavar="SET", help="The vector set the map is made from "
                                         "(default: the image set holding the most items)."),
    per_cluster: int = typer.Option(6, "--per-cluster", help="Typical members shown per cluster."),
    borderline: int = typer.Option(4, "--borderline", help="Borderline members shown per cluster."),
    thumb: int = typer.Option(64, "--thumb", help="Thumbnail size in pixels (kept per size)."),
    seed: int = typer.Option(0, "--seed", help="t-SNE / PCA seed."),
    perplexity: float = typer.Option(30.0, "--perplexity", help="t-SNE perplexity."),
    title: str = typer.Option("", "--title", help="The page's title (default: workspace and clusterings)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    with common.errors():
        from clipclust.commands.report import report  # numpy, PIL, jinja2: loaded only when reporting

        summary = report(
            common.workspace(), common.clustering_names(names, clusterings), output, thumbnails=thumbnails,
            layout=layout, map_on=map_on, per_cluster=per_cluster, borderline=borderline, thumb=thumb, seed=seed,
            perplexity=perplexity, title=title, reporter=common.RichReporter(quiet=common.STATE.quiet))
    if common.want_json(json_out):
        common.emit_json(summary.to_dict())
        return
    kept = f"{summary.thumbnails_made} made, {summary.thumbnails_reused} reused from the workspace"
    thumbs = "no thumbnails" if summary.thumbnails == "none" else f"{summary.n_thumbnails} thumbnails inline ({kept})"
    if summary.folder:
        thumbs += f", every item's in {summary.folder}"
    where = f"map {summary.map}" if summary.map else "no map (no stored vectors)"
    missing = f"; {len(summary.missing)} image files missing (placeholders)" if summary.missing else ""
    count = len(summary.clusterings)
    typer.echo(f"{summary.path}: {count} clustering{'s' if count != 1 else ''} of {summary.n_items:,} items, "
               f"{summary.n_cards} cards, {_size(summary.bytes)}; {thumbs}; {where}{missing}")
