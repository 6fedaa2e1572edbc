"""What every command shares: global options, the workspace, stdout/stderr consoles, progress and errors.

Results go to stdout (plain text or --json); progress bars, warnings and errors go to stderr.  Library
errors become one line and an exit code: 2 for bad input, 1 for runtime failures.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from clipclust.store import Workspace
from clipclust.errors import ClipclustError, InputError, render

DEFAULT_CACHE = "clipclust.h5"


@dataclass
class State:
    cache: str = DEFAULT_CACHE
    json: bool = False
    quiet: bool = False
    debug: bool = False


STATE = State()


def reset_state() -> None:
    """Fresh global options for each invocation (tests call main() many times in one process)."""
    STATE.cache = os.environ.get("CLIPCLUST_CACHE") or DEFAULT_CACHE
    STATE.json = False
    STATE.quiet = False
    STATE.debug = debug_from_env()


def cache_path(value: str | None) -> str | None:
    """--cache as given; an empty one is refused rather than read as the default ./clipclust.h5."""
    if value is not None and not value.strip():
        raise fail(f"--cache {value!r} is empty: pass a workspace file such as {DEFAULT_CACHE}, or leave --cache "
                   f"out for ./{DEFAULT_CACHE}")
    return value


def bytes_safe_stdout() -> None:
    """A file name that is not valid UTF-8 is printed as its own bytes (as ls does), not as a crash."""
    with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
        sys.stdout.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]


def debug_from_env() -> bool:
    """CLIPCLUST_DEBUG=1 (or any value but 0/false/empty) asks for tracebacks, like --debug."""
    return os.environ.get("CLIPCLUST_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def library_output_hidden() -> Iterator[None]:
    """Keep the warnings and log records of torch, transformers, huggingface_hub, open_clip off stderr.

    Users see our one-line errors and warnings; what libraries say (retries, deprecations) is for
    --debug, which calls show_library_output() inside this context.
    """
    before = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(before)


def show_library_output() -> None:
    """--debug: let library warnings and log records (WARNING and above) through again."""
    warnings.simplefilter("default")
    logging.disable(logging.NOTSET)


def stdout() -> Console:
    return Console(file=sys.stdout, soft_wrap=True, no_color=bool(os.environ.get("NO_COLOR")) or None)


def stderr() -> Console:
    return Console(file=sys.stderr, stderr=True, soft_wrap=True, no_color=bool(os.environ.get("NO_COLOR")) or None)


def workspace() -> Workspace:
    return Workspace(STATE.cache)


def want_json(flag: bool) -> bool:
    return flag or STATE.json


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print a one-line error and return the Exit to raise (a line break in it, from a name or a file, is
    shown escaped: the error stays one line)."""
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    stderr().print(f"clipclust: error: {message}", markup=False, highlight=False)
    return typer.Exit(code)


def flag_for(option: str, flags: dict[str, str] | None = None) -> str:
    """The command-line spelling of a library option name ('min_count' -> '--min-count')."""
    return (flags or {}).get(option) or "--" + option.replace("_", "-")


def command_line(command: str, args: str = "") -> str:
    """How a library step reference reads on the command line: 'clipclust embed IMAGES'."""
    return f"'clipclust {command}{' ' + args if args else ''}'"


def describe_error(exc: ClipclustError, flags: dict[str, str] | None = None) -> str:
    """A library error as one CLI line: settings spelled as flags, steps as command lines."""
    return exc.render(lambda name: flag_for(name, flags), command_line)


def internal_error(exc: BaseException) -> "typer.Exit":
    """An unexpected failure: one line and exit 1, the traceback only with --debug / CLIPCLUST_DEBUG=1."""
    if STATE.debug:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    text = " ".join(str(exc).split()) or "no message"
    hint = "" if STATE.debug else " (run with --debug for the traceback)"
    return fail(f"internal error: {type(exc).__name__}: {text}{hint}", 1)


@contextlib.contextmanager
def errors(flags: dict[str, str] | None = None) -> Iterator[None]:
    """Turn library errors and Ctrl-C into one line on stderr and the right exit code."""
    try:
        yield
    except ClipclustError as exc:
        if STATE.debug:
            import traceback

            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        raise fail(describe_error(exc, flags), exc.exit_code) from None
    except KeyboardInterrupt:
        raise fail("interrupted; what was computed so far is saved, re-run the same command to resume", 130) from None
    except MemoryError as exc:
        if STATE.debug:
            raise
        raise fail("out of memory; what was computed so far is saved: use a smaller --batch-size or fewer items "
                   "per run, then re-run to resume", 1) from exc
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except OSError as exc:
        if exc.errno is None or STATE.debug:
            raise internal_error(exc) from None
        raise os_failure(exc) from None
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, exit 1
        raise internal_error(exc) from None


def os_failure(exc: OSError) -> "typer.Exit":
    """An operating-system error the library did not word itself, as one line: a place the user can change
    (permissions, a read-only mount, a missing or wrong path) exits 2; a full disk or a failing device 1."""
    place = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}
    what = f"{exc.filename}: " if exc.filename else ""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return fail(f"{what}{reason}; free some space and run the same command again (what was saved is kept)", 1)
    return fail(f"{what}{reason}", 2 if exc.errno in place else 1)


SHARD_HELP = ("Only shard I of N of the items (by content hash), e.g. 2/8, each into its own --cache; "
              "'clipclust merge' joins the shards' workspaces.")
CLUSTERING_HELP = "The clustering (same as the positional NAME)."


def clustering_names(positional: Sequence[str] | None, option: Sequence[str] | None) -> list[str]:
    """Clusterings named as arguments or with -c/--clustering (both ways may be mixed), in order, once each."""
    return list(dict.fromkeys([*(positional or ()), *(option or ())]))


def one_clustering(positional: str | None, option: str | None) -> str | None:
    """The clustering a single-clustering command works on, named either way (None: the only one stored)."""
    if positional and option and positional != option:
        raise InputError(f"NAME '{positional}' and --clustering '{option}' name different clusterings; pass one")
    return positional or option


class RateColumn(ProgressColumn):
    """Items per second, the figure users compare between runs."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f}/s", style="progress.data.speed")


class RichReporter:
    """Progress bars with rate and ETA on stderr; silent with --quiet."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = stderr()
        self.warnings: list[str] = []

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        if self.quiet or not self.console.is_terminal:
            yield lambda n=1: None
            return
        columns = [SpinnerColumn(), TextColumn("{task.description}")]
        if total is not None:
            columns += [BarColumn(), MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(), TextColumn("eta"),
                        TimeRemainingColumn()]
        with Progress(*columns, console=self.console, transient=True) as progress:
            task_id = progress.add_task(description, total=total)
            yield lambda n=1: progress.advance(task_id, n)

    def warn(self, message: str) -> None:
        message = render(message, flag_for, command_line)
        self.warnings.append(message)
        if not self.quiet:
            self.console.print(f"warning: {message}", markup=False, highlight=False)
