"""OpenAI-compatible HTTP servers: client, retries, structured-output negotiation, concurrency."""

from __future__ import annotations

import logging
import json
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from clipclust.errors import ClipclustError, InputError

from clipclust.models.llm.generator import TextGenerator
from clipclust.models.llm.llama import choice_grammar
from clipclust.models.llm.requests import DecodeParams, GenerationRequest

log = logging.getLogger(__name__)


class HTTPStatusError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def _retryable(status: int, message: str) -> bool:
    """Overload and gateway errors are transient; a 500 that reports a request validation error (how
    llama-cpp-python's server rejects unknown options) is not."""
    if status in (429, 502, 503, 504):
        return True
    return status == 500 and "validation" not in message.lower()


def _rejects_option(status: int, message: str) -> bool:
    """Whether an error says the server does not accept a structured-output option."""
    if status in (400, 404, 415, 422, 501):
        return True
    m = message.lower()
    return status == 500 and any(w in m for w in ("validation", "response_format", "json_schema", "grammar"))


def _is_context_error(message: str) -> bool:
    m = message.lower()
    return "context" in m and any(w in m for w in ("length", "exceed", "too long", "n_ctx", "window"))


def normalise_base_url(url: str) -> str:
    """``http://host:port`` -> ``http://host:port/v1``; a given path is kept (no trailing slash)."""
    parsed = urllib.parse.urlparse(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InputError(f"not an http(s) URL: {url!r} (expected e.g. http://127.0.0.1:8080/v1)")
    path = parsed.path.rstrip("/")
    if not path:
        path = "/v1"
    return urllib.parse.urlunparse((parsed.scheme, parsed.netloc, path, "", "", ""))


class OpenAIClient:
    """Minimal JSON client for an OpenAI-compatible API (stdlib only: no new dependencies).

    Transient failures (connection resets, HTTP 429/5xx) are retried with backoff; everything else
    becomes an :class:`InputError` or :class:`ClipclustError` that names the URL and what to do.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        retries: int = 3,
    ) -> None:
        self.base_url = normalise_base_url(base_url)
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retries = retries

    def _request(self, method: str, path: str, payload: Any | None, timeout: float) -> Any:
        url = self.base_url + path
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        attempt = 0
        while True:
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    body = resp.read()
                try:
                    return json.loads(body)
                except ValueError as e:
                    raise ClipclustError(
                        f"{url} answered with something that is not JSON ({body[:120]!r}); is it an "
                        "OpenAI-compatible endpoint?"
                    ) from e
            except urllib.error.HTTPError as e:
                raw = e.read().decode("utf-8", "replace")
                message = raw
                try:
                    err = json.loads(raw)
                    if isinstance(err, dict):
                        inner = err.get("error", err.get("detail", err))
                        message = inner.get("message", json.dumps(inner)) if isinstance(inner, dict) else str(inner)
                except ValueError:
                    pass
                if _retryable(e.code, message) and attempt < self.retries:
                    attempt += 1
                    time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
                    continue
                if e.code in (401, 403):
                    raise InputError(
                        f"{url} refused the request (HTTP {e.code}: {message[:200]}); "
                        "set OPENAI_API_KEY to a key the server accepts"
                    ) from e
                if e.code == 404 and path.startswith("/chat"):
                    raise InputError(
                        f"no chat endpoint at {url} (HTTP 404); the base URL should end in /v1, "
                        "e.g. http://127.0.0.1:8080/v1"
                    ) from e
                raise HTTPStatusError(e.code, message) from e
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
                reason = getattr(e, "reason", e)
                if attempt < self.retries and not isinstance(reason, ConnectionRefusedError):
                    attempt += 1
                    time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
                    continue
                raise InputError(
                    f"LLM server {self.base_url} is not answering ({reason}); start it (e.g. "
                    "python -m llama_cpp.server --model FILE.gguf, llama-server, vllm serve, "
                    "ollama serve) or check the host, port and /v1 path"
                ) from e

    def get(self, path: str) -> Any:
        return self._request("GET", path, None, self.connect_timeout)

    def post(self, path: str, payload: Any) -> Any:
        return self._request("POST", path, payload, self.timeout)

    def list_models(self) -> list[str]:
        """Model ids the server serves (also the readiness check)."""
        try:
            data = self.get("/models")
        except HTTPStatusError as e:
            if e.status == 404:
                return []
            raise ClipclustError(f"{self.base_url}/models failed: HTTP {e.status} {e.message[:200]}") from e
        items = data.get("data", []) if isinstance(data, dict) else []
        return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]

    def resolve_model(self, model: str | None) -> str:
        """The model name to send: the given one, or the server's only model."""
        models = self.list_models()
        if model:
            if models and model not in models:
                log.warning("%s does not list model %r (it lists %s)", self.base_url, model, models)
            return model
        if len(models) == 1:
            return models[0]
        if not models:
            raise InputError(f"{self.base_url} lists no models; pass the model name explicitly")
        raise InputError(
            f"{self.base_url} serves several models ({', '.join(models[:8])}); pass one by name"
        )

    def chat(self, payload: dict[str, Any]) -> str:
        """POST /chat/completions and return the first choice's text."""
        try:
            data = self.post("/chat/completions", payload)
        except HTTPStatusError as e:
            if _is_context_error(e.message):
                raise InputError(
                    f"the prompt does not fit the context window of the model at {self.base_url} "
                    f"({e.message[:200]}); start the server with a larger context (llama.cpp: -c / "
                    "--n_ctx) or lower max_tokens"
                ) from e
            raise
        try:
            content = data["choices"][0]["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise ClipclustError(
                f"{self.base_url}/chat/completions answered without choices: {str(data)[:200]}"
            ) from e
        return content or ""


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


class OpenAIGenerator(TextGenerator):
    """A chat model behind an OpenAI-compatible server, with ``concurrency`` requests in flight.

    The identity is ``openai:<base url>#<model>``: the server is trusted to keep serving the same
    weights under that name. Constrained requests try the strategies in ``constraint`` order
    ("auto" = json_schema, then json_object) and remember the first one the server accepts; if all
    are rejected, answers are free text (logged once) and the caller's matcher handles them.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout: float = 600.0,
        retries: int = 3,
        constraint: str = "auto",
        default_params: DecodeParams | None = None,
    ) -> None:
        if concurrency < 1:
            raise InputError(f"concurrency must be >= 1, got {concurrency}")
        if constraint != "auto" and constraint not in CONSTRAINT_STRATEGIES:
            raise InputError(
                f"unknown constraint strategy {constraint!r}; choose auto or one of {CONSTRAINT_STRATEGIES}"
            )
        self.client = OpenAIClient(base_url, api_key=api_key, timeout=timeout, retries=retries)
        self.model = self.client.resolve_model(model)
        self.identity = f"openai:{self.client.base_url}#{self.model}"
        self.name = f"{self.model} @ {self.client.base_url}"
        self.max_concurrency = concurrency
        self.default_params = default_params or DecodeParams()
        self._strategies = ["json_schema", "json_object"] if constraint == "auto" else [constraint]
        self.constraint_strategy: str | None = None if constraint == "auto" else constraint
        self._strategy_lock = threading.Lock()

    def _payload(self, request: GenerationRequest, params: DecodeParams) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in request.messages],
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
            "seed": params.seed,
        }
        if not params.greedy:
            payload["top_p"] = params.top_p
        return payload

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
        payload = self._payload(request, params)
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
                    try:
                        text = self.client.chat(p)
                    except HTTPStatusError as e:
                        if _rejects_option(e.status, e.message) and not _is_context_error(e.message):
                            log.info("%s rejected %s constraints: %s", self.client.base_url, strategy, e)
                            continue
                        raise ClipclustError(f"{self.client.base_url}: {e}") from e
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


def pool_iter(calls: Sequence[Callable[[], str]], concurrency: int) -> Iterator[tuple[int, str]]:
    """Run calls with at most ``concurrency`` in flight; yield ``(index, result)`` as they finish.

    Only ``concurrency`` calls are ever submitted ahead, so an interruption (or an error) leaves at
    most that many in flight and starts nothing new.
    """
    if concurrency <= 1 or len(calls) <= 1:
        for i, c in enumerate(calls):
            yield i, c()
        return
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="clipclust-llm")
    pending: dict[Future[str], int] = {}
    nxt = 0
    try:
        while nxt < len(calls) or pending:
            while nxt < len(calls) and len(pending) < concurrency:
                pending[pool.submit(calls[nxt])] = nxt
                nxt += 1
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=lambda f: pending[f]):
                i = pending.pop(fut)
                yield i, fut.result()
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
