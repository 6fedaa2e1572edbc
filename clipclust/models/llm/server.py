"""Text generation on OpenAI-compatible servers: constrained answers through whichever structured-output
option the server accepts, ``concurrency`` calls in flight."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from clipclust.errors import ClipclustError, InputError

from clipclust.models.llm.client import DEFAULT_TIMEOUT, HTTPStatusError, ServedModel, pool_iter
from clipclust.models.llm.generator import TextGenerator
from clipclust.models.llm.llama import choice_grammar
from clipclust.models.llm.requests import DecodeParams, GenerationRequest

log = logging.getLogger(__name__)


def _rejects_option(status: int, message: str) -> bool:
    """Whether an error says the server does not accept a structured-output option (llama-cpp-python's
    server answers an unknown ``response_format`` type with a 500 that reports a validation error)."""
    if status in (400, 404, 415, 422, 501):
        return True
    m = message.lower()
    return status == 500 and any(w in m for w in ("validation", "response_format", "json_schema", "grammar"))


CONSTRAINT_STRATEGIES = ("json_schema", "json_object", "grammar", "none")
"""How :class:`OpenAIGenerator` restricts answers: OpenAI ``response_format`` json_schema (vLLM,
llama-server, Ollama, OpenAI), llama-cpp-python's ``json_object`` + ``schema``, a raw GBNF
``grammar`` field (llama.cpp servers), or none (free answer, matched by the caller)."""


def _choice_schema(choices: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": list(choices)}},
        "required": ["answer"],
        "additionalProperties": False,
    }


class OpenAIGenerator(ServedModel, TextGenerator):
    """A chat model behind an OpenAI-compatible server, with ``concurrency`` requests in flight.

    The identity is ``openai:<base url>#<model>``. Constrained requests try the strategies in
    ``constraint`` order ("auto" = json_schema, then json_object) and remember the first one the server
    accepts; if all are rejected, answers are free text (logged once) and the caller's matcher handles
    them.
    """

    prefix = "openai"

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 3,
        notice: Callable[[str], None] | None = None,
        constraint: str = "auto",
        default_params: DecodeParams | None = None,
    ) -> None:
        if constraint != "auto" and constraint not in CONSTRAINT_STRATEGIES:
            raise InputError(
                f"unknown constraint strategy {constraint!r}; choose auto or one of {CONSTRAINT_STRATEGIES}"
            )
        super().__init__(base_url, model, api_key=api_key, concurrency=concurrency, timeout=timeout,
                         retries=retries, notice=notice)
        self.default_params = default_params or DecodeParams()
        self._strategies = ["json_schema", "json_object"] if constraint == "auto" else [constraint]
        self.constraint_strategy: str | None = None if constraint == "auto" else constraint
        self._strategy_lock = threading.Lock()

    @staticmethod
    def _constrain(payload: dict[str, Any], strategy: str, choices: Sequence[str]) -> None:
        if strategy == "json_schema":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "choice", "strict": True, "schema": _choice_schema(choices)},
            }
        elif strategy == "json_object":
            payload["response_format"] = {"type": "json_object", "schema": _choice_schema(choices)}
        elif strategy == "grammar":
            payload["grammar"] = choice_grammar(choices)

    @staticmethod
    def _unwrap(text: str, strategy: str, choices: Sequence[str]) -> str:
        """Turn a constrained reply back into the bare choice (free text stays as it is).

        A JSON reply cut short by ``max_tokens`` is salvaged when its partial value starts exactly
        one choice.
        """
        s = text.strip()
        if strategy in ("json_schema", "json_object"):
            try:
                obj = json.loads(s)
                if isinstance(obj, dict) and isinstance(obj.get("answer"), str):
                    return obj["answer"]
            except ValueError:
                m = re.search(r'"answer"\s*:\s*"((?:[^"\\]|\\.)*)', s)
                if m:
                    try:
                        partial = json.loads(f'"{m.group(1)}"')
                    except ValueError:
                        partial = m.group(1)
                    starts = [c for c in choices if c.startswith(partial)]
                    if partial and len(starts) == 1:
                        return starts[0]
        return s

    def _one(self, request: GenerationRequest, params: DecodeParams) -> str:
        payload = self.payload(request.messages, params)
        if request.choices is None:
            return self.client.chat(payload).strip()
        choices = request.choices
        # The wrapper ({"answer": "..."} and any whitespace the grammar allows) needs room; decoding
        # stops when the JSON closes, so a generous budget costs nothing.
        payload["max_tokens"] = max(params.max_tokens, max(len(c) for c in choices) + 48)
        if self.constraint_strategy is not None:
            strategy = self.constraint_strategy
            p = dict(payload)
            self._constrain(p, strategy, choices)
            return self._unwrap(self.client.chat(p), strategy, choices)
        with self._strategy_lock:  # discover once; concurrent callers wait for the verdict
            if self.constraint_strategy is None:
                for strategy in self._strategies:
                    p = dict(payload)
                    self._constrain(p, strategy, choices)
                    try:  # asked once: a rejected option is a verdict, not a fault to retry
                        text = self.client.chat(p, patient=False)
                    except HTTPStatusError as e:
                        if _rejects_option(e.status, e.message):
                            log.info("%s rejected %s constraints: %s", self.client.base_url, strategy, e)
                            continue
                        try:  # a fault (overload, a gateway): ask again with the client's retries
                            text = self.client.chat(p)
                        except HTTPStatusError as again:
                            raise ClipclustError(f"{self.client.base_url}: {again}") from again
                    self.constraint_strategy = strategy
                    return self._unwrap(text, strategy, choices)
                self.constraint_strategy = "none"
                log.warning(
                    "%s accepts no structured-output option; constrained answers fall back to free "
                    "text matched to the closest choice", self.client.base_url,
                )
        return self._one(request, params)

    def _safe_one(self, request: GenerationRequest, params: DecodeParams) -> str:
        try:
            return self._one(request, params)
        except HTTPStatusError as e:
            raise ClipclustError(f"{self.client.base_url}/chat/completions failed: {e}") from e

    def generate(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> list[str]:
        out: list[str | None] = [None] * len(requests)
        for i, text in self.generate_iter(requests, params):
            out[i] = text
        return [o if o is not None else "" for o in out]

    def generate_iter(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        params = params or self.default_params
        yield from pool_iter(
            [lambda r=r: self._safe_one(r, params) for r in requests], self.max_concurrency
        )
