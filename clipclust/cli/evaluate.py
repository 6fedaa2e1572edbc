"""`clipclust evaluate`: parse options, call clipclust.commands.evaluate.evaluate, print a table or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from clipclust.errors import InputError
from clipclust.cli import common

if TYPE_CHECKING:
    from clipclust.commands.evaluate import ProbeReport, ScoreReport

HELP = """Measure clusterings against the labels: ACC (Hungarian matching, also when K differs from the number
of classes), NMI, AMI, ARI, Rand index, purity, silhouette on the clustered vectors, cluster sizes, classes
left without a cluster, and classification accuracy where predictions exist (fused workflow).

Clusterings are named as arguments or with -c/--clustering.  Without a name every clustering is evaluated,
unless --zero-shot or --probe asks for something else (name clusterings to get both).  --zero-shot: each
stored zero-shot set's classification accuracy, and that of the class prototypes of every model made by
'clipclust finetune' whose images were embedded.  --probe
svm|logreg: the thesis' linear probe on --on SET (train/test from --split TRAIN,TEST or a stratified
hold-out; --temperature divides logits first; the mean logit entropy is reported).

A clustering stored with levels (--levels 2|3: NAME.level1, the coarsest, ... NAME) brings every level
of its taxonomy.  --label-map FILE (lines LABEL,COARSE, e.g. cat,animal, or a JSON object) adds ACC and
NMI against the mapped labels, so a coarse level (or any clustering) is also measured at the labels' own
coarser level; labels the file does not list stay as they are.

