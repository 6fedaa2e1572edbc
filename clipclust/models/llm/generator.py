"""The TextGenerator interface every backend implements, and the loop of backends that answer one call at a time."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from clipclust.models.llm.requests import DecodeParams, GenerationRequest


class TextGenerator(ABC):
    """A chat model: requests in, one answer string per request out, in order.

    ``identity`` must change whenever the answers could change (weights, chat template), because
    it is part of every cache key. ``max_concurrency`` tells callers how many requests the backend
    can usefully run at once (servers), so they can size batches.
    """

    identity: str
    name: str = ""
    default_params: DecodeParams = DecodeParams()
    max_concurrency: int = 1

    @abstractmethod
    def generate(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> list[str]:
        """Answer every request, in order."""

    def generate_iter(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        """Yield ``(index, answer)`` as each call finishes, so callers can store it at once."""
        for i, req in enumerate(requests):
            yield i, self.generate([req], params)[0]

    def close(self) -> None:
        """Release model memory or connections; the generator is unusable afterwards."""

    def __enter__(self) -> TextGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


T = TypeVar("T")


def serial_batches(items: Sequence[T], batch_size: int, lock: threading.Lock,
                   run: Callable[[list[T]], list[str]]) -> Iterator[tuple[int, str]]:
    """``run`` on consecutive batches of ``items``, one batch at a time under ``lock`` (an in-process model
    answers one call at a time, whichever thread asks), yielding ``(index, answer)`` as each batch ends."""
    for start in range(0, len(items), batch_size):
        with lock:
            answers = run(list(items[start:start + batch_size]))
        for j, answer in enumerate(answers):
            yield start + j, answer
