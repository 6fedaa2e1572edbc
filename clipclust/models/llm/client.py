"""OpenAI-compatible servers (llama.cpp's server, vLLM, Ollama, OpenAI): the official ``openai`` client, with
errors that name the server and say what to do, and calls run with a bounded number in flight.

The client brings the connection pool; retries with backoff (dropped connections, 408/409/429/5xx) are
done here, so that a request the server did not answer within ``timeout`` is never sent again (a stuck
server would cost the timeout once per retry) and a host that does not accept the connection fails at
once.  ``notice`` hears, once each, that a request has waited 30 s (or half its timeout) and that an
answer ran far past ``max_tokens`` (it is cut: a server that ignores the limit must not fill the
workspace).  The client is imported on first use, never at start-up.  :class:`ServedModel` is what the text
generator and the describer behind a server share: the client, the served model's name, the identity
and the concurrency.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from clipclust.errors import ClipclustError, InputError, opt
from clipclust.models.llm.requests import DecodeParams, Message

log = logging.getLogger(__name__)

_CHAT_FIELDS = frozenset({"model", "messages", "temperature", "top_p", "max_tokens", "seed", "response_format"})
"""Chat-completion fields the openai client takes by name; any other (llama.cpp's ``grammar``) travels as
an extra body field."""

NO_KEY = "EMPTY"
"""Sent as the API key when none is set: the client needs one, and local servers ignore it."""

DEFAULT_TIMEOUT = 300.0
"""Seconds a request may wait for its answer: ten times a slow answer (a 7B VLM describing an image on a
CPU server takes about 30 s), so only a server that stopped answering reaches it."""

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
CHARS_PER_TOKEN, MIN_ANSWER_CHARS = 32, 4096  # an answer past max_tokens x 32 characters ignored max_tokens
SLOW_NOTICE = 30.0  # seconds a request waits before ``notice`` hears of it (half the timeout when shorter)


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


def _unreachable(error: BaseException) -> bool:
    """Nothing will answer at that address soon: refused, no connection within the connect timeout, an
    unknown host.  Retrying cannot help, so these fail at once."""
    return _refused(error) or any(type(e).__name__ == "ConnectTimeout" or isinstance(e, OSError) and
                                  e.errno in (-2, -3, -5, 101, 113) for e in _causes(error))


def _pause(attempt: int) -> None:
    """The wait before try ``attempt + 2``: 0.5 s, doubling, at most 8 s (the openai client's own backoff)."""
    time.sleep(min(8.0, 0.5 * 2 ** attempt))


class _Retry(Exception):
    """A failure worth another try (a dropped connection, an overloaded server); ``error`` is what the
    caller gets when the tries run out."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class OpenAIClient:
    """One OpenAI-compatible server: its models, and chat completions that return the answer's text.

    Every failure becomes an :class:`InputError` (a server that is not answering, a refused key, no chat
    endpoint, a prompt too long for its context) or an :class:`HTTPStatusError` the caller decides about.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float = 5.0, retries: int = 3,
                 notice: Callable[[str], None] | None = None) -> None:
        import openai  # noqa: PLC0415 - 0.4 s of imports, paid only when a server is used

        if not 0 < timeout < float("inf"):
            raise InputError(f"{timeout}: expected a number of seconds above 0", option="timeout")
        self.base_url = normalise_base_url(base_url)
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        connect_timeout = min(connect_timeout, timeout)
        self.timeout, self.connect_timeout, self.retries = timeout, connect_timeout, retries
        self.notice, self._told = notice, set()
        self._openai = openai.OpenAI(base_url=self.base_url, api_key=self.api_key or NO_KEY,
                                     timeout=openai.Timeout(timeout, connect=connect_timeout), max_retries=0)

    def _tell(self, kind: str, message: str) -> None:
        if self.notice is not None and kind not in self._told:
            self._told.add(kind)
            self.notice(message)

    def _slow(self, path: str) -> threading.Timer | None:
        """A timer that tells ``notice`` (once per client) that a request is still waiting."""
        if self.notice is None or "slow" in self._told:
            return None
        after = min(SLOW_NOTICE, self.timeout / 2)
        timer = threading.Timer(after, self._tell, ("slow", f"{self.base_url}{path} has not answered for {after:g} "
                                                    f"s; waiting up to {self.timeout:g} s (the timeout setting) "
                                                    "before giving up"))
        timer.daemon = True
        timer.start()
        return timer

    def _send(self, path: str, call: Callable[[Any], Any], *, patient: bool = True, limit: float | None = None) -> Any:
        """``call(client)``, tried again after a dropped connection or a 408/409/429/5xx (``retries`` times
        with backoff, none when not ``patient``); never after a timeout (``limit``, when the call sets a
        shorter one than the client's); its failures explained."""
        tries = 1 + (self.retries if patient else 0)
        for attempt in range(tries):
            timer = self._slow(path)
            try:
                return self._explained(path, lambda: call(self._openai), limit or self.timeout)
            except _Retry as again:
                if attempt + 1 >= tries:
                    raise again.error from again.error.__cause__
                _pause(attempt)
            finally:
                if timer is not None:
                    timer.cancel()
        raise AssertionError("unreachable")  # pragma: no cover

    def _explained(self, path: str, call: Callable[[], Any], limit: float) -> Any:
        """``call()`` with its failure as an error that names the server and says what to do; a failure
        worth another try comes wrapped in :class:`_Retry`."""
        import openai  # noqa: PLC0415

        url = self.base_url + path
        try:
            return call()
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
            error = HTTPStatusError(status, message)
            error.__cause__ = e
            if status in RETRY_STATUS:
                raise _Retry(error) from e
            raise error from e
        except openai.APIConnectionError as e:  # timeouts too
            if isinstance(e, openai.APITimeoutError) and not _unreachable(e):
                raise InputError(f"{url} sent no answer within {limit:g} s; the server may be stuck or "
                                 f"overloaded: check it, or allow longer with {opt('timeout')}") from e
            reason = f"no connection within {self.connect_timeout:g} s" if isinstance(e, openai.APITimeoutError) \
                else str(_causes(e)[-1])
            error = InputError(f"LLM server {self.base_url} is not answering ({reason}); start it (e.g. "
                               "llama-server -m FILE.gguf, vllm serve, ollama serve or python -m llama_cpp.server) "
                               "or check the host, port and /v1 path")
            error.__cause__ = e
            if _unreachable(e):
                raise error from e
            raise _Retry(error) from e

    def _not_json(self, path: str, reply: Any) -> ClipclustError:
        return ClipclustError(f"{self.base_url}{path} answered with something that is not JSON "
                              f"({str(reply)[:120]!r}); is it an OpenAI-compatible endpoint?")

    def list_models(self) -> list[str]:
        """Model ids the server serves; also the readiness check.

        An address where nothing answers fails at once (:meth:`_send`: retrying cannot start a server);
        a server still loading its model (503) is asked again.  The listing is read as plain JSON: servers
        differ in what else they put there.
        """
        def listing(client: Any) -> Any:
            return client.with_options(timeout=self.connect_timeout).get("/models", cast_to=object)

        try:
            data = self._send("/models", listing, limit=self.connect_timeout)
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
        content = (content or "").replace("\0", "")  # no meaning in text, and the workspace's strings refuse it
        limit = max(MIN_ANSWER_CHARS, CHARS_PER_TOKEN * int(payload.get("max_tokens") or 0))
        if content and len(content) > limit:
            self._tell("long", f"{self.base_url} sent an answer of {len(content):,} characters for at most "
                               f"{payload.get('max_tokens')} tokens; answers are cut at {limit:,} characters")
            content = content[:limit]
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
                 concurrency: int = 4, timeout: float = DEFAULT_TIMEOUT, retries: int = 3,
                 notice: Callable[[str], None] | None = None) -> None:
        if concurrency < 1:
            raise InputError(f"concurrency must be >= 1, got {concurrency}")
        self.client = OpenAIClient(base_url, api_key=api_key, timeout=timeout, retries=retries, notice=notice)
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


def tell_slow(model: Any, notice: Callable[[str], None]) -> None:
    """Have a model behind a server tell ``notice`` when a request is slow (other models: nothing to do)."""
    if isinstance(model, ServedModel) and model.client.notice is None:
        model.client.notice = notice
