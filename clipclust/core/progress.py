"""How library code reports progress and warnings without knowing who listens (a rich bar, a notebook, nothing)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Protocol

from clipclust.errors import plain


class Reporter(Protocol):
    def task(self, description: str, total: int | None) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        """A context yielding ``advance(n)`` for one stage of work."""

    def warn(self, message: str) -> None:
        """A problem worth telling the user that does not stop the run (a skipped file); the message may hold
        :func:`clipclust.errors.opt` references, which the reporter spells for its audience."""


class SilentReporter:
    """The default: nothing shown, warnings kept for the caller to inspect."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        yield lambda n=1: None

    def warn(self, message: str) -> None:
        self.warnings.append(plain(message))
