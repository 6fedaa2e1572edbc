"""OpenAI-compatible servers (llama.cpp's server, vLLM, Ollama, OpenAI): the official ``openai`` client, with
errors that name the server and say what to do, and calls run with a bounded number in flight.

The client brings timeouts, retries with backoff (connection errors, 408/409/429/5xx) and one connection
pool per server; it is imported on first use, never at start-up.  :class:`ServedModel` is what the text
generator and the describer behind a server share: the client, the served model's name, the identity
and the concurrency.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from clipclust.errors import ClipclustError, InputError
from clipclust.models.llm.requests import DecodeParams, Message

log = logging.getLogger(__name__)

_CHAT_FIELDS = frozenset({"model", "messages", "temperature", "top_p", "max_tokens", "seed", "response_format"})
"""Chat-completion fields the openai client takes by name; any other (llama.cpp's ``grammar``) travels as
an extra body field."""

NO_KEY = "EMPTY"
"""Sent as the API key when none is set: the client needs one, and local servers ignore it."""


class HTTPStatusError(Exception):
    """A server's refusal the callers decide about (a rejected option, a failed call)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def is_context_error(message: str) -> bool:
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


def _message(error: Any) -> str:
    """The server's own words in an error reply (``{"error": {"message"}}``, ``{"detail"}`` or plain text)."""
    body = error.body  # the client already unwrapped {"error": ...}
    if isinstance(body, dict):
        inner = body if "message" in body else body.get("detail", body)
        return str(inner.get("message", json.dumps(inner))) if isinstance(inner, dict) else str(inner)
    return str(body) if body is not None else error.response.text


def _causes(error: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return chain


def _refused(error: BaseException) -> bool:
    return any(isinstance(e, ConnectionRefusedError) for e in _causes(error))


class OpenAIClient:
    """One OpenAI-compatible server: its models, and chat completions that return the answer's text.

    Every failure becomes an :class:`InputError` (a server that is not answering, a refused key, no chat
    endpoint, a prompt too long for its context) or an :class:`HTTPStatusError` the caller decides about.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 600.0,
                 connect_timeout: float = 10.0, retries: int = 3) -> None:
        import openai  # noqa: PLC0415 - 0.4 s of imports, paid only when a server is used

        self.base_url = normalise_base_url(base_url)
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout, self.connect_timeout, self.retries = timeout, connect_timeout, retries
        self._openai = openai.OpenAI(base_url=self.base_url, api_key=self.api_key or NO_KEY,
                                     timeout=openai.Timeout(timeout, connect=connect_timeout), max_retries=retries)

    def _send(self, path: str, call: Callable[[Any], Any], *, patient: bool = True) -> Any:
        """``call(client)`` with the client's retries (none when not ``patient``), its failures explained."""
        import openai  # noqa: PLC0415

        url = self.base_url + path
        try:
            return call(self._openai if patient else self._openai.with_options(max_retries=0))
        except openai.APIStatusError as e:
            status, message = e.status_code, _message(e)
            if status in (401, 403):
                raise InputError(f"{url} refused the request (HTTP {status}: {message[:200]}); "
                                 "set OPENAI_API_KEY to a key the server accepts") from e
            if path.startswith("/chat") and status == 404:
                raise InputError(f"no chat endpoint at {url} (HTTP 404); the base URL should end in /v1, "
                                 "e.g. http://127.0.0.1:8080/v1") from e
            if path.startswith("/chat") and is_context_error(message):
                raise InputError(f"the prompt does not fit the context window of the model at {self.base_url} "
                                 f"({message[:200]}); start the server with a larger context (llama.cpp: -c) "
                                 "or lower max_tokens") from e
            raise HTTPStatusError(status, message) from e
        except openai.APIConnectionError as e:  # timeouts too
            reason = "timed out" if isinstance(e, openai.APITimeoutError) else str(_causes(e)[-1])
            raise InputError(f"LLM server {self.base_url} is not answering ({reason}); start it (e.g. "
                             "llama-server -m FILE.gguf, vllm serve, ollama serve or python -m llama_cpp.server) "
                             "or check the host, port and /v1 path") from e

    def _not_json(self, path: str, reply: Any) -> ClipclustError:
        return ClipclustError(f"{self.base_url}{path} answered with something that is not JSON "
                              f"({str(reply)[:120]!r}); is it an OpenAI-compatible endpoint?")

    def list_models(self) -> list[str]:
        """Model ids the server serves; also the readiness check.

        The first try has no retries, and a refused connection (nothing listens there) fails at once:
        retrying cannot start a server.  Anything else goes through the client's retries.  The listing is
        read as plain JSON: servers differ in what else they put there.
        """
        import openai  # noqa: PLC0415

        def listing(client: Any) -> Any:
            return client.with_options(timeout=self.connect_timeout).get("/models", cast_to=object)

        def patiently() -> Any:
            try:
                return self._send("/models", listing, patient=False)
            except HTTPStatusError as e:
                if e.status == 404:
                    raise
            except InputError as e:
                if not isinstance(e.__cause__, openai.APIConnectionError) or _refused(e):
                    raise
            return self._send("/models", listing)

        try:
            data = patiently()
        except HTTPStatusError as e:
            if e.status == 404:
                return []
            raise ClipclustError(f"{self.base_url}/models failed: HTTP {e.status} {e.message[:200]}") from e
        if not isinstance(data, (dict, list)):
            raise self._not_json("/models", data)
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
        raise InputError(f"{self.base_url} serves several models ({', '.join(models[:8])}); pass one by name")

    def chat(self, payload: dict[str, Any], *, patient: bool = True) -> str:
        """POST /chat/completions and return the first choice's text."""
        known = {k: v for k, v in payload.items() if k in _CHAT_FIELDS}
        extra = {k: v for k, v in payload.items() if k not in _CHAT_FIELDS}
        reply = self._send("/chat/completions",
                           lambda c: c.chat.completions.create(**known, extra_body=extra or None), patient=patient)
        if isinstance(reply, str):
            raise self._not_json("/chat/completions", reply)
        try:
            content = reply.choices[0].message.content
        except (AttributeError, IndexError, TypeError) as e:
            raise ClipclustError(f"{self.base_url}/chat/completions answered without choices: {str(reply)[:200]}") from e
        return content or ""

    def close(self) -> None:
        self._openai.close()


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


class ServedModel:
    """A model behind a server: the client, the served name, ``PREFIX:<base url>#<model>`` as identity (the
    server is trusted to keep serving the same weights under that name) and ``concurrency`` calls in flight.
    Mixed into the text generator and the describer that run on servers."""

    prefix = "openai"
    max_concurrency: int
    name: str

    def __init__(self, base_url: str, model: str | None = None, *, api_key: str | None = None,
                 concurrency: int = 4, timeout: float = 600.0, retries: int = 3) -> None:
        if concurrency < 1:
            raise InputError(f"concurrency must be >= 1, got {concurrency}")
        self.client = OpenAIClient(base_url, api_key=api_key, timeout=timeout, retries=retries)
        try:
            self.model = self.client.resolve_model(model)
        except Exception:
            self.client.close()
            raise
        self.identity = f"{self.prefix}:{self.client.base_url}#{self.model}"
        self.name = f"{self.model} @ {self.client.base_url}"
        self.max_concurrency = concurrency

    def payload(self, messages: Sequence[Message], params: DecodeParams) -> dict[str, Any]:
        """A chat request with the decoding settings (top_p only when sampling: greedy ignores it)."""
        payload: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in messages],
                                   "temperature": params.temperature, "max_tokens": params.max_tokens,
                                   "seed": params.seed}
        if not params.greedy:
            payload["top_p"] = params.top_p
        return payload

    def close(self) -> None:
        self.client.close()
