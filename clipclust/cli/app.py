"""The `clipclust` command: global options and the registry of commands (each in its own module)."""

from __future__ import annotations

import functools
import inspect
import math
import sys
from typing import Any, Callable, Optional, Sequence

import typer
import typer.completion

try:  # typer >= 0.20 vendors its own click; its exceptions are not click's
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer on real click
    from click import exceptions as click_exc

from clipclust.version import __version__
from clipclust.cli import common

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


CACHE_HELP = "The HDF5 workspace file (before or after the command)."
JSON_HELP = "Print results as JSON on stdout (before or after the command)."
QUIET_HELP = "No progress bars or warnings on stderr (before or after the command)."
DEBUG_HELP = ("Tracebacks of failures, and the warnings and log messages of the libraries clipclust uses (model "
              "hubs, torch, transformers) on stderr; also CLIPCLUST_DEBUG=1 (before or after the command).")


@app.callback()
def global_options(
    cache: Optional[str] = typer.Option(
        None, "--cache", envvar="CLIPCLUST_CACHE", metavar="PATH", help=CACHE_HELP, show_default="./clipclust.h5"
    ),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    common.STATE.cache = common.cache_path(cache) or common.DEFAULT_CACHE
    common.STATE.json = json_out
    common.STATE.quiet = quiet
    common.STATE.debug = debug or common.debug_from_env()
    if common.STATE.debug:
        common.show_library_output()


def with_global_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The command with --cache, --quiet, --debug (and --json where it has none) accepted after its name too.

    A global option given after the command overrides the one before it, as the later option would in
    any other position; the command's own --json already falls back on the global one (common.want_json).
    """
    signature = inspect.signature(command, eval_str=True)
    extra = [
        inspect.Parameter("global_cache", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                          default=typer.Option(None, "--cache", metavar="PATH", help=CACHE_HELP, show_default=False)),
        inspect.Parameter("global_quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--quiet", "-q", help=QUIET_HELP)),
        inspect.Parameter("global_debug", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--debug", help=DEBUG_HELP)),
    ]
    has_json = any("--json" in (getattr(p.default, "param_decls", None) or ()) for p in signature.parameters.values())
    if not has_json:
        extra.append(inspect.Parameter("global_json", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                       default=typer.Option(False, "--json", help=JSON_HELP)))

    @functools.wraps(command)
    def run(*args: Any, global_cache: Optional[str] = None, global_quiet: bool = False, global_debug: bool = False,
            global_json: bool = False, **kwargs: Any) -> Any:
        if global_cache is not None:
            common.STATE.cache = common.cache_path(global_cache)
        if global_debug and not common.STATE.debug:
            common.STATE.debug = True
            common.show_library_output()
        common.STATE.quiet = common.STATE.quiet or global_quiet
        common.STATE.json = common.STATE.json or global_json
        return command(*args, **kwargs)

    params = [*signature.parameters.values(), *extra]
    run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    run.__annotations__ = {**getattr(command, "__annotations__", {}), **{p.name: p.annotation for p in extra}}
    return run


def _register() -> None:
    from clipclust.cli import (check, cluster, describe, discover, embed, evaluate, export, finetune, info, merge,
                               report, visualize)

    for module in (embed, describe, discover, info, check, cluster, finetune, evaluate, visualize, report, export,
                   merge):
        module.register(app)
    for registered in app.registered_commands:
        registered.callback = with_global_options(registered.callback)


_register()


def _refuse_non_finite(command: Any) -> None:
    """Every option of every command refuses nan and inf at the door: no setting means anything with one
    (a learning rate of inf trains a NaN model), and one check here covers the generated method flags too.
    Every --seed takes what every random generator it seeds takes: 0 to 2**32 - 1."""
    for sub in getattr(command, "commands", {}).values():
        _refuse_non_finite(sub)
    for param in command.params:
        param.callback = _finite(param.callback)


def _finite(callback: Optional[Callable[..., Any]]) -> Callable[..., Any]:
    def check(ctx: Any, param: Any, value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise click_exc.BadParameter(f"{value} is not a finite number; give an ordinary number", ctx=ctx,
                                         param=param)
        if param.name == "seed" and isinstance(value, int) and not 0 <= value < 2**32:
            raise click_exc.BadParameter(f"{value}: a seed is a whole number from 0 to {2**32 - 1}", ctx=ctx,
                                         param=param)
        return callback(ctx, param, value) if callback is not None else value

    return check


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI and return its exit code; usage errors are one line and exit 2."""
    typer.completion.completion_init()  # answer the completion scripts in completions/ (_CLIPCLUST_COMPLETE)
    common.reset_state()
    common.bytes_safe_stdout()
    command = typer.main.get_command(app)
    _refuse_non_finite(command)
    try:
        with common.library_output_hidden():
            result = command.main(args=list(argv) if argv is not None else None, prog_name="clipclust",
                                  standalone_mode=False)
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
