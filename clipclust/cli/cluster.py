"""`clipclust cluster`: parse options, call clipclust.clusterings.run_clustering, print the summary."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from ..clusterings import METHODS, ClusterRequest, ClusteringSummary, run_clustering
from ..errors import InputError
from . import common

HELP = """Cluster a stored set and keep the result under a name (re-running the same request reuses it).

--method kmeans|spectral|agglomerative|hdbscan clusters any item-keyed set that 'clipclust info' lists
(--on image, 'fused-label:TEMPLATE', zeroshot, agnostic, ... by name, kind or id); -k auto picks K by
silhouette and prints the table.  --refine head trains the ESMC head on k-means pseudo-labels.
--method fused runs seed 000's workflow: spectral clusters of the training split's fused vectors,
majority-vote labels, test images classified by the nearest filtered centroid (--on image: the image-only
baseline).  Labels are never read while clustering, except by the fused workflow's majority vote.

Example:  clipclust cluster --method spectral --on 'fused-label:This is digit <>' -k 20
"""


def register(app: typer.Typer) -> None:
    app.command("cluster", help=HELP)(cluster_command)


def _k_range(text: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split(":"))
    except ValueError:
        raise InputError(f"--k-range {text}: expected MIN:MAX, e.g. 2:10") from None
    return low, high


def cluster_command(
    method: str = typer.Option("kmeans", "--method", help=f"One of: {', '.join(METHODS)}."),
    on: Optional[str] = typer.Option(None, "--on", help="Stored set to cluster (name, kind or id; default image, "
                                     "or fused-label for --method fused)."),
    k: Optional[str] = typer.Option(None, "-k", "--clusters", help="Number of clusters, or 'auto' (silhouette)."),
    k_range: str = typer.Option("2:10", "--k-range", help="Candidates MIN:MAX for -k auto."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default 0; 42 for --method fused)."),
    name: Optional[str] = typer.Option(None, "--name", help="Name to store it under (default: method + set)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Pick the set of this model when several exist."),
    split: Optional[str] = typer.Option(None, "--split", help="Cluster only the items of this split."),
    refine: Optional[str] = typer.Option(None, "--refine", help="'head': ESMC head on k-means pseudo-labels."),
    ratio: float = typer.Option(0.3, "--ratio", help="--refine head: fraction nearest each centroid used as pseudo-labels."),
    epochs: int = typer.Option(100, "--epochs", min=1, help="--refine head: training epochs."),
    device: str = typer.Option("auto", "--device", help="--refine head: auto, cpu or cuda[:N]."),
    n_neighbors: Optional[int] = typer.Option(None, "--n-neighbors", min=1, help="spectral / fused: neighbours of the affinity graph (10)."),
    linkage: Optional[str] = typer.Option(None, "--linkage", help="agglomerative: ward, average, complete or single."),
    min_cluster_size: Optional[int] = typer.Option(None, "--min-cluster-size", help="hdbscan: smallest cluster (5)."),
    train_split: str = typer.Option("train", "--train-split", help="--method fused: split clustered with labels."),
    test_split: str = typer.Option("test", "--test-split", help="--method fused: split classified."),
    force: bool = typer.Option(False, "--force", help="Recompute even if the same clustering is stored."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    with common.errors():
        request = ClusterRequest(
            method=method, on=on, k=k, seed=seed, name=name, model=model, split=split, refine=refine, ratio=ratio,
            epochs=epochs, device=device, k_range=_k_range(k_range), force=force, train_split=train_split,
            test_split=test_split,
            options={"n_neighbors": n_neighbors, "linkage": linkage, "min_cluster_size": min_cluster_size},
        )
        summary = run_clustering(common.workspace(), request, reporter=common.RichReporter(quiet=common.STATE.quiet))
    if common.want_json(json_out):
        common.emit_json(summary.as_dict())
        return
    print_summary(summary)


def print_summary(summary: ClusteringSummary) -> None:
    out = common.stdout()
    if summary.k_table:
        table = Table("k", "silhouette", title="-k auto: silhouette of each candidate (euclidean)", title_justify="left")
        for row in summary.k_table:
            score = "undefined" if row["silhouette"] is None else f"{row['silhouette']:.4f}"
            table.add_row(str(row["k"]), score + ("  <- chosen" if row["k"] == summary.k else ""))
        out.print(table)
    sizes = sorted(summary.sizes.items(), key=lambda kv: int(kv[0]))
    real = [count for cid, count in sizes if int(cid) >= 0]
    size_text = f"sizes {min(real)}-{max(real)}" if real else "no clusters"
    if summary.n_noise:
        size_text += f", {summary.n_noise} noise"
    status = "reused" if summary.reused else ("replaced" if summary.replaced else "stored")
    what = summary.method + (" + ESMC head" if summary.params.get("refine") == "head" else "")
    line = (f"{summary.name}: {status} ({what} on '{summary.on}', {summary.n_items} items, seed {summary.seed}) "
            f"-> {summary.n_clusters} clusters, {size_text}")
    if summary.n_test is not None:
        line += f"; {summary.n_test} test items of '{summary.test_on}' classified"
    if not summary.reused:
        line += f" in {summary.seconds:.1f}s"
    else:
        line += "; pass --force to recompute"
    out.print(line, highlight=False, markup=False)
