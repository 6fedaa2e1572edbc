"""`clipclust merge`: parse options, call clipclust.commands.merge.merge_workspaces, print what was joined."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from clipclust.cli import common

HELP = """Join workspaces (the shards of `embed --shard i/n` or `describe --shard i/n`, or runs made on other
machines) into -o OUT: items, every stored set, descriptions, cached model calls and clusterings.

A key held by several inputs is stored once; where their rows differ the first input's row is kept and
the conflict reported on stderr.  A set that two inputs made differently (model, prompt, precision, ...) is
refused before anything is written.  OUT may exist already: it is extended, and a stopped merge resumes.

Example:  clipclust merge shard-*.h5 -o all.h5 && clipclust --cache all.h5 info
"""


def register(app: typer.Typer) -> None:
    app.command("merge", help=HELP, no_args_is_help=True)(merge_command)


def merge_command(
    inputs: List[Path] = typer.Argument(..., metavar="WORKSPACE", help="Workspace files to merge."),
    output: Path = typer.Option(..., "--output", "-o", help="The merged workspace (created or extended)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    with common.errors():
        from clipclust.commands.merge import merge_workspaces

        report = merge_workspaces(inputs, output, reporter=common.RichReporter(quiet=common.STATE.quiet))
    if common.want_json(json_out):
        common.emit_json(report.to_dict())
        return
    rows = sum(s.added for s in report.sets)
    again = sum(s.duplicates for s in report.sets)
    line = (f"{len(report.inputs)} workspaces -> {report.output}: {report.items_added} new items "
            f"({report.items_known} already there), {len(report.sets)} sets ({rows} rows added, {again} duplicate "
            f"keys stored once), {report.calls_added} cached calls added, {len(report.clusterings_added)} clusterings "
            f"added")
    conflicts = len(report.conflicts)
    line += f"; {conflicts} conflicts (first input kept)" if conflicts else ""
    typer.echo(f"{line} in {report.seconds:.1f}s")
