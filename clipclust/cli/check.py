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
    from clipclust.store.check import check_workspace, repair_workspace

    ws = common.STATE.cache
    with common.errors():
        report = check_workspace(ws)
        salvaged, lost = (repair_workspace(ws) if repair else (None, []))
    if common.want_json(json_out):
        common.emit_json({"cache": str(ws), "ok": report.ok, "problems": report.problems, "items": report.items,
                          "sets": report.sets, "clusterings": report.clusterings, "calls": report.calls,
                          "repaired": None if salvaged is None else str(salvaged), "lost": lost})
    else:
        out = common.stdout()
        out.print(report.verdict(), markup=False, highlight=False)
        if salvaged is not None:
            note = f"; not recovered: {'; '.join(lost)}" if lost else "; nothing was lost"
            out.print(f"salvaged into {salvaged}{note}", markup=False, highlight=False)
    if not report.ok:
        raise typer.Exit(1)
