"""Text generation on OpenAI-compatible servers: a real llama.cpp server with SmolLM2, and a scripted fake
server for the paths a real server will not show on demand."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from clipclust.errors import ClipclustError, InputError
from clipclust.models.llm import (
    CachedGenerator,
    DecodeParams,
    GenerationRequest,
    MemoryCallStore,
    OpenAIGenerator,
    chat,
)

from ..conftest import chat_reply
from .conftest import COLOURS, MODELS_REPLY, colour_request


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


def test_a_rejected_option_is_asked_once_and_a_fault_is_retried(fake_server: Any) -> None:
    """llama-cpp-python's server rejects json_schema with a 500 "validation error": a verdict, not a fault,
    so it is not retried; an overloaded server's 503 during the same discovery is."""
    def validating(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if path.endswith("/models"):
            return 200, MODELS_REPLY
        if body["response_format"]["type"] == "json_schema":
            return 500, {"error": {"message": "1 validation error: Input should be 'text' or 'json_object'"}}
        return 200, chat_reply(json.dumps({"answer": "blue"}))

    srv = fake_server(validating)
    gen = OpenAIGenerator(srv.url, retries=3)
    started = time.perf_counter()
    assert gen.generate([colour_request("the sea")]) == ["blue"] and gen.constraint_strategy == "json_object"
    assert time.perf_counter() - started < 1.5  # no backoff spent on the verdict (three retries: > 2.5 s)
    assert [b["response_format"]["type"] for _, p, b in srv.requests if b] == ["json_schema", "json_object"]

    busy = {"n": 0}

    def overloaded_once(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if path.endswith("/models"):
            return 200, MODELS_REPLY
        busy["n"] += 1
        return (503, {"error": {"message": "busy"}}) if busy["n"] == 1 else (200, chat_reply('{"answer": "red"}'))

    gen = OpenAIGenerator(fake_server(overloaded_once).url, retries=3)
    assert gen.generate([colour_request("a tomato")]) == ["red"] and gen.constraint_strategy == "json_schema"
