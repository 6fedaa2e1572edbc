"""The client of OpenAI-compatible servers (the official ``openai`` package underneath): base URLs, the
key, and every failure as one line that names the server and says what to do."""

from __future__ import annotations

import time
from typing import Any

import pytest

from clipclust.errors import ClipclustError, InputError
from clipclust.models.llm import OpenAIClient, normalise_base_url

from ..conftest import chat_reply, free_port
from .conftest import MODELS_REPLY

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def test_base_url_normalisation() -> None:
    assert normalise_base_url("http://h:1") == "http://h:1/v1"
    assert normalise_base_url("http://h:1/v1/") == "http://h:1/v1"
    assert normalise_base_url("https://api.example.com/openai/v1") == "https://api.example.com/openai/v1"
    with pytest.raises(InputError):
        normalise_base_url("127.0.0.1:8080")


def test_a_server_that_is_not_started_fails_at_once_in_one_line() -> None:
    client = OpenAIClient(f"http://127.0.0.1:{free_port()}", retries=3)
    started = time.perf_counter()
    with pytest.raises(InputError, match=r"LLM server http://127\.0\.0\.1:\d+/v1 is not answering \(.*refused\)") as caught:
        client.list_models()
    assert time.perf_counter() - started < 1.0  # no retries: nothing listens there
    assert "\n" not in str(caught.value) and "--" not in str(caught.value)


def test_a_server_too_slow_to_answer_times_out(fake_server: Any) -> None:
    srv = fake_server(lambda m, p, b: (time.sleep(1.0), (200, chat_reply("late")))[1])
    with pytest.raises(InputError, match="sent no answer within 0.2 s"):
        OpenAIClient(srv.url, timeout=0.2, retries=0).chat(CHAT)


def test_the_key_is_sent_when_set_and_a_placeholder_otherwise(fake_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = fake_server(lambda m, p, b: (200, MODELS_REPLY) if p.endswith("/models") else (200, chat_reply(" ok ")))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert OpenAIClient(srv.url).chat(CHAT) == " ok "
    assert srv.headers[-1]["authorization"] == "Bearer EMPTY"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    OpenAIClient(srv.url).list_models()
    assert srv.headers[-1]["authorization"] == "Bearer sk-env"
    OpenAIClient(srv.url, api_key="sk-given").list_models()
    assert srv.headers[-1]["authorization"] == "Bearer sk-given"


def test_extra_fields_travel_in_the_body(fake_server: Any) -> None:
    srv = fake_server(lambda m, p, b: (200, chat_reply("a")))
    OpenAIClient(srv.url).chat({**CHAT, "grammar": 'root ::= "a"', "response_format": {"type": "json_object", "schema": {"x": 1}}})
    body = srv.requests[-1][2]
    assert body["grammar"] == 'root ::= "a"' and body["response_format"] == {"type": "json_object", "schema": {"x": 1}}
    assert body["messages"] == CHAT["messages"] and body["max_tokens"] == 4


def test_what_is_not_an_openai_endpoint_says_so(fake_server: Any) -> None:
    page = fake_server(lambda m, p, b: (200, b"<html>router login</html>"))
    with pytest.raises(ClipclustError, match="/models answered with something that is not JSON.*router login"):
        OpenAIClient(page.url).list_models()
    with pytest.raises(ClipclustError, match="/chat/completions answered with something that is not JSON"):
        OpenAIClient(page.url).chat(CHAT)
    empty = fake_server(lambda m, p, b: (200, {"object": "chat.completion"}))
    with pytest.raises(ClipclustError, match="answered without choices"):
        OpenAIClient(empty.url).chat(CHAT)
    missing = fake_server(lambda m, p, b: (404, {"error": {"message": "no route"}}))
    assert OpenAIClient(missing.url).list_models() == []  # a server without a model list
    with pytest.raises(InputError, match="no chat endpoint at .*/chat/completions \\(HTTP 404\\); the base URL should end in /v1"):
        OpenAIClient(missing.url).chat(CHAT)
