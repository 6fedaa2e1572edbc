"""`clipclust export`: a stored clustering or set as CSV, JSON lines or .npy, for shell tools and other programs."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator, Optional, TextIO

import typer

from clipclust.core.outputs import output_path
from clipclust.errors import InputError
from clipclust.commands.export import (COLUMNS, FORMATS, SET_COLUMNS, SET_FORMATS, clustering_rows, columns_of,
                                      export_set, write_rows)
from clipclust.cli import common

HELP = f"""Write a clustering, or with --set a stored set, one row per item (stdout unless -o FILE).

A clustering (NAME or -c/--clustering; default: the only one): {', '.join(COLUMNS)}.  For the fused
workflow the clustered training items come first, then each classified test item with its predicted class.
A clustering stored with levels (--levels) adds each level's cluster (level1 = coarsest, level1_name, ...)
and parent, the id of the row's cluster's parent in the next coarser level.

--set SPEC (name, kind or id as 'clipclust info' lists them, e.g. image, description:mood): {', '.join(SET_COLUMNS)},
then the description as 'text', or the vector as v0..v{{D-1}} (csv), as 'vector' (jsonl), or as one float32
matrix in FILE.npy with the keys in FILE.keys.csv (--format npy -o FILE.npy).  Parquet is not offered
(it would need pyarrow).  CSV has a header; --json is the same as --format jsonl.

Examples:  clipclust export kmeans-image --format csv | sort -t, -k5 -n | head
           clipclust export --set image --format npy -o image.npy
"""


def register(app: typer.Typer) -> None:
    app.command("export", help=HELP)(export_command)


@contextlib.contextmanager
def _output(path: Optional[Path]) -> Iterator[TextIO]:
    """The file to write (whole or not at all), or stdout; a reader that stops early (`export | head`) ends
    the run quietly.  A path that is not valid UTF-8 (a file's own name) is written as its bytes."""
    if path is not None:
        with output_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
            yield fh
        return
    try:
        yield sys.stdout
        sys.stdout.flush()
    except BrokenPipeError:  # the reader has what it wanted; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def export_command(
    name: Optional[str] = typer.Argument(None, metavar="NAME", help="Clustering to export (default: the only one)."),
    clustering: Optional[str] = typer.Option(None, "--clustering", "-c", metavar="NAME", help=common.CLUSTERING_HELP),
    set_spec: Optional[str] = typer.Option(None, "--set", "-s", metavar="SPEC", help="Export this stored set "
                                           "(vectors or descriptions) instead of a clustering."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="--set: pick the set of this model when "
                                        "several match."),
    fmt: str = typer.Option("csv", "--format", "-f", help=f"One of: {', '.join(SET_FORMATS)} (npy: --set only)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    json_out: bool = typer.Option(False, "--json", help="Same as --format jsonl."),
) -> None:
    fmt = "jsonl" if common.want_json(json_out) and fmt != "npy" else fmt
    with common.errors():
        if set_spec is not None:
            if name or clustering:
                raise InputError("export writes a clustering (NAME, -c) or a set (--set), not both; pass one")
            if fmt not in SET_FORMATS:
                raise InputError(f"--format {fmt}: expected one of {', '.join(SET_FORMATS)}")
            if output is not None and common.workspace().exists():  # an unknown set leaves no empty file behind
                common.workspace().resolve_set(set_spec, model=model, keyed_by=None)
            if fmt == "npy":
                done = export_set(common.workspace(), set_spec, fmt, out=output, model=model)
            else:
                with _output(output) as stream:
                    done = export_set(common.workspace(), set_spec, fmt, stream=stream, model=model)
            if done.files:
                typer.echo(f"{done.files[0]}: {done.rows} x {' x '.join(map(str, done.set.shape[1:]))} float32 of "
                           f"'{done.set.name}' [{done.set.model}]; keys in {done.files[1]}")
            return
        if fmt not in FORMATS:
            raise InputError(f"--format {fmt}: expected one of {', '.join(FORMATS)}"
                             + (" (npy is for vector sets: --set SPEC)" if fmt == "npy" else ""))
        rows = clustering_rows(common.workspace(), common.one_clustering(name, clustering))
        with _output(output) as stream:
            write_rows(rows, fmt, stream, columns=columns_of(rows))
