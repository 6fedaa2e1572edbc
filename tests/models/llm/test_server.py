"""Text generation backends and the call cache: real SmolLM2 through llama.cpp in-process and through
a real llama.cpp server, a tiny self-built transformers LM, and a fake server for error paths."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from clipclust.errors import ClipclustError, InputError
from clipclust.models.llm import (
    CachedGenerator,
    CallStore,
    DecodeParams,
    GenerationRequest,
    LlamaCppGenerator,
    MemoryCallStore,
    OpenAIGenerator,
    TextGenerator,
    TransformersGenerator,
    chat,
    choice_grammar,
    file_sha256,
    gbnf_literal,
    generation_key,
    load_generator,
    normalise_base_url,
    spec_kind,
    LazyGenerator,
    known_identity,
    transformers_source,
)

from ..conftest import chat_reply

MODELS_REPLY = {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


COLOURS = ("red", "green", "blue")


def colour_request(thing: str, constrained: bool = True) -> GenerationRequest:
    return GenerationRequest(
        chat(f"What colour is {thing}? Answer with one word.", system="You answer with one colour."),
        COLOURS if constrained else None,
    )


# ------------------------------------------------------------------------------------------------
# Parameters, requests, keys
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# The call cache with a counting generator
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# File identity
# ------------------------------------------------------------------------------------------------


def test_file_sha256_is_chunked_and_memoised_by_path_size_mtime(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    data = os.urandom(3 * 1024 + 17)
    f.write_bytes(data)
    assert file_sha256(f, chunk_size=1000) == hashlib.sha256(data).hexdigest()
    st = f.stat()
    # Same size and mtime: the memo answers without reading (the identity of an unchanged file).
    f.write_bytes(bytes(len(data)))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_sha256(f) == hashlib.sha256(data).hexdigest()
    # A touched file is hashed again.
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert file_sha256(f) == hashlib.sha256(bytes(len(data))).hexdigest()
    memo = Path(os.environ["CLIPCLUST_HASH_MEMO"])
    assert hashlib.sha256(bytes(len(data))).hexdigest() in json.loads(memo.read_text()).values()


# ------------------------------------------------------------------------------------------------
# Grammar
# ------------------------------------------------------------------------------------------------


def test_gbnf_literals_escape_quotes_backslashes_and_newlines() -> None:
    assert gbnf_literal('say "hi"') == '"say \\"hi\\""'
    assert gbnf_literal("a\\b\nc") == '"a\\\\b\\nc"'
    assert choice_grammar(["a", "b c"]) == 'root ::= "a" | "b c"\n'
    with pytest.raises(InputError):
        choice_grammar([])


# ------------------------------------------------------------------------------------------------
# llama.cpp in-process (real SmolLM2)
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# Factory
# ------------------------------------------------------------------------------------------------


def test_spec_kind_and_factory_dispatch(gguf_path: Path, tmp_path: Path, tiny_causal_lm_dir: Path) -> None:
    assert spec_kind(gguf_path) == "gguf"
    assert spec_kind("http://127.0.0.1:8080/v1") == "http"
    assert spec_kind("hf:HuggingFaceTB/SmolLM2-135M-Instruct") == "transformers"
    assert spec_kind(tiny_causal_lm_dir) == "transformers"
    with pytest.raises(InputError, match="cannot tell what model"):
        spec_kind(tmp_path / "nothing-here")
    gen = load_generator(gguf_path, n_ctx=512, n_threads=1, concurrency=8, device="cpu")  # foreign options ignored
    try:
        assert isinstance(gen, LlamaCppGenerator) and gen.n_ctx == 512
    finally:
        gen.close()
    with pytest.raises(InputError, match="not answering"):
        load_generator(f"http://127.0.0.1:{free_port()}/v1", retries=0)


def test_base_url_normalisation() -> None:
    assert normalise_base_url("http://h:1") == "http://h:1/v1"
    assert normalise_base_url("http://h:1/v1/") == "http://h:1/v1"
    assert normalise_base_url("https://api.example.com/openai/v1") == "https://api.example.com/openai/v1"
    with pytest.raises(InputError):
        normalise_base_url("127.0.0.1:8080")


# ------------------------------------------------------------------------------------------------
# transformers (tiny self-built Llama)
# ------------------------------------------------------------------------------------------------


def test_transformers_generator_deterministic_and_constrained(tiny_causal_lm_dir: Path) -> None:
    gen = load_generator(tiny_causal_lm_dir, device="cpu")
    assert isinstance(gen, TransformersGenerator)
    assert gen.identity.startswith("transformers:dir:sha256:")
    free = [GenerationRequest(chat("describe the cat")), GenerationRequest(chat("describe the red car"))]
    a = gen.generate(free, DecodeParams(max_tokens=6))
    assert a == gen.generate(free, DecodeParams(max_tokens=6))
    choices = ("cat", "red car", "blue ship")
    out = gen.generate(
        [GenerationRequest(chat(f"describe the {w}"), choices) for w in ("cat", "dog", "bird", "car")],
        DecodeParams(max_tokens=6),
    )
    assert all(o in choices for o in out), out
    assert load_generator(tiny_causal_lm_dir, device="cpu").identity == gen.identity


# ------------------------------------------------------------------------------------------------
# OpenAI-compatible: a real llama.cpp server with SmolLM2
# ------------------------------------------------------------------------------------------------


def test_server_generation_constraints_concurrency_and_cache(llama_server: str) -> None:
    gen = OpenAIGenerator(llama_server, concurrency=2)
    assert gen.model == "smollm2"  # the server's only model, discovered
    assert gen.identity == f"openai:{llama_server}#smollm2"
    params = DecodeParams(max_tokens=12)
    things = ["the sky", "grass", "a tomato", "the sea"]
    constrained = gen.generate([colour_request(t) for t in things], params)
    assert all(o in COLOURS for o in constrained), constrained
    # llama-cpp-python's server rejects OpenAI's json_schema type and takes json_object + schema.
    assert gen.constraint_strategy in ("json_schema", "json_object")
    free = [colour_request(t, constrained=False) for t in things]
    parallel = gen.generate(free, params)
    sequential = OpenAIGenerator(llama_server, "smollm2", concurrency=1).generate(free, params)
    assert parallel == sequential and all(parallel)
    store = MemoryCallStore()
    cached = CachedGenerator(gen, store)
    cached.generate(free, params)
    assert cached.generate(free, params) == cached.generate(free, params)
    assert cached.last_stats.misses == 0


def test_server_context_overflow_is_an_input_error(llama_server: str) -> None:
    gen = OpenAIGenerator(llama_server, retries=0)
    with pytest.raises(InputError, match="context"):
        gen.generate([GenerationRequest(chat("word " * 3000))], DecodeParams(max_tokens=4))


# ------------------------------------------------------------------------------------------------
# OpenAI-compatible: scripted fake server for the paths a real server will not show on demand
# ------------------------------------------------------------------------------------------------


def test_constraint_strategy_falls_back_to_free_text(fake_server: Any) -> None:
    def handler(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if path.endswith("/models"):
            return 200, MODELS_REPLY
        if body and "response_format" in body:
            return 422, {"detail": "response_format not supported"}
        return 200, chat_reply("Answer: Blue.")

    srv = fake_server(handler)
    gen = OpenAIGenerator(srv.url, concurrency=3)
    out = gen.generate([colour_request("the sea"), colour_request("the sky")])
    assert out == ["Answer: Blue.", "Answer: Blue."]  # free text: the caller's matcher decides
    assert gen.constraint_strategy == "none"
    kinds = [b["response_format"]["type"] for _, p, b in srv.requests if b and "response_format" in b]
    assert kinds == ["json_schema", "json_object"]  # each tried once, then remembered


def test_json_schema_answers_are_unwrapped_and_sent_with_the_enum(fake_server: Any) -> None:
    def handler(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if path.endswith("/models"):
            return 200, MODELS_REPLY
        return 200, chat_reply(json.dumps({"answer": "green"}))

    srv = fake_server(handler)
    gen = OpenAIGenerator(srv.url, api_key="sk-test")
    assert gen.generate([colour_request("grass")]) == ["green"]
    body = srv.requests[-1][2]
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["answer"]["enum"] == list(COLOURS)
    assert body["temperature"] == 0 and body["seed"] == 0 and "top_p" not in body


def test_transient_errors_are_retried_and_auth_errors_explained(fake_server: Any) -> None:
    state = {"n": 0}

    def flaky(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if path.endswith("/models"):
            return 200, MODELS_REPLY
        state["n"] += 1
        return (503, {"error": {"message": "loading"}}) if state["n"] < 3 else (200, chat_reply("ok"))

    gen = OpenAIGenerator(fake_server(flaky).url, retries=3)
    assert gen.generate([GenerationRequest(chat("hi"))]) == ["ok"] and state["n"] == 3

    def denied(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        return 401, {"error": {"message": "invalid api key"}}

    with pytest.raises(InputError, match="OPENAI_API_KEY"):
        OpenAIGenerator(fake_server(denied).url, model="m")

    def broken(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        return (200, MODELS_REPLY) if path.endswith("/models") else (400, {"error": {"message": "bad request"}})

    with pytest.raises(ClipclustError, match="bad request"):
        OpenAIGenerator(fake_server(broken).url).generate([GenerationRequest(chat("hi"))])


def test_several_served_models_need_a_name(fake_server: Any) -> None:
    two = {"data": [{"id": "a"}, {"id": "b"}]}
    srv = fake_server(lambda m, p, b: (200, two) if p.endswith("/models") else (200, chat_reply("x")))
    with pytest.raises(InputError, match="several models"):
        OpenAIGenerator(srv.url)
    assert OpenAIGenerator(srv.url, "b").identity.endswith("#b")


# ------------------------------------------------------------------------------------------------
# Identity without loading, lazy loading, hub identity before and after download
# ------------------------------------------------------------------------------------------------


def test_lazy_gguf_generator_knows_its_identity_and_loads_on_the_first_call(
    gguf_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clipclust.models.llm as llm

    loads: list[Any] = []
    real = llm.load_llama
    monkeypatch.setattr(llm.llama, "load_llama", lambda *a, **k: loads.append(a) or real(*a, **k))
    gen = load_generator(gguf_path, lazy=True, n_ctx=512, n_threads=1)
    assert isinstance(gen, LazyGenerator) and not gen.loaded
    assert gen.identity == f"llama.cpp:sha256:{llm.file_sha256(gguf_path)}" and loads == []
    assert known_identity(gguf_path) == gen.identity
    cached = CachedGenerator(gen, MemoryCallStore({CachedGenerator(gen, MemoryCallStore()).key(
        GenerationRequest(chat("Say hi."))): "hi"}))
    assert cached.generate([GenerationRequest(chat("Say hi."))]) == ["hi"] and loads == []  # all cached
    try:
        assert len(gen.generate([GenerationRequest(chat("Say hi."))], DecodeParams(max_tokens=2))) == 1
        assert gen.loaded and len(loads) == 1
        assert gen._inner is not None and gen._inner.identity == gen.identity
    finally:
        gen.close()


def _fake_hub_snapshot(cache: Path, repo: str, commit: str, model_dir: Path) -> None:
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in model_dir.iterdir():
        if f.is_file():
            (snap / f.name).write_bytes(f.read_bytes())
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)


def test_hub_identity_is_the_snapshot_commit_before_and_after_download(
    tmp_path: Path, tiny_causal_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert transformers_source("hf:org/tiny") == ("org/tiny", None)  # not downloaded: unknown, never "@main"
    assert known_identity("hf:org/tiny") is None
    commit = "0123456789abcdef0123456789abcdef01234567"
    _fake_hub_snapshot(tmp_path / "hub", "org/tiny", commit, tiny_causal_lm_dir)
    assert transformers_source("hf:org/tiny") == ("org/tiny", f"hf:org/tiny@{commit}")
    ident = known_identity("hf:org/tiny")
    assert ident is not None and ident.startswith(f"transformers:hf:org/tiny@{commit}")
    direct = known_identity(tiny_causal_lm_dir)
    loaded = load_generator(tiny_causal_lm_dir, device="cpu")
    try:
        assert direct == loaded.identity  # the same identity with and without loading
    finally:
        loaded.close()
