"""Command-line flags generated from a method registry, and help that lists them under each method.

A command hands over its registry as a list of :class:`Section` (``cluster``: the clustering methods and
refinements; ``finetune``: the fine-tuning methods); its own parameters are its common options.  Every
:class:`~clipclust.methods.registry.Option` a section declares becomes one flag: ``--name-with-dashes``
(or the option's own ``flag`` spelling) and its ``short`` alias, typed, its choices as the metavar and its
default in the help.  An option that several methods declare (``criterion``) is one flag.  The flags are
made each time the command is built, so a method registered before the command runs brings its own.
:class:`SectionedCommand` parses them with the common options and lists them under one heading per method;
the app prints plain click help (``rich_markup_mode=None``), where Typer's ``rich_help_panel`` would not
show, so the sections are written here.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional, Sequence

import typer
import typer.main
from typer.core import TyperCommand

from clipclust.methods.registry import Option

__all__ = ["Flag", "Section", "SectionedCommand", "flag_spellings", "given_options", "method_flags"]


@dataclass(frozen=True)
class Section:
    """One heading of the help: a method (or refinement), what it does, and the options it declares."""

    owner: str
    title: str
    text: str
    options: tuple[Option, ...]


def spelling(option: Option) -> str:
    """The long flag of an option: ``--min-count`` for ``min_count``, ``--threads`` for ``flag="threads"``."""
    return "--" + (option.flag or option.name).replace("_", "-")


def metavar(option: Option) -> str | None:
    return "[" + "|".join(option.choices) + "]" if option.choices else None


@dataclass(frozen=True)
class Flag:
    """One generated flag and the option it sets, as each method that declares it sees it."""

    name: str
    declared: tuple[tuple[str, Option], ...]  # (method, its Option)

    @property
    def option(self) -> Option:
        return self.declared[0][1]

    @property
    def decls(self) -> list[str]:
        return [spelling(self.option)] + ([f"-{self.option.short}"] if self.option.short else [])

    def help(self) -> str:
        """The option's help; for one declared by several methods, each method's, named."""
        if len(self.declared) == 1:
            return self.option.help
        return "; ".join(f"{owner}: {option.help}" for owner, option in self.declared)

    def parameter(self) -> inspect.Parameter:
        option = self.option
        if option.type is bool:
            default = typer.Option(False, *self.decls, help=self.help())
            return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=default)
        default = typer.Option(None, *self.decls, help=self.help(), metavar=metavar(option), show_default=False)
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[option.type],
                                 default=default)


def method_flags(sections: Sequence[Section]) -> dict[str, Flag]:
    """One flag per option name over all the sections (options only Python can pass have none).

    Two declarations of one name must agree on its type and spelling: they are one flag.
    """
    declared: dict[str, list[tuple[str, Option]]] = {}
    for section in sections:
        for option in section.options:
            if option.type is not object:
                declared.setdefault(option.name, []).append((section.owner, option))
    flags = {}
    for name, owners in declared.items():
        first = owners[0][1]
        for owner, option in owners[1:]:
            if (option.type, option.flag, option.short) != (first.type, first.flag, first.short):
                raise ValueError(f"option '{name}' of {owner} differs in type or spelling from {owners[0][0]}'s; "
                                 "one name is one flag")
        flags[name] = Flag(name, tuple(owners))
    return flags


def flag_spellings(ctx: typer.Context) -> dict[str, str]:
    """Library option name -> its flag, where the running command's method flag is not ``--name-with-dashes``."""
    flags: dict[str, Flag] = getattr(ctx.command, "flags", {})
    return {name: spelling(flag.option) for name, flag in flags.items() if flag.option.flag}


def given_options(ctx: typer.Context) -> dict[str, Any]:
    """The method options given on the command line (a flag left out parses as None, a switch as False)."""
    flags = getattr(ctx.command, "flags", {})
    values = {name: ctx.params.get(name) for name in flags}
    return {name: value for name, value in values.items() if value is not None and value is not False}


def _click_parameters(flags: list[Flag]) -> list[Any]:
    """The flags as click parameters, made by Typer from a synthesized signature (as every other option is)."""
    if not flags:
        return []

    def collect(**values: Any) -> None:
        """Never called: its signature declares the flags."""

    parameters = [flag.parameter() for flag in flags]
    collect.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    collect.__annotations__ = {p.name: p.annotation for p in parameters}
    app = typer.Typer(add_completion=False)
    app.command()(collect)
    return list(typer.main.get_command(app).params)


def _row(flag: Flag, owner: str, option: Option) -> str:
    """An option's help as its method declares it, the other methods of the same flag, and its default."""
    others = [name for name, _ in flag.declared if name != owner]
    text = option.help + (f" (also {', '.join(others)})" if others else "")
    default = option.default_text
    return f"{text}  [default: {default}]" if default is not None else text


class SectionedCommand(TyperCommand):
    """A command whose method options come from a registry and whose help lists them by method.

    ``SectionedCommand.of(sections)`` is the class to give ``app.command(cls=...)``: ``sections`` is called
    each time the command is built.  The flags' values are left out of the call to the command function
    (which declares only the common options) and read from the context with :func:`given_options`.
    """

    find_sections: ClassVar[Callable[[], Sequence[Section]]]  # set by :meth:`of`

    @classmethod
    def of(cls, sections: Callable[[], Sequence[Section]]) -> type["SectionedCommand"]:
        """The command class whose method options are those of ``sections()``, in that order."""
        return type(cls.__name__, (cls,), {"find_sections": staticmethod(sections)})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sections = list(self.find_sections())
        self.flags = method_flags(self.sections)
        taken = {name for param in self.params for name in (param.name, *param.opts, *param.secondary_opts)}
        for flag in self.flags.values():
            clash = taken & {flag.name, *flag.decls}
            if clash:
                raise ValueError(f"the option '{flag.name}' of {flag.declared[0][0]} clashes with the command's own "
                                 f"{', '.join(sorted(clash))}")
        self.params.extend(_click_parameters(list(self.flags.values())))
        call = self.callback
        if call is not None:
            @functools.wraps(call)
            def callback(**values: Any) -> Any:
                return call(**{key: value for key, value in values.items() if key not in self.flags})

            self.callback = callback

    def format_options(self, ctx: Any, formatter: Any) -> None:
        records = {param.name: param.get_help_record(ctx) for param in self.get_params(ctx)}
        own = [record for name, record in records.items() if record is not None and name not in self.flags]
        with formatter.section("Options"):
            formatter.write_dl(own)
        for section in self.sections:  # a method without options of its own still says what it does
            rows = [(records[o.name][0], _row(self.flags[o.name], section.owner, o)) for o in section.options
                    if o.name in self.flags and records.get(o.name) is not None]
            with formatter.section(section.title):
                formatter.write_text(section.text)
                if rows:
                    formatter.write_dl(rows)
