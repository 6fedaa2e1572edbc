"""The `clipclust` command: global options and the registry of commands (each in its own module)."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

import typer
import typer.completion

try:  # typer >= 0.20 vendors its own click; its exceptions are not click's
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer on real click
    from click import exceptions as click_exc

from .. import __version__
from . import common

app = typer.Typer(
    name="clipclust",
    help="Cluster and classify images by what you ask for: CLIP embeddings, prompts, local VLMs and LLMs.\n\n"
    "Example: clipclust embed ./digits --prompt 'This is digit <>' && clipclust info",
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"clipclust {__version__}")
        raise typer.Exit(0)


@app.callback()
def global_options(
    cache: Optional[str] = typer.Option(
        None, "--cache", envvar="CLIPCLUST_CACHE", help="The HDF5 workspace file.", show_default="./clipclust.h5"
    ),
    json_out: bool = typer.Option(False, "--json", help="Print results as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or warnings on stderr."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of failures (also CLIPCLUST_DEBUG=1)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    common.STATE.cache = cache or common.DEFAULT_CACHE
    common.STATE.json = json_out
    common.STATE.quiet = quiet
    common.STATE.debug = debug or common.debug_from_env()


def _register() -> None:
    from . import cluster, describe, embed, evaluate, export, finetune, info, visualize

    for module in (embed, describe, info, cluster, finetune, evaluate, visualize, export):
        module.register(app)


_register()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI and return its exit code; usage errors are one line and exit 2."""
    typer.completion.completion_init()  # answer the completion scripts in completions/ (_CLIPCLUST_COMPLETE)
    common.reset_state()
    command = typer.main.get_command(app)
    try:
        result = command.main(args=list(argv) if argv is not None else None, prog_name="clipclust", standalone_mode=False)
    except click_exc.NoArgsIsHelpError as exc:
        common.stderr().print(exc.format_message(), markup=False, highlight=False)
        return 2
    except click_exc.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        common.stderr().print(f"clipclust: error: {exc.format_message()}{hint}", markup=False, highlight=False)
        return 2
    except typer.Abort:
        common.stderr().print("clipclust: error: interrupted", markup=False, highlight=False)
        return 130
    except typer.Exit as exc:
        return int(getattr(exc, 'exit_code', 0))
    except KeyboardInterrupt:
        common.stderr().print("clipclust: error: interrupted", markup=False, highlight=False)
        return 130
    except Exception as exc:  # noqa: BLE001 - failures outside a command's own error handling
        return int(getattr(common.internal_error(exc), "exit_code", 1))
    return int(result) if isinstance(result, int) else 0


def entry() -> None:
    sys.exit(main())
