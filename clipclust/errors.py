"""Exceptions the library raises; the CLI maps them to exit codes (2 = bad input, 1 = runtime).

The library never spells command-line flags or ``clipclust <command>`` lines.  A message that refers to
one of the caller's settings or to another step writes it with :func:`opt` or :func:`step`: a placeholder
that ``str(error)`` renders for Python callers (``batch_size``, ``embed()``) and the CLI renders as the
flag and the command line (``--batch-size``, ``'clipclust embed IMAGES'``).
"""

from __future__ import annotations

import re
from typing import Callable

__all__ = ["ClipclustError", "InputError", "opt", "plain", "render", "step"]

_MARK = re.compile(r"\x1e(opt|step):([^\x1e\x1f]*)\x1f")


def opt(name: str) -> str:
    """A reference to the setting ``name`` inside an error message (``opt("batch_size")``)."""
    return f"\x1eopt:{name}\x1f"


def step(command: str, args: str = "") -> str:
    """A reference to another step the user should run (``step("embed", "IMAGES")``).

    ``args`` may hold setting references: ``step("check", opt("repair"))`` reads 'clipclust check --repair'.
    """
    return f"\x1estep:{command}{' ' + args if args else ''}\x1f"  # not rstrip: \x1f is whitespace to Python


def render(text: str, option: Callable[[str], str], command: Callable[[str, str], str]) -> str:
    """``text`` with each :func:`opt` / :func:`step` placeholder replaced by ``option(name)`` / ``command(cmd, args)``."""
    def replace(match: re.Match[str]) -> str:
        if match.group(1) == "opt":
            return option(match.group(2))
        name, _, args = match.group(2).partition(" ")
        return command(name, args)

    while True:  # innermost first: a step's arguments may hold setting references
        text, found = _MARK.subn(replace, text)
        if not found:
            return text


def plain(text: str) -> str:
    """``text`` with its references spelled for Python callers, as ``str(error)`` spells them."""
    return render(text, _python_option, _python_step)


def _python_option(name: str) -> str:
    return name


def _python_step(command: str, args: str) -> str:
    return f"clipclust.{command}()"


class ClipclustError(Exception):
    """A runtime failure (exit code 1): a model that failed mid-run, a broken workspace."""

    exit_code = 1

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.render(_python_option, _python_step)

    def render(self, option: Callable[[str], str], command: Callable[[str, str], str]) -> str:
        """The message with its setting and step references spelled by ``option`` and ``command``."""
        return render(self.message, option, command)


class InputError(ClipclustError):
    """Bad usage or input (exit code 2): a missing file, an unknown set name, no images found.

    ``option`` names the setting at fault (``"min_count"``) when there is one: ``str()`` prefixes the
    message with it, the CLI with the flag that sets it.
    """

    exit_code = 2

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option

    def render(self, option: Callable[[str], str], command: Callable[[str, str], str]) -> str:
        text = render(self.message, option, command)
        return f"{option(self.option)}: {text}" if self.option else text
