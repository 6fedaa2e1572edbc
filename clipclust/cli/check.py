"""`clipclust check [--repair]`: is the workspace sound, and salvage what a broken one still holds."""

from __future__ import annotations

import typer

from clipclust.cli import common

HELP = """Verify the workspace: every dataset reads, keys are unique, sets are aligned with the items,
clusterings are complete.  Prints a one-line verdict; exit 0 when sound, 1 when not.

--repair copies everything that still reads into a fresh file beside it (NAME.repaired.h5), leaving the
broken file untouched; point --cache at the new file once you have looked at it.

Example:  clipclust check || clipclust check --repair
"""


def register(app: typer.Typer) -> None:
    app.command("check", help=HELP)(check_command)


def check_command(
    repair: bool = typer.Option(False, "--repair", help="Salvage what reads into NAME.repaired.h5 beside it."),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    from clipclust.commands.check import check

    with common.errors():
        result = check(common.STATE.cache, repair=repair)
    if common.want_json(json_out):
        common.emit_json(result.to_dict())
    else:
        out = common.stdout()
        verdict = result.report.verdict()
        if not result.ok:
            verdict += f"; run {common.command_line('check', '--repair')} to salvage it"
        out.print(verdict, markup=False, highlight=False)
        if result.repaired is not None:
            note = f"; not recovered: {'; '.join(result.lost)}" if result.lost else "; nothing was lost"
            out.print(f"salvaged into {result.repaired}{note}", markup=False, highlight=False)
    if not result.ok:
        raise typer.Exit(1)
