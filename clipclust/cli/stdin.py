"""Reading from pipes: image paths given as '-' (one a line, or NUL-separated with -0), descriptions as --from -.

The library takes paths and files; this module turns what a pipe carries into those, so that
`find . -name '*.jpg' -print0 | clipclust embed - -0` and `jq -c ... | clipclust describe --from -` work.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from clipclust.errors import InputError

NULL_HELP = "Paths read from stdin ('-') are NUL-separated, as find -print0 writes them."
DESCRIPTION_FORMATS = ("jsonl", "json", "csv", "tsv")


def _read_stdin(what: str) -> str:
    if sys.stdin is None or sys.stdin.isatty():
        raise InputError(f"'-' reads {what} from stdin, but stdin is a terminal; pipe them in")
    return sys.stdin.read()


def input_paths(args: Sequence[str | Path], null: bool = False) -> list[str]:
    """IMAGES as given, with '-' replaced by the paths on stdin (empty lines are skipped)."""
    texts = [str(a) for a in args]
    if texts.count("-") > 1:
        raise InputError("'-' (paths from stdin) can be given only once")
    if null and "-" not in texts:
        raise InputError("-0 says how paths on stdin are separated; pass '-' among IMAGES to read them")
    out: list[str] = []
    for text in texts:
        if text != "-":
            out.append(text)
            continue
        data = _read_stdin("image paths")
        read = [p for p in (data.split("\0") if null else data.splitlines()) if p.strip()]
        if not read:
            raise InputError("no paths on stdin; '-' reads one path per line (NUL-separated with -0)")
        out.extend(read)
    return out


def sniff_format(text: str) -> str:
    """jsonl, json, csv or tsv from the first characters of a descriptions stream."""
    head = text.lstrip()
    if head.startswith("["):
        return "json"
    if head.startswith("{"):
        return "jsonl"
    first = head.split("\n", 1)[0]
    return "tsv" if "\t" in first and "," not in first else "csv"


@contextlib.contextmanager
def descriptions_file(source: Path, fmt: str | None) -> Iterator[Path]:
    """The descriptions file to import: the file itself, or stdin ('-') as a file of the given or sniffed format.

    The library knows the format from the file's suffix, so stdin is written to ``stdin.FORMAT`` in a
    scratch folder (the imported set is then named after 'stdin'), and a file whose suffix says something
    else than --format is linked there under the right suffix.  Relative image paths in stdin's records
    resolve against the working directory; errors name 'stdin', not the scratch file.
    """
    if fmt is not None and fmt not in DESCRIPTION_FORMATS:
        raise InputError(f"--format {fmt}: expected one of {', '.join(DESCRIPTION_FORMATS)}")
    from_stdin = str(source) == "-"
    if not from_stdin and (fmt is None or source.suffix.lower() == f".{fmt}"):
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="clipclust-stdin-") as scratch:
        if from_stdin:
            text = _read_stdin("descriptions")
            if not text.strip():
                raise InputError("no descriptions on stdin; pipe JSONL/JSON/CSV/TSV records into --from -")
            path = Path(scratch) / f"stdin.{fmt or sniff_format(text)}"
            path.write_text(text, encoding="utf-8")
        else:
            if not source.is_file():
                raise InputError(f"descriptions file not found: {source}")
            path = Path(scratch) / f"{source.stem}.{fmt}"
            path.symlink_to(source.resolve())
        try:
            yield path
        except InputError as exc:
            named = "stdin" if from_stdin else str(source)
            raise InputError(exc.message.replace(str(path), named), option=exc.option) from None
