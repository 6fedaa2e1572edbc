"""`clipclust cluster`: the common options by hand, each method's own options from the method registry.

The command parses the options every method shares, takes the method options that were given from the
flags :mod:`clipclust.cli.options` generated, calls :func:`clipclust.commands.cluster.run_clustering` and
prints the summary: one common line, then the lines the method's ``report`` hook formats.
"""

from __future__ import annotations

import shlex
from typing import Optional

import typer
from rich.table import Table

from clipclust.commands.cluster import ClusteringSummary, run_clustering
from clipclust.methods import METHODS, REFINEMENTS, ClusterRequest, get_method, load_builtin_methods
from clipclust.errors import InputError
from clipclust.cli import common
from clipclust.cli.options import Section, SectionedCommand, flag_spellings, given_options

HELP = """Cluster a stored set and keep the result under a name (re-running the same request reuses it).

--method picks the method; its own options are listed under its name below.  The classic methods
(kmeans, spectral, agglomerative, hdbscan) cluster any item-keyed set that 'clipclust info' lists
(--on image, 'fused-label:TEMPLATE', zeroshot, agnostic, ... by name, kind or id); -k auto picks K by
silhouette and prints the table.  ictc and esmc read a description set ('clipclust describe') or, for
esmc --mllm, the images; their -k auto (and text's) takes the values a criterion names ("animal or
vehicle": 2), else the raw labels' tree (ictc), the states' eigengap (esmc) or the silhouette (text).
Labels are never read while clustering, except by the fused workflow's majority vote.

\b
Examples:
  clipclust cluster --method spectral --on 'fused-label:This is digit <>' -k 20
  clipclust cluster -k 10 --refine head --epochs 200 --lr 1e-4
  clipclust cluster --method ictc --criterion mood -k 4 --llm qwen.gguf --names hybrid
  clipclust cluster --method esmc --criterion object -k 10 --llm qwen.gguf --explain
"""


def register(app: typer.Typer) -> None:
    app.command("cluster", help=HELP, cls=SectionedCommand.of(sections))(cluster_command)


def sections() -> list[Section]:
    """The methods in registry order, then the refinements, each with its declared options."""
    load_builtin_methods()
    found = [Section(spec.name, spec.name, spec.summary, spec.options) for spec in METHODS.values()]
    found += [Section(spec.name, f"{spec.name} refinement", f"{spec.summary} (--refine {spec.name})", spec.options)
              for spec in REFINEMENTS.values()]
    return found


def _k_range(text: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split(":"))
    except ValueError:
        raise InputError(f"{text}: expected MIN:MAX, e.g. 2:10", option="k_range") from None
    return low, high


def cluster_command(
    ctx: typer.Context,
    method: str = typer.Option("kmeans", "--method", help="The method: kmeans, spectral, agglomerative, hdbscan, "
                               "fused, ictc, esmc, ... (its options are listed under its name)."),
    on: Optional[str] = typer.Option(None, "--on", help="Stored set to cluster (name, kind or id; default image, "
                                     "or fused-label for --method fused)."),
    k: Optional[str] = typer.Option(None, "-k", "--clusters", help="Number of clusters, or 'auto' (chosen from the data; see above)."),
    k_range: str = typer.Option("2:10", "--k-range", help="Candidates MIN:MAX for -k auto."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default 0; 42 for --method fused)."),
    name: Optional[str] = typer.Option(None, "--name", help="Name to store it under (default: method + set)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Pick the set of this model when several exist."),
    split: Optional[str] = typer.Option(None, "--split", help="Cluster only the items of this split."),
    refine: Optional[str] = typer.Option(None, "--refine", help="'head': the ESMC head on the k-means pseudo-labels "
                                         "(kmeans, esmc; its options are listed under 'head refinement')."),
    force: bool = typer.Option(False, "--force", help="Recompute even if the same clustering is stored."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    with common.errors({"k": "-k", **flag_spellings(ctx)}):
        # A method option is passed only when given (a flag left out is None), so a method's spec can refuse
        # the options of other methods and fill in its own defaults.
        request = ClusterRequest(method=method, on=on, k=k, seed=seed, name=name, model=model, split=split,
                                 refine=refine, k_range=_k_range(k_range), force=force, options=given_options(ctx))
        summary = run_clustering(common.workspace(), request, reporter=common.RichReporter(quiet=common.STATE.quiet))
    if common.want_json(json_out):
        common.emit_json(summary.to_dict())
        return
    print_summary(summary)
    if not common.STATE.quiet:  # the next step, on stderr with the other remarks: stdout stays the result
        name, page = shlex.quote(summary.name), shlex.quote(f"{summary.name}.html")
        common.stderr().print(f"see it: clipclust report {name} -o {page}", markup=False, highlight=False)


def print_summary(summary: ClusteringSummary) -> None:
    """The -k auto table, the common line, then what the method's report adds; a reused run's warnings again."""
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
    what = summary.method + (" + ESMC head" if summary.refine == "head" else "")
    line = (f"{summary.name}: {status} ({what} on '{summary.on}', {summary.n_items} items, seed {summary.seed}) "
            f"-> {summary.n_clusters} clusters, {size_text}")
    if summary.n_test is not None:
        line += f"; {summary.n_test} test items of '{summary.test_on}' classified"
    if not summary.reused:
        line += f" in {summary.seconds:.1f}s"
    else:
        line += "; pass --force to recompute"
    out.print(line, highlight=False, markup=False)
    report = get_method(summary.method).report
    for extra in report(summary) if report is not None else []:
        out.print(extra, highlight=False, markup=False)
    if summary.reused:  # a fresh run warned as it went
        for warning in summary.warnings:
            common.stderr().print(f"warning: {warning}", highlight=False, markup=False)
