"""`clipclust discover`: which criteria could this collection be clustered by? A table, or --json."""

from __future__ import annotations

import shlex
from typing import Optional

import typer
from rich.table import Table

from clipclust.cli import common
from clipclust.commands.discover import DiscoverReport, discover

HELP = """Propose criteria to cluster a description set by, each with an explanation, the values seen in a
sample and an estimate of how many groups it makes.

The LLM reads a seeded sample in small batches and proposes a few criteria per batch; proposals are merged
and ranked by how many batches made them.  The best, then IC|TC's own criteria (action, mood, location,
object: 'common' in the batches column), are checked by labelling a small sample for each (IC|TC's step
2a): a criterion with one value for nearly everything, no value seen twice, or the values or grouping of a
better one is dropped.  'groups' is the number of values that cover 90% of the labelled sample.  The
result is stored: the same request again prints it without loading any model.

\b
Examples:
  clipclust discover --llm qwen.gguf
  clipclust discover --on description -n 3 --sample 96 --llm http://localhost:8080/v1 --json
"""

FLAGS = {"n": "-n", "n_threads": "--threads", "label_sample": "--label-sample", "model_name": "--model-name",
         "n_ctx": "--n-ctx", "n_gpu_layers": "--n-gpu-layers", "text_model": "--text-model", "on": "--on",
         "llm": "--llm", "sample": "--sample", "batch": "--batch"}


def register(app: typer.Typer) -> None:
    app.command("discover", help=HELP)(discover_command)


def discover_command(
    llm: Optional[str] = typer.Option(None, "--llm", help="The LLM: a .gguf file, hf:ORG/NAME or a folder, or "
                                      "http://HOST:PORT/v1."),
    on: Optional[str] = typer.Option(None, "--on", help="The description set (name, kind or id).",
                                     show_default="the only one stored"),
    n: int = typer.Option(5, "-n", "--number", help="How many criteria to propose."),
    sample: int = typer.Option(48, "--sample", help="Descriptions the LLM reads to propose criteria (seeded)."),
    batch: int = typer.Option(8, "--batch", help="Descriptions per proposal call."),
    label_sample: int = typer.Option(24, "--label-sample", help="Descriptions labelled to check each criterion."),
    seed: int = typer.Option(0, "--seed", help="Which descriptions the samples hold."),
    split: Optional[str] = typer.Option(None, "--split", help="Only the items of this split."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Pick the set of this model when several exist."),
    text_model: Optional[str] = typer.Option(None, "--text-model", help="sentence-transformers folder or name that "
                                             "merges proposals and labels by meaning.",
                                             show_default="all-MiniLM-L6-v2, offline"),
    threads: Optional[int] = typer.Option(None, "--threads", help="GGUF: CPU threads.",
                                          show_default="auto: half the CPU cores"),
    n_ctx: Optional[int] = typer.Option(None, "--n-ctx", help="GGUF: context window.", show_default="4096"),
    n_gpu_layers: Optional[int] = typer.Option(None, "--n-gpu-layers", help="GGUF: layers on the GPU (-1 = all).",
                                               show_default="0, CPU only"),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Server: requests in flight; GGUF: "
                                              "answers decoded together.", show_default="4 on a server, 1 for GGUF"),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="Server: the model name."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Server: seconds to wait for one answer."),
    force: bool = typer.Option(False, "--force", help="Propose again even if the same request is stored (the LLM's "
                               "answers stay cached)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    with common.errors(FLAGS):
        for value, flag in ((threads, "--threads"), (concurrency, "--concurrency")):
            if value is not None and value < 1:
                raise common.fail(f"{flag} must be at least 1, got {value}")
        if timeout is not None and timeout <= 0:
            raise common.fail(f"--timeout must be a number of seconds above 0, got {timeout}")
        report = discover(common.workspace(), on=on, llm=llm, n=n, sample=sample, batch=batch,
                          label_sample=label_sample, seed=seed, split=split, model=model, text_model=text_model,
                          force=force, reporter=common.RichReporter(quiet=common.STATE.quiet), n_threads=threads,
                          n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, concurrency=concurrency, model_name=model_name,
                          timeout=timeout)
    if common.want_json(json_out):
        common.emit_json(report.to_dict())
        return
    print_report(report, llm)


def _values(values: list[dict]) -> str:
    return ", ".join(f"{v['value']} {v['count']}" for v in values) or "-"


def _batches(found: int, total: int) -> str:
    """How many batches proposed a criterion; "common" for one of the common criteria checked after them."""
    return f"{found}/{total}" if found else "common"


def print_report(report: DiscoverReport, llm: Optional[str]) -> None:
    """The criteria table, the dropped candidates with the reason, one line on what was read; the next step and
    a reused result's warnings on stderr."""
    out = common.stdout()
    if report.criteria:
        table = Table("#", "criterion", "explanation", f"values seen (of {report.label_sample} labelled)", "groups",
                      "batches", title=f"criteria for '{report.on}'", title_justify="left")
        for i, c in enumerate(report.criteria, start=1):
            table.add_row(str(i), c["criterion"], c["explanation"] or "-", _values(c["values"]), str(c["groups"]),
                          _batches(c["batches"], report.n_batches))
        out.print(table)
    if report.dropped:
        table = Table("criterion", "why dropped", f"values seen (of {report.label_sample} labelled)", "batches",
                      title="proposed, dropped", title_justify="left")
        for d in report.dropped:
            table.add_row(d["criterion"], d["reason"], _values(d["values"]), _batches(d["batches"], report.n_batches))
        out.print(table)
    status = "reused; pass --force to propose again" if report.reused else f"stored in {report.seconds:.1f}s"
    line = (f"discover: {status} ({len(report.criteria)} of {report.n} criteria from {report.n_candidates} proposed; "
            f"{report.sample} of {report.n_items} descriptions in {report.n_batches} batches, {report.label_sample} "
            f"labelled per criterion; LLM {report.llm_name})")
    if report.calls:
        line += f"; LLM calls: {report.calls.get('hits', 0)} cached, {report.calls.get('misses', 0)} new"
    out.print(line, highlight=False, markup=False)
    err = common.stderr()
    if common.STATE.quiet:
        return
    if report.reused:  # a fresh run warned as it went
        for warning in report.warnings:
            err.print(f"warning: {warning}", highlight=False, markup=False)
    if report.criteria and llm:
        best = report.criteria[0]
        err.print(f"cluster by one: clipclust cluster --method ictc --on {shlex.quote(report.set_id)} --criterion "
                  f"{shlex.quote(best['criterion'])} -k {best['groups']} --llm {shlex.quote(llm)}",
                  highlight=False, markup=False)
