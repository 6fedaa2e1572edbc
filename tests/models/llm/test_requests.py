"""Decoding parameters, requests and the cache key of an answer."""

from __future__ import annotations

import pytest

from clipclust.errors import InputError
from clipclust.models.llm import DecodeParams, GenerationRequest, chat, generation_key


def test_decode_params_defaults_are_greedy_and_validated() -> None:
    p = DecodeParams()
    assert p.greedy and p.temperature == 0 and p.seed == 0
    assert DecodeParams(top_p=0.5).to_dict()["top_p"] == 1.0  # irrelevant when greedy
    assert DecodeParams(temperature=0.7, top_p=0.5).to_dict()["top_p"] == 0.5
    for bad in (dict(temperature=-1), dict(top_p=0), dict(max_tokens=0)):
        with pytest.raises(InputError):
            DecodeParams(**bad)


def test_request_validation_and_choice_dedupe() -> None:
    with pytest.raises(InputError):
        GenerationRequest(())
    with pytest.raises(InputError):
        GenerationRequest(chat("x"), ("a", ""))
    assert GenerationRequest(chat("x"), ("a", "b", "a")).choices == ("a", "b")


def test_generation_key_covers_every_input() -> None:
    req = GenerationRequest(chat("describe", system="sys"), ("a", "b"), "item1")
    base = generation_key("m1", DecodeParams(), req)
    assert base == generation_key("m1", DecodeParams(), GenerationRequest(chat("describe", system="sys"), ("a", "b"), "item1"))
    assert len(base) == 64
    variants = [
        generation_key("m2", DecodeParams(), req),
        generation_key("m1", DecodeParams(max_tokens=7), req),
        generation_key("m1", DecodeParams(seed=1, temperature=0.5), req),
        generation_key("m1", DecodeParams(), GenerationRequest(chat("describe!", system="sys"), ("a", "b"), "item1")),
        generation_key("m1", DecodeParams(), GenerationRequest(chat("describe", system="sys2"), ("a", "b"), "item1")),
        generation_key("m1", DecodeParams(), GenerationRequest(chat("describe", system="sys"), ("b", "a"), "item1")),
        generation_key("m1", DecodeParams(), GenerationRequest(chat("describe", system="sys"), None, "item1")),
        generation_key("m1", DecodeParams(), GenerationRequest(chat("describe", system="sys"), ("a", "b"), "item2")),
    ]
    assert len({base, *variants}) == len(variants) + 1
    # Key material is canonical JSON: message dict order does not matter.
    swapped = GenerationRequest(({"content": "sys", "role": "system"}, {"content": "describe", "role": "user"}), ("a", "b"), "item1")
    assert generation_key("m1", DecodeParams(), swapped) == base


def test_the_answer_key_is_pinned() -> None:
    """Stored answers are found by this key: it must not move (computed before the client changed)."""
    request = GenerationRequest(chat("What colour?", system="One word."), ("red", "blue"), "x")
    assert generation_key("openai:http://h/v1#m", DecodeParams(max_tokens=12), request) == (
        "843170c829445fc1b3696e1e085f4df4f962b525c0dd17280121da91f87ce657")
