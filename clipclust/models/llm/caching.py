"""The call cache: every answer stored by a key covering what it depends on, so re-runs cost nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from clipclust.errors import InputError

from clipclust.models.llm.generator import TextGenerator
from clipclust.models.llm.requests import DecodeParams, GenerationRequest, generation_key


@runtime_checkable
class CallStore(Protocol):
    """Where model answers persist: the HDF5 workspace implements it; :class:`MemoryCallStore` too."""

    def get_many(self, keys: list[str]) -> dict[str, str]:
        """Values of the keys that are present (absent keys are simply left out)."""
        ...

    def put_many(self, entries: dict[str, str]) -> None:
        """Store entries durably (a later get_many in another process must see them)."""
        ...


class MemoryCallStore:
    """A dict-backed :class:`CallStore` for tests, notebooks and single-process use."""

    def __init__(self, entries: Mapping[str, str] | None = None) -> None:
        self.entries: dict[str, str] = dict(entries or {})
        self.put_calls = 0
        self._lock = threading.Lock()

    def get_many(self, keys: list[str]) -> dict[str, str]:
        with self._lock:
            return {k: self.entries[k] for k in keys if k in self.entries}

    def put_many(self, entries: dict[str, str]) -> None:
        with self._lock:
            self.entries.update(entries)
            self.put_calls += 1

    def __len__(self) -> int:
        return len(self.entries)


@dataclass
class CacheStats:
    """How many answers came from the store (hits) and how many needed a model call (misses)."""

    hits: int = 0
    misses: int = 0

    @property
    def calls(self) -> int:
        return self.hits + self.misses

    def __sub__(self, other: CacheStats) -> CacheStats:
        return CacheStats(self.hits - other.hits, self.misses - other.misses)

    def copy(self) -> CacheStats:
        return CacheStats(self.hits, self.misses)


ProgressFn = Callable[[int, int], None]
"""``progress(done, total)``: called after each answer (cached or computed) of one batch."""


def run_cached(
    keys: Sequence[str],
    compute: Callable[[list[int]], Iterator[tuple[int, str]]],
    store: CallStore,
    stats: CacheStats,
    *,
    flush_every: int = 1,
    progress: ProgressFn | None = None,
) -> list[str]:
    """Shared cache logic for text and vision calls.

    Looks every key up once, runs ``compute`` on the positions of distinct missing keys (it yields
    ``(position, answer)`` as calls finish) and puts answers into the store every ``flush_every``
    completions; whatever completed is flushed even when the run is interrupted.  An empty answer is
    returned but never stored: it is a failure of the model or server, and the next run asks again.
    """
    total = len(keys)
    counts: dict[str, int] = {}
    first_pos: dict[str, int] = {}
    for pos, k in enumerate(keys):
        counts[k] = counts.get(k, 0) + 1
        first_pos.setdefault(k, pos)
    unique = list(first_pos)
    found = store.get_many(unique) if unique else {}
    missing = [first_pos[k] for k in unique if k not in found]
    stats.hits += total - len(missing)
    answers: dict[str, str] = dict(found)
    done = sum(counts[k] for k in found)
    if progress is not None and done:
        progress(done, total)
    buffer: dict[str, str] = {}
    try:
        for pos, text in compute(missing):
            k = keys[pos]
            answers[k] = text
            if text.strip():
                buffer[k] = text
            stats.misses += 1
            done += counts[k]
            if len(buffer) >= flush_every:
                store.put_many(buffer)
                buffer = {}
            if progress is not None:
                progress(done, total)
    finally:
        if buffer:
            store.put_many(buffer)
    return [answers[k] for k in keys]


class CachedGenerator(TextGenerator):
    """A :class:`TextGenerator` whose calls are looked up in (and written to) a :class:`CallStore`.

    Identical requests in one batch are computed once. ``stats`` accumulates hits and misses over
    the wrapper's lifetime; ``last_stats`` holds those of the most recent ``generate``.
    """

    def __init__(
        self,
        generator: TextGenerator,
        store: CallStore,
        *,
        flush_every: int = 1,
        progress: ProgressFn | None = None,
    ) -> None:
        if flush_every < 1:
            raise InputError(f"flush_every must be >= 1, got {flush_every}")
        self.generator = generator
        self.store = store
        self.flush_every = flush_every
        self.progress = progress
        self.stats = CacheStats()
        self.last_stats = CacheStats()

    @property
    def identity(self) -> str:  # type: ignore[override]
        return self.generator.identity

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.generator.name

    @property
    def default_params(self) -> DecodeParams:  # type: ignore[override]
        return self.generator.default_params

    @property
    def max_concurrency(self) -> int:  # type: ignore[override]
        return self.generator.max_concurrency

    def key(self, request: GenerationRequest, params: DecodeParams | None = None) -> str:
        """The cache key this wrapper uses for ``request``."""
        return generation_key(self.identity, params or self.default_params, request)

    def generate(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> list[str]:
        params = params or self.default_params
        requests = list(requests)
        keys = [generation_key(self.identity, params, r) for r in requests]
        before = self.stats.copy()

        def compute(positions: list[int]) -> Iterator[tuple[int, str]]:
            if not positions:
                return
            sub = [requests[p] for p in positions]
            for j, text in self.generator.generate_iter(sub, params):
                yield positions[j], text

        try:
            return run_cached(
                keys, compute, self.store, self.stats,
                flush_every=self.flush_every, progress=self.progress,
            )
        finally:
            self.last_stats = self.stats - before

    def close(self) -> None:
        self.generator.close()