Example:  clipclust evaluate --json | jq '."kmeans-image".acc'
"""


def register(app: typer.Typer) -> None:
    app.command("evaluate", help=HELP)(evaluate_command)


def _split_pair(text: Optional[str]) -> tuple[str, str] | None:
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise InputError(f"--split {text}: expected TRAIN,TEST, e.g. train,test")
    return parts[0], parts[1]


def evaluate_command(
    names: Optional[List[str]] = typer.Argument(None, metavar="NAME", help="Clusterings to evaluate (default: "
                                                "all, or none with --zero-shot / --probe)."),
    clusterings: List[str] = typer.Option([], "--clustering", "-c", metavar="NAME", help="A clustering to evaluate, as NAME "
                                          "(repeatable)."),
    zero_shot: bool = typer.Option(False, "--zero-shot", help="Evaluate every stored zero-shot set (argmax of its similarities) and fine-tuned prototypes."),
    probe: Optional[str] = typer.Option(None, "--probe", help="Linear probe: svm or logreg."),
    on: str = typer.Option("image", "--on", help="--probe: the stored set to probe (name, kind or id)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Pick sets of this model when several exist."),
    split: Optional[str] = typer.Option(None, "--split", help="--probe: TRAIN,TEST split names (default: hold-out)."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="--probe: hold-out fraction without --split."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="--probe: divide the rows by this first."),
    scale: str = typer.Option("auto", "--scale", help="--probe: auto (standardise features, not logits), standard, none."),
    metric: str = typer.Option("euclidean", "--metric", help="Silhouette distance: euclidean or cosine."),
    seed: int = typer.Option(0, "--seed", help="Seed of the hold-out and of silhouette sampling above 5000 items."),
    label_map: Optional[Path] = typer.Option(None, "--label-map", metavar="FILE", help="Also score against "
                                             "coarser labels: LABEL,COARSE lines (or a JSON object)."),
    json_out: bool = typer.Option(False, "--json", help="Print the reports as JSON, keyed by name."),
) -> None:
    with common.errors():
        from clipclust.commands.evaluate import evaluate  # sklearn/scipy: loaded only when evaluating, not for --help
        from clipclust.commands.levels import read_label_map

        mapping = read_label_map(str(label_map)) if label_map is not None else None

        result = evaluate(
            common.workspace(), common.clustering_names(names, clusterings), zero_shot=zero_shot, probe=probe, on=on, model=model,
            split=_split_pair(split), test_fraction=test_fraction, temperature=temperature, scale=scale, seed=seed,
            metric=metric, label_map=mapping,  # type: ignore[arg-type]
            reporter=common.RichReporter(quiet=common.STATE.quiet),
        )
    if common.want_json(json_out):
        common.emit_json(result.to_dict())
        return
    print_reports(list(result.reports.values()))


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_table(out: Console, table: Table) -> None:
    """A table at its natural width when stdout is a file or pipe (nothing wraps it there)."""
    if not out.is_terminal:
        out.width = max(out.width, Measurement.get(out, out.options.update_width(10_000), table).maximum)
    out.print(table)


def print_reports(reports: Sequence["ScoreReport | ProbeReport"]) -> None:
    out = common.stdout()
    scored: list[ScoreReport] = [r for r in reports if r.kind != "probe"]  # type: ignore[misc]
    probes: list[ProbeReport] = [r for r in reports if r.kind == "probe"]  # type: ignore[misc]
    if scored:
        table = Table("name", "method", "items", "labelled", "K", "C", "ACC", "NMI", "AMI", "ARI", "RI", "purity",
                      "silhouette", "accuracy (n)", "sizes", "classes without cluster",
                      title="against the labels (C classes; accuracy: predicted classes, where there are some)",
                      title_justify="left")
        for r in scored:
            sizes = [c for cid, c in r.cluster_sizes.items() if int(cid) >= 0] if r.kind == "clustering" else []
            size_text = f"{min(sizes)}-{max(sizes)}" if sizes else "-"
            if r.n_noise:
                size_text += f" +{r.n_noise} noise"
            unmatched = r.unmatched_classes
            unmatched_text = "-" if unmatched is None else (", ".join(map(str, unmatched[:6])) or "none") + (
                f" (+{len(unmatched) - 6})" if len(unmatched) > 6 else "")
            accuracy = _num(r.accuracy)
            if r.accuracy is not None:
                accuracy += f" ({r.n_predicted_labelled})"
            table.add_row(r.name, r.method, str(r.n_items), str(r.n_labelled), str(r.n_clusters),
                          "-" if r.n_classes is None else str(r.n_classes), _num(r.acc), _num(r.nmi),
                          _num(r.ami), _num(r.ari), _num(r.rand_index), _num(r.purity),
                          _num(r.silhouette), accuracy, size_text, unmatched_text)
        print_table(out, table)
        print_mapped(out, scored)
        print_names(out, scored)
    if probes:
        table = Table("set", "probe", "split", "train", "test", "classes", "accuracy", "temperature", "standardised",
                      "entropy (mean / max)", title="linear probes", title_justify="left")
        for r in probes:
            table.add_row(r.on, r.probe, r.split, str(r.n_train), str(r.n_test), str(r.n_classes),
                          _num(r.accuracy), "-" if r.temperature is None else f"{r.temperature:g}",
                          "yes" if r.standardize else "no", f"{r.mean_entropy:.3f} / {r.max_entropy:.3f}")
        print_table(out, table)


def print_names(out: Console, reports: Sequence["ScoreReport"]) -> None:
    """Named clusters (IC|TC, the fused workflow): each name, its size and the class ACC matched it to."""
    for r in reports:
        names = getattr(r, "cluster_names", None)  # a ClusteringReport's; classifications name none
        if not names or not any(names):
            continue
        mapping = r.mapping or {}
        parts = []
        for i, cluster_name in enumerate(names):
            part = f"{i} {cluster_name or '-'} ({r.cluster_sizes.get(str(i), 0)})"
            if str(i) in mapping:
                part += f" = {mapping[str(i)]}"
            parts.append(part)
        out.print(f"{r.name} clusters: " + "; ".join(parts), highlight=False, markup=False)


def print_mapped(out: Console, reports: Sequence["ScoreReport"]) -> None:
    """Scores against the mapped (coarser) labels of --label-map, and each level's place in its taxonomy."""
    rows = [r for r in reports if getattr(r, "mapped", None) or getattr(r, "level", None)]
    if not rows:
        return
    table = Table("name", "level", "parent", "K", "C (mapped)", "ACC (mapped)", "NMI (mapped)",
                  title="levels and scores against the mapped labels (--label-map)", title_justify="left")
    for r in rows:
        mapped = getattr(r, "mapped", None) or {}
        level = getattr(r, "level", None)
        table.add_row(r.name, "-" if level is None else f"{level} of {len(getattr(r, 'levels', None) or [])}",
                      getattr(r, "parent", None) or "-", str(r.n_clusters), str(mapped.get("n_classes", "-")),
                      _num(mapped.get("acc")), _num(mapped.get("nmi")))
    print_table(out, table)
