"""`clipclust info`: what the workspace holds (items by split and label, sets, clusterings, cached calls)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import typer
from rich.table import Table

from clipclust.cli import common
from clipclust.cli.evaluate import print_table

HELP = """What the workspace holds: its size on disk, items by split and label, each stored set with its
shape, bytes, model, prompt and date, clusterings and cached model calls.

Example:  clipclust info --json | jq '.sets[].name'
"""


def register(app: typer.Typer) -> None:
    app.command("info", help=HELP)(info_command)


def workspace_summary() -> dict[str, Any]:
    ws = common.workspace()
    if not ws.exists():
        raise common.fail(f"no workspace at {ws.path}; run 'clipclust embed IMAGES' first or pass --cache", 2)
    set_bytes = ws.set_storage_bytes()
    by_split: dict[str, Counter[str]] = {}
    for (split, label), n in ws.item_counts().items():
        by_split.setdefault(split or "(none)", Counter())[label or "(none)"] += n
    return {
        "cache": str(ws.path),
        "size_on_disk": ws.path.stat().st_size,
        "items": sum(sum(c.values()) for c in by_split.values()),
        "splits": {s: dict(sorted(c.items())) for s, c in sorted(by_split.items())},
        "sets": [
            {"id": s.id, "name": s.name, "kind": s.kind, "shape": list(s.shape), "model": s.model,
             "prompt": s.prompt, "keyed_by": s.keyed_by, "created": s.created, "updated": s.updated,
             "bytes": set_bytes.get(s.id, 0), "derived": s.derived, "bytes_not_stored": s.derived_bytes}
            for s in ws.list_sets()
        ],
        "clusterings": ws.list_clusterings(),
        "cached_calls": ws.count_calls(),
    }


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (powers of 1000, as ls --si and df -H count)."""
    units = ("B", "kB", "MB", "GB", "TB")
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{int(n)} B" if i == 0 else f"{n:.1f} {units[i]}"


def info_command(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    with common.errors():
        data = workspace_summary()
    if common.want_json(json_out):
        common.emit_json(data)
        return
    out = common.stdout()
    out.print(f"workspace {data['cache']}: {data['items']} items, {human_bytes(data['size_on_disk'])} on disk",
              highlight=False)
    labels = sorted({lab for c in data["splits"].values() for lab in c})
    if data["items"]:
        table = Table("split", *labels[:30], "total", title="items by split and label", title_justify="left")
        for split, counts in data["splits"].items():
            table.add_row(split, *[str(counts.get(lab, 0)) for lab in labels[:30]], str(sum(counts.values())))
        if len(labels) > 30:
            table.caption = f"{len(labels) - 30} more labels not shown (use --json)"
        out.print(table)
    if data["sets"]:
        table = Table("id", "name", "shape", "size", "model", "updated", title="stored sets", title_justify="left")
        for s in data["sets"]:
            shape = " x ".join(map(str, s["shape"])) + (" *" if s["derived"] else "")
            table.add_row(s["id"], s["name"], shape, human_bytes(s["bytes"]), s["model"], s["updated"])
        print_table(out, table)  # natural width in a pipe or file: names stay whole for grep
        derived = [s for s in data["sets"] if s["derived"]]
        if derived:
            saved = human_bytes(sum(s["bytes_not_stored"] for s in derived))
            out.print(f"* {len(derived)} sets computed on read from the image and text sets ({saved} not stored)",
                      highlight=False)
    if data["clusterings"]:
        out.print("clusterings: " + ", ".join(data["clusterings"]), highlight=False)
    if data["cached_calls"]:
        out.print(f"cached model calls: {data['cached_calls']}", highlight=False)
