"""Greedy answers decoded together as llama.cpp sequences (the real SmolLM2): text for text those of one
call at a time, cached under the same keys, and an interrupted batched run resumes without recomputing.

SmolLM2's Q4_1 weights go through kernels that compute each row alone, so here the logits are bit for bit
those of one call at a time and a 20-token answer may not drift by one token.  (K-quant files such as
Q4_K_M round a row differently in a group of four: see bench/llm_speed.py for how often that changes an
answer.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clipclust.methods.ictc.prompts import default_prompts, label_request
from clipclust.models.llm import (
    CachedGenerator,
    DecodeParams,
    GenerationRequest,
    LlamaCppGenerator,
    MemoryCallStore,
    chat,
    generation_key,
)
from clipclust.models.llm import batched

from .conftest import colour_request

DESCRIPTIONS = [
    "A red sports car parked on a wet city street at night.",
    "A small brown sparrow perched on a branch.",
    "A white sailboat crossing a calm blue lake under a cloudy sky, with two people on board.",
    "A tabby cat asleep on a sofa.",
    "An old green tractor in a muddy field.",
    "Un château près d'un lac, «très» ancien — été 2019.",  # accents and punctuation: multi-byte tokens
    "A lighthouse.",
]


def step2a(text: str) -> GenerationRequest:
    return label_request(text, "object", default_prompts("object"))


@pytest.fixture(scope="module")
def per_call(gguf_path: Path) -> Iterator[LlamaCppGenerator]:
    gen = LlamaCppGenerator(gguf_path, n_ctx=2048, n_threads=1, seed=0, concurrency=1)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def together(gguf_path: Path) -> Iterator[LlamaCppGenerator]:
    gen = LlamaCppGenerator(gguf_path, n_ctx=2048, n_threads=1, seed=0, concurrency=4)
    yield gen
    gen.close()


def test_greedy_answers_decoded_together_are_those_of_one_call_at_a_time(
        per_call: LlamaCppGenerator, together: LlamaCppGenerator) -> None:
    """Long (budget-cut) answers diverge at the first differing logit, so 20 tokens each is a strict check;
    the groups are of 4, and the prefix kept from one group serves the next."""
    requests = [step2a(d) for d in DESCRIPTIONS] + [GenerationRequest(chat("Name one fruit."))]
    params = DecodeParams(max_tokens=20)
    one_by_one = per_call.generate(requests, params)
    assert together.generate(requests, params) == one_by_one
    assert together._batcher is not None and together._batcher.context is not None  # it did decode together
    short = DecodeParams(max_tokens=3)  # the budget cuts every answer the same way
    assert together.generate(requests[:5], short) == per_call.generate(requests[:5], short)


def test_choices_and_sampling_still_take_one_call_each(per_call: LlamaCppGenerator,
                                                       together: LlamaCppGenerator) -> None:
    mixed = [colour_request("the sky"), step2a(DESCRIPTIONS[0]), colour_request("grass")]
    answers = together.generate(mixed, DecodeParams(max_tokens=8))
    assert answers == per_call.generate(mixed, DecodeParams(max_tokens=8))
    assert answers[0] in ("red", "green", "blue") and answers[2] in ("red", "green", "blue")
    sampled = DecodeParams(temperature=0.7, max_tokens=6, seed=3)
    assert batched.prepare(together.llama, mixed[1].messages, sampled) is None


def test_step2a_cache_key_is_pinned() -> None:
    """Answers stored before batching are found again: the step-2a request and its key did not move."""
    request = step2a("A red car parked on a street.")
    assert generation_key("llama.cpp:sha256:" + "0" * 64, DecodeParams(max_tokens=24), request) == (
        "024a51b2fbe50231540a62eafc09a02b7aab5bb62bd6ff22b7e772be985696b2")


def test_an_interrupted_batched_run_resumes_without_computing_anything_twice(
        together: LlamaCppGenerator, per_call: LlamaCppGenerator, monkeypatch: pytest.MonkeyPatch) -> None:
    requests = [step2a(d + " Seen from afar.") for d in DESCRIPTIONS]
    params = DecodeParams(max_tokens=12)
    expected = per_call.generate(requests, params)
    real_run = batched.GreedyBatcher.run
    computed: list[int] = []

    def dies_mid_group(self, prompts):  # the second group dies after one of its answers
        for pos, text in real_run(self, prompts):
            if len(computed) == 5:
                raise KeyboardInterrupt("killed")
            computed.append(pos)
            yield pos, text

    monkeypatch.setattr(batched.GreedyBatcher, "run", dies_mid_group)
    store = MemoryCallStore()
    with pytest.raises(KeyboardInterrupt):
        CachedGenerator(together, store).generate(requests, params)
    assert len(store) == 5  # every finished answer was stored at once
    monkeypatch.setattr(batched.GreedyBatcher, "run", real_run)
    again = CachedGenerator(together, store)
    assert again.generate(requests, params) == expected
    assert (again.last_stats.hits, again.last_stats.misses) == (5, 2)  # only the two unfinished were computed
