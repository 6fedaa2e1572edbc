"""`clipclust export`: a stored clustering as CSV or JSON lines on stdout, for shell tools."""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from ..errors import InputError
from ..export import COLUMNS, FORMATS, clustering_rows, write_rows
from . import common

HELP = f"""Write a clustering to stdout, one row per item: {', '.join(COLUMNS)}.

For the fused workflow the clustered training items come first, then each classified test item with its
predicted class.  CSV has a header; JSONL is one object per line (--json is the same as --format jsonl).

Example:  clipclust export kmeans-image --format csv | sort -t, -k5 -n | head
"""


def register(app: typer.Typer) -> None:
    app.command("export", help=HELP)(export_command)


def export_command(
    name: Optional[str] = typer.Argument(None, metavar="NAME", help="Clustering to export (default: the only one)."),
    clustering: Optional[str] = typer.Option(None, "--clustering", "-c", metavar="NAME", help=common.CLUSTERING_HELP),
    fmt: str = typer.Option("csv", "--format", "-f", help=f"One of: {', '.join(FORMATS)}."),
    json_out: bool = typer.Option(False, "--json", help="Same as --format jsonl."),
) -> None:
    with common.errors():
        if fmt not in FORMATS:
            raise InputError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
        rows = clustering_rows(common.workspace(), common.one_clustering(name, clustering))
    try:
        write_rows(rows, "jsonl" if common.want_json(json_out) else fmt, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # `export | head`: the reader has what it wanted; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
