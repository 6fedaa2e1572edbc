"""`clipclust info`: what the workspace holds (items by split and label, sets, clusterings, cached calls)."""

from __future__ import annotations

import typer
from rich.table import Table

from clipclust.cli import common
from clipclust.cli.evaluate import print_table
from clipclust.commands.info import info

HELP = """What the workspace holds: its size on disk, items by split and label, each stored set with its
shape, bytes, model, prompt and date, clusterings and cached model calls.

Example:  clipclust info --json | jq '.sets[].name'
"""


def register(app: typer.Typer) -> None:
    app.command("info", help=HELP)(info_command)


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (powers of 1000, as ls --si and df -H count)."""
    units = ("B", "kB", "MB", "GB", "TB")
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{int(n)} B" if i == 0 else f"{n:.1f} {units[i]}"


def info_command(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    with common.errors():
        held = info(common.workspace())
    if common.want_json(json_out):
        common.emit_json(held.to_dict())
        return
    out = common.stdout()
    out.print(f"workspace {held.cache}: {held.items} items, {human_bytes(held.size_on_disk)} on disk", highlight=False)
    labels = sorted({lab for c in held.splits.values() for lab in c})
    if held.items:
        table = Table("split", *labels[:30], "total", title="items by split and label", title_justify="left")
        for split, counts in held.splits.items():
            table.add_row(split, *[str(counts.get(lab, 0)) for lab in labels[:30]], str(sum(counts.values())))
        if len(labels) > 30:
            table.caption = f"{len(labels) - 30} more labels not shown (use --json)"
        out.print(table)
    if held.sets:
        table = Table("id", "name", "shape", "size", "model", "updated", title="stored sets", title_justify="left")
        for s in held.sets:
            shape = " x ".join(map(str, s.shape)) + (" *" if s.derived else "")
            table.add_row(s.id, s.name, shape, human_bytes(s.bytes), s.model, s.updated)
        print_table(out, table)  # natural width in a pipe or file: names stay whole for grep
        derived = [s for s in held.sets if s.derived]
        if derived:
            saved = human_bytes(sum(s.bytes_not_stored for s in derived))
            out.print(f"* {len(derived)} sets computed on read from the image and text sets ({saved} not stored)",
                      highlight=False)
    if held.clusterings:
        out.print("clusterings: " + ", ".join(held.clusterings), highlight=False)
    if held.cached_calls:
        out.print(f"cached model calls: {held.cached_calls}", highlight=False)
