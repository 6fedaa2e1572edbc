"""The call cache with a counting generator: hits, misses, duplicates, interruptions, flushing."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from clipclust.errors import InputError
from clipclust.models.llm import CachedGenerator, CallStore, DecodeParams, GenerationRequest, MemoryCallStore, TextGenerator, chat


class Echo(TextGenerator):
    """Deterministic stand-in that counts calls and can be told to fail after n of them."""

    identity = "echo-v1"

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def generate(self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None) -> list[str]:
        out = []
        for r in requests:
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise KeyboardInterrupt
            self.calls += 1
            out.append(f"{r.messages[-1]['content']}|{(params or DecodeParams()).max_tokens}")
        return out


def reqs(n: int) -> list[GenerationRequest]:
    return [GenerationRequest(chat(f"q{i}")) for i in range(n)]


def test_cached_generator_hits_misses_and_duplicates() -> None:
    store = MemoryCallStore()
    assert isinstance(store, CallStore)
    echo = Echo()
    cached = CachedGenerator(echo, store)
    batch = reqs(5) + [GenerationRequest(chat("q0"))]  # a duplicate is computed once
    first = cached.generate(batch)
    assert first == [f"q{i}|256" for i in range(5)] + ["q0|256"]
    assert echo.calls == 5 and len(store) == 5
    assert (cached.last_stats.hits, cached.last_stats.misses) == (1, 5)
    again = cached.generate(batch)
    assert again == first and echo.calls == 5
    assert (cached.last_stats.hits, cached.last_stats.misses) == (6, 0)
    # Different decoding parameters are different calls.
    assert cached.generate(reqs(1), DecodeParams(max_tokens=3)) == ["q0|3"]
    assert echo.calls == 6
    assert (cached.stats.hits, cached.stats.misses) == (7, 6)


def test_each_completed_call_is_stored_before_an_interruption() -> None:
    store = MemoryCallStore()
    with pytest.raises(KeyboardInterrupt):
        CachedGenerator(Echo(fail_after=3), store).generate(reqs(8))
    assert len(store) == 3  # the three finished calls survived
    echo = Echo()
    resumed = CachedGenerator(echo, store)
    assert resumed.generate(reqs(8)) == [f"q{i}|256" for i in range(8)]
    assert echo.calls == 5 and resumed.last_stats.hits == 3


def test_flush_every_batches_store_writes_and_progress_reports() -> None:
    store = MemoryCallStore()
    seen: list[tuple[int, int]] = []
    CachedGenerator(Echo(), store, flush_every=4, progress=lambda d, t: seen.append((d, t))).generate(reqs(10))
    assert store.put_calls == 3  # 4 + 4 + the 2 left over
    assert seen[-1] == (10, 10) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    with pytest.raises(InputError):
        CachedGenerator(Echo(), store, flush_every=0)
