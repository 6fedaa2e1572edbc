"""llama.cpp in-process with the real SmolLM2 GGUF: identity, determinism, grammar-constrained choices,
context errors, and the GBNF literals behind the grammar."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from clipclust.errors import InputError
from clipclust.models.llm import (
    CachedGenerator,
    DecodeParams,
    GenerationRequest,
    LlamaCppGenerator,
    MemoryCallStore,
    chat,
    choice_grammar,
    gbnf_literal,
)

from .conftest import COLOURS, colour_request


def test_gbnf_literals_escape_quotes_backslashes_and_newlines() -> None:
    assert gbnf_literal('say "hi"') == '"say \\"hi\\""'
    assert gbnf_literal("a\\b\nc") == '"a\\\\b\\nc"'
    assert choice_grammar(["a", "b c"]) == 'root ::= "a" | "b c"\n'
    with pytest.raises(InputError):
        choice_grammar([])


def test_llama_cpp_identity_is_the_file_hash(smollm2: LlamaCppGenerator, gguf_path: Path) -> None:
    h = hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    assert smollm2.identity == f"llama.cpp:sha256:{h}"
    assert smollm2.name == gguf_path.name


def test_llama_cpp_greedy_is_deterministic(smollm2: LlamaCppGenerator) -> None:
    params = DecodeParams(max_tokens=12)
    r = [GenerationRequest(chat("Name one fruit.")), GenerationRequest(chat("Name one colour."))]
    a = smollm2.generate(r, params)
    smollm2.reset_prompt_cache()
    b = smollm2.generate(list(reversed(r)), params)
    assert a == list(reversed(b))
    assert all(isinstance(t, str) and t for t in a)


def test_llama_cpp_constrained_answers_are_always_a_choice(smollm2: LlamaCppGenerator) -> None:
    things = ["the sky", "grass", "a tomato", "the sea", "a banana", "snow", "coal", "a frog"]
    out = smollm2.generate([colour_request(t) for t in things], DecodeParams(max_tokens=8))
    assert all(o in COLOURS for o in out), out
    tricky = ('say "hi"', "back\\slash", "two words")
    out = smollm2.generate([GenerationRequest(chat("Pick one option."), tricky)], DecodeParams(max_tokens=10))
    assert out[0] in tricky


def test_llama_cpp_context_too_small_names_the_file_and_the_fix(gguf_path: Path) -> None:
    small = LlamaCppGenerator(gguf_path, n_ctx=64, n_threads=1)
    assert small.n_ctx == 256
    try:
        with pytest.raises(InputError, match=r"context window of 256 tokens of .*gguf.*n_ctx"):
            small.generate([GenerationRequest(chat("word " * 600))], DecodeParams(max_tokens=4))
    finally:
        small.close()


def test_llama_cpp_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found: .*missing.gguf"):
        LlamaCppGenerator(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a GGUF file"):
        LlamaCppGenerator(bad)


def test_cached_llama_cpp_rerun_costs_nothing(smollm2: LlamaCppGenerator) -> None:
    store = MemoryCallStore()
    cached = CachedGenerator(smollm2, store)
    batch = [colour_request(t) for t in ("the sky", "grass", "a tomato")]
    first = cached.generate(batch, DecodeParams(max_tokens=8))
    assert cached.last_stats.misses == 3
    assert cached.generate(batch, DecodeParams(max_tokens=8)) == first
    assert cached.last_stats.misses == 0 and cached.last_stats.hits == 3
