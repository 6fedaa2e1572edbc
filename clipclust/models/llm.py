"""Text generation behind one small interface, plus a call cache.

Methods (IC|TC steps 2a, 2b, 3) only see :class:`TextGenerator`: a list of chat requests in, one
string per request out. Backends: a GGUF file through llama-cpp-python, an OpenAI-compatible HTTP
server (llama.cpp's server, vLLM, Ollama: how users scale out), and transformers causal LMs.

:class:`CachedGenerator` wraps any backend so that every call is looked up in a :class:`CallStore`
by a key that covers everything the answer depends on (model identity, decoding parameters, the full
messages, the constraint and the input id). Re-running costs nothing, editing one step's prompt
recomputes only that step, and each finished call is stored at once so that an interruption loses
only the calls in flight.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from clipclust.errors import ClipclustError, InputError

log = logging.getLogger(__name__)

Message = dict[str, Any]
"""One chat message: ``{"role": "system"|"user"|"assistant", "content": str | list[part]}``."""

KEY_VERSION = 1
"""Bumped when the key layout changes, so old cache entries are never misread."""


# --------------------------------------------------------------------------------------------------
# Requests, decoding parameters, keys
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeParams:
    """Decoding settings. Greedy (temperature 0) and seeded by default so re-runs agree.

    ``top_p`` only matters when ``temperature > 0``. ``seed`` makes sampling reproducible on
    backends that honour it (llama.cpp, transformers, most servers).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise InputError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise InputError(f"max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        """The fields that enter cache keys; top_p is normalised away for greedy decoding."""
        d = asdict(self)
        if self.greedy:
            d["top_p"] = 1.0
        return d


@dataclass(frozen=True)
class GenerationRequest:
    """One model call: chat messages, optionally restricted to a list of allowed answers.

    With ``choices`` the backend returns exactly one of them when it can constrain decoding
    (llama.cpp grammar, server JSON schema, transformers token trie); a backend that cannot falls
    back to a free answer which the caller must match. ``input_id`` names the item the call is about
    (an image hash for the VLM) and enters the cache key; text requests usually leave it ``None``
    because their messages already contain the whole input.
    """

    messages: tuple[Message, ...]
    choices: tuple[str, ...] | None = None
    input_id: str | None = None

    def __post_init__(self) -> None:
        if not self.messages:
            raise InputError("a generation request needs at least one message")
        object.__setattr__(self, "messages", tuple(self.messages))
        if self.choices is not None:
            choices = tuple(dict.fromkeys(str(c) for c in self.choices))
            if not choices or any(not c for c in choices):
                raise InputError("constraint choices must be non-empty strings")
            object.__setattr__(self, "choices", choices)


def chat(user: str, system: str | None = None) -> tuple[Message, ...]:
    """Messages for the common case: optional system instruction, one user turn."""
    msgs: list[Message] = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": user})
    return tuple(msgs)


def canonical_key(payload: Mapping[str, Any]) -> str:
    """sha256 of canonical JSON (sorted keys, no whitespace, UTF-8): stable across runs/platforms."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def generation_key(identity: str, params: DecodeParams, request: GenerationRequest) -> str:
    """Cache key of one text call."""
    return canonical_key(
        {
            "v": KEY_VERSION,
            "kind": "chat",
            "model": identity,
            "params": params.to_dict(),
            "messages": list(request.messages),
            "choices": list(request.choices) if request.choices is not None else None,
            "input": request.input_id,
        }
    )


# --------------------------------------------------------------------------------------------------
# File identity
# --------------------------------------------------------------------------------------------------

_HASH_MEMO: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def _hash_memo_path() -> Path | None:
    """Where file hashes persist between runs; ``CLIPCLUST_HASH_MEMO=""`` turns it off."""
    env = os.environ.get("CLIPCLUST_HASH_MEMO")
    if env is not None:
        return Path(env) if env.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clipclust" / "file-hashes.json"


def _read_memo(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def file_sha256(path: str | os.PathLike[str], chunk_size: int = 8 << 20) -> str:
    """sha256 of a file, hashed in chunks and memoised by (path, size, mtime).

    A multi-GB GGUF takes seconds to hash; the memo (in-process and in the user cache directory)
    makes every later run free while any change to the file still changes the identity.
    """
    p = Path(path).resolve()
    st = p.stat()
    memo_key = (str(p), st.st_size, st.st_mtime_ns)
    disk_key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    with _HASH_LOCK:
        if memo_key in _HASH_MEMO:
            return _HASH_MEMO[memo_key]
    memo_path = _hash_memo_path()
    if memo_path is not None:
        hit = _read_memo(memo_path).get(disk_key)
        if isinstance(hit, str) and len(hit) == 64:
            with _HASH_LOCK:
                _HASH_MEMO[memo_key] = hit
            return hit
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    digest = h.hexdigest()
    with _HASH_LOCK:
        _HASH_MEMO[memo_key] = digest
    if memo_path is not None:
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            data = _read_memo(memo_path)
            data[disk_key] = digest
            # Forget files that are gone, so the memo does not grow without bound.
            data = {k: v for k, v in data.items() if Path(k.rsplit("|", 2)[0]).exists()}
            tmp = memo_path.with_name(f"{memo_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=0, sort_keys=True), encoding="utf-8")
            os.replace(tmp, memo_path)
        except OSError as e:  # a read-only home must not stop a run
            log.debug("could not persist file hash memo %s: %s", memo_path, e)
    return digest


def directory_sha256(path: str | os.PathLike[str]) -> str:
    """Identity of a model directory: hash over relative names and each file's sha256."""
    root = Path(path).resolve()
    h = hashlib.sha256()
    for f in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = f.relative_to(root).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        h.update(rel.encode("utf-8") + b"\0" + file_sha256(f).encode("ascii") + b"\n")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------------


class TextGenerator(ABC):
    """A chat model: requests in, one answer string per request out, in order.

    ``identity`` must change whenever the answers could change (weights, chat template), because
    it is part of every cache key. ``max_concurrency`` tells callers how many requests the backend
    can usefully run at once (servers), so they can size batches.
    """

    identity: str
    name: str = ""
    default_params: DecodeParams = DecodeParams()
    max_concurrency: int = 1

    @abstractmethod
    def generate(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> list[str]:
        """Answer every request, in order."""

    def generate_iter(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        """Yield ``(index, answer)`` as each call finishes, so callers can store it at once."""
        for i, req in enumerate(requests):
            yield i, self.generate([req], params)[0]

    def close(self) -> None:
        """Release model memory or connections; the generator is unusable afterwards."""

    def __enter__(self) -> TextGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# The call cache
# --------------------------------------------------------------------------------------------------


@runtime_checkable
class CallStore(Protocol):
    """Where model answers persist: the HDF5 workspace implements it; :class:`MemoryCallStore` too."""

    def get_many(self, keys: list[str]) -> dict[str, str]:
        """Values of the keys that are present (absent keys are simply left out)."""
        ...

    def put_many(self, entries: dict[str, str]) -> None:
        """Store entries durably (a later get_many in another process must see them)."""
        ...


class MemoryCallStore:
    """A dict-backed :class:`CallStore` for tests, notebooks and single-process use."""

    def __init__(self, entries: Mapping[str, str] | None = None) -> None:
        self.entries: dict[str, str] = dict(entries or {})
        self.put_calls = 0
        self._lock = threading.Lock()

    def get_many(self, keys: list[str]) -> dict[str, str]:
        with self._lock:
            return {k: self.entries[k] for k in keys if k in self.entries}

    def put_many(self, entries: dict[str, str]) -> None:
        with self._lock:
            self.entries.update(entries)
            self.put_calls += 1

    def __len__(self) -> int:
        return len(self.entries)


@dataclass
class CacheStats:
    """How many answers came from the store (hits) and how many needed a model call (misses)."""

    hits: int = 0
    misses: int = 0

    @property
    def calls(self) -> int:
        return self.hits + self.misses

    def __sub__(self, other: CacheStats) -> CacheStats:
        return CacheStats(self.hits - other.hits, self.misses - other.misses)

    def copy(self) -> CacheStats:
        return CacheStats(self.hits, self.misses)


ProgressFn = Callable[[int, int], None]
"""``progress(done, total)``: called after each answer (cached or computed) of one batch."""


def run_cached(
    keys: Sequence[str],
    compute: Callable[[list[int]], Iterator[tuple[int, str]]],
    store: CallStore,
    stats: CacheStats,
    *,
    flush_every: int = 1,
    progress: ProgressFn | None = None,
) -> list[str]:
    """Shared cache logic for text and vision calls.

    Looks every key up once, runs ``compute`` on the positions of distinct missing keys (it yields
    ``(position, answer)`` as calls finish) and puts answers into the store every ``flush_every``
    completions; whatever completed is flushed even when the run is interrupted.
    """
    total = len(keys)
    counts: dict[str, int] = {}
    first_pos: dict[str, int] = {}
    for pos, k in enumerate(keys):
        counts[k] = counts.get(k, 0) + 1
        first_pos.setdefault(k, pos)
    unique = list(first_pos)
    found = store.get_many(unique) if unique else {}
    missing = [first_pos[k] for k in unique if k not in found]
    stats.hits += total - len(missing)
    answers: dict[str, str] = dict(found)
    done = sum(counts[k] for k in found)
    if progress is not None and done:
        progress(done, total)
    buffer: dict[str, str] = {}
    try:
        for pos, text in compute(missing):
            k = keys[pos]
            answers[k] = text
            buffer[k] = text
            stats.misses += 1
            done += counts[k]
            if len(buffer) >= flush_every:
                store.put_many(buffer)
                buffer = {}
            if progress is not None:
                progress(done, total)
    finally:
        if buffer:
            store.put_many(buffer)
    return [answers[k] for k in keys]


class CachedGenerator(TextGenerator):
    """A :class:`TextGenerator` whose calls are looked up in (and written to) a :class:`CallStore`.

    Identical requests in one batch are computed once. ``stats`` accumulates hits and misses over
    the wrapper's lifetime; ``last_stats`` holds those of the most recent ``generate``.
    """

    def __init__(
        self,
        generator: TextGenerator,
        store: CallStore,
        *,
        flush_every: int = 1,
        progress: ProgressFn | None = None,
    ) -> None:
        if flush_every < 1:
            raise InputError(f"flush_every must be >= 1, got {flush_every}")
        self.generator = generator
        self.store = store
        self.flush_every = flush_every
        self.progress = progress
        self.stats = CacheStats()
        self.last_stats = CacheStats()

    @property
    def identity(self) -> str:  # type: ignore[override]
        return self.generator.identity

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.generator.name

    @property
    def default_params(self) -> DecodeParams:  # type: ignore[override]
        return self.generator.default_params

    @property
    def max_concurrency(self) -> int:  # type: ignore[override]
        return self.generator.max_concurrency

    def key(self, request: GenerationRequest, params: DecodeParams | None = None) -> str:
        """The cache key this wrapper uses for ``request``."""
        return generation_key(self.identity, params or self.default_params, request)

    def generate(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> list[str]:
        params = params or self.default_params
        requests = list(requests)
        keys = [generation_key(self.identity, params, r) for r in requests]
        before = self.stats.copy()

        def compute(positions: list[int]) -> Iterator[tuple[int, str]]:
            if not positions:
                return
            sub = [requests[p] for p in positions]
            for j, text in self.generator.generate_iter(sub, params):
                yield positions[j], text

        try:
            return run_cached(
                keys, compute, self.store, self.stats,
                flush_every=self.flush_every, progress=self.progress,
            )
        finally:
            self.last_stats = self.stats - before

    def close(self) -> None:
        self.generator.close()


# --------------------------------------------------------------------------------------------------
# llama.cpp (GGUF)
# --------------------------------------------------------------------------------------------------


def import_llama_cpp() -> Any:
    try:
        import llama_cpp  # noqa: PLC0415
    except ImportError as e:
        raise InputError(
            "GGUF models need llama-cpp-python, which is not installed: "
            "pip install 'clipclust[llm]' (or pip install llama-cpp-python)"
        ) from e
    return llama_cpp


def gbnf_literal(text: str) -> str:
    """A GBNF string literal matching ``text`` exactly."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def choice_grammar(choices: Sequence[str]) -> str:
    """GBNF that accepts exactly one of ``choices`` (the constrained step-3 answer)."""
    if not choices:
        raise InputError("a choice grammar needs at least one choice")
    return "root ::= " + " | ".join(gbnf_literal(c) for c in choices) + "\n"


_CTX_RE = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


def check_gguf_path(path: str | os.PathLike[str], what: str = "model") -> Path:
    """Resolve a GGUF path or raise an InputError that names it and says what to do."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{what} file not found: {p} (check the path; GGUF files end in .gguf)")
    if not p.is_file():
        raise InputError(f"{what} path is not a file: {p}")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise InputError(
            f"{what} file {p} is not a GGUF file (it does not start with the GGUF magic); "
            "convert it with llama.cpp's convert_hf_to_gguf.py or download a .gguf build"
        )
    return p


def load_llama(
    path: Path,
    *,
    n_ctx: int,
    n_gpu_layers: int,
    n_threads: int | None,
    seed: int,
    chat_format: str | None,
    verbose: bool,
) -> Any:
    """Construct ``llama_cpp.Llama`` with errors that name the file.

    ``n_ctx`` 0 means the model's training context; smaller positive values are raised to 256, which
    llama.cpp pads to anyway (llama-cpp-python mis-sizes its buffers below that). ``n_threads`` None
    keeps llama-cpp-python's defaults (half the logical cores; all of them for prompt evaluation).
    """
    llama_cpp = import_llama_cpp()
    if 0 < n_ctx < 256:
        n_ctx = 256
    try:
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_gpu_layers=n_gpu_layers,
            n_threads=n_threads,
            # Prompt evaluation uses as many threads as generation when the caller chose a number
            # (llama-cpp-python would otherwise use every core for it).
            n_threads_batch=n_threads,
            seed=seed,
            chat_format=chat_format,
            verbose=verbose,
        )
    except ValueError as e:
        raise InputError(
            f"llama.cpp could not load {path}: {e}. The file may be truncated or its architecture "
            "too new for the installed llama-cpp-python (pip install -U llama-cpp-python)"
        ) from e


class LlamaCppGenerator(TextGenerator):
    """A GGUF chat model run in-process by llama-cpp-python.

    The chat template comes from the GGUF metadata unless ``chat_format`` names one of
    llama-cpp-python's formats. Prompt-prefix reuse is automatic: llama-cpp-python keeps the KV cache
    of the previous call and only evaluates the tokens after the longest common prefix, so prompts
    that put the shared instruction first are much cheaper per item. Constrained requests use a
    GBNF grammar, so the answer is always one of the choices.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int = 4096,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        seed: int = 0,
        chat_format: str | None = None,
        default_params: DecodeParams | None = None,
        verbose: bool = False,
    ) -> None:
        self.path = check_gguf_path(model_path, "LLM")
        self.chat_format = chat_format
        self.default_params = default_params or DecodeParams()
        sha = file_sha256(self.path)
        self.identity = f"llama.cpp:sha256:{sha}" + (f":chat_format={chat_format}" if chat_format else "")
        self.name = self.path.name
        self._lock = threading.Lock()
        self.llama = load_llama(
            self.path, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads, seed=seed,
            chat_format=chat_format, verbose=verbose,
        )
        self.n_ctx = int(self.llama.n_ctx())

    def _one(self, request: GenerationRequest, params: DecodeParams) -> str:
        llama_cpp = import_llama_cpp()
        kwargs: dict[str, Any] = dict(
            messages=[dict(m) for m in request.messages],
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            seed=params.seed,
            repeat_penalty=1.0,
        )
        if request.choices is not None:
            kwargs["grammar"] = llama_cpp.LlamaGrammar.from_string(
                choice_grammar(request.choices), verbose=False
            )
            # Never cut a choice short: a token covers at least one character, and decoding stops
            # as soon as the grammar is complete.
            kwargs["max_tokens"] = max(params.max_tokens, max(len(c) for c in request.choices) + 2)
        try:
            out = self.llama.create_chat_completion(**kwargs)
        except ValueError as e:
            m = _CTX_RE.search(str(e))
            if m:
                raise InputError(
                    f"prompt of {m.group(1)} tokens does not fit the context window of {m.group(2)} "
                    f"tokens of {self.path.name}: raise n_ctx (--n-ctx), lower max_tokens, or shorten "
                    "the prompt (e.g. fewer labels in step 2b via a higher min-count)"
                ) from e
            raise ClipclustError(f"llama.cpp failed on {self.path.name}: {e}") from e
        text = out["choices"][0]["message"].get("content") or ""
        if request.choices is not None and text in request.choices:
            return text  # exact, even for a choice with edge whitespace
        return text.strip()

    def generate(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> list[str]:
        params = params or self.default_params
        with self._lock:
            return [self._one(r, params) for r in requests]

    def generate_iter(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        params = params or self.default_params
        for i, r in enumerate(requests):
            with self._lock:
                text = self._one(r, params)
            yield i, text

    def reset_prompt_cache(self) -> None:
        """Forget the evaluated prefix so the next call evaluates its prompt from scratch (benchmark
        baselines, and tests that want the same starting state twice)."""
        with self._lock:
            self.llama.reset()

    def close(self) -> None:
        llama = getattr(self, "llama", None)
        if llama is not None and hasattr(llama, "close"):
            llama.close()


# --------------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP servers
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# transformers causal LMs
# --------------------------------------------------------------------------------------------------


def import_transformers() -> tuple[Any, Any]:
    try:
        import torch  # noqa: PLC0415
        import transformers  # noqa: PLC0415
    except ImportError as e:
        raise InputError("transformers models need torch and transformers: pip install torch transformers") from e
    return torch, transformers


def resolve_device(device: str, torch: Any) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str, torch: Any) -> Any:
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
             "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise InputError(f"unknown dtype {dtype!r}; choose auto, fp32, fp16 or bf16")
    return table[dtype]


def dtype_kwarg(transformers: Any, dtype: Any) -> dict[str, Any]:
    """``from_pretrained`` renamed ``torch_dtype`` to ``dtype`` in transformers 4.56."""
    major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _hub_commit(repo: str) -> str | None:
    """The commit of the locally cached snapshot of a hub repository, or None when none is cached."""
    try:
        from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

        cached = try_to_load_from_cache(repo, "config.json")
    except Exception:  # noqa: BLE001 - no hub library or an unreadable cache: not known
        return None
    return Path(cached).parent.name if isinstance(cached, str) else None


def transformers_source(spec: str | os.PathLike[str]) -> tuple[str, str | None]:
    """``(what to pass to from_pretrained, identity)`` for ``hf:ORG/NAME`` or a local directory.

    A local directory is identified by the hashes of its files, a hub name by the commit of its
    cached snapshot: ``hf:ORG/NAME@<commit>``. Before the first download that commit is unknown and
    the identity is None; the generator then takes it from the loaded model, so the first run and
    every later one share one identity (a name-only ``@main`` would change once the model is cached,
    and with it every cache key).
    """
    s = str(spec)
    if s.startswith("hf:"):
        repo = s[3:].strip("/")
        if not re.fullmatch(r"[\w.\-]+/[\w.\-]+", repo):
            raise InputError(f"expected hf:ORG/NAME, got {s!r}")
        commit = _hub_commit(repo)
        return repo, (f"hf:{repo}@{commit}" if commit else None)
    p = Path(s).expanduser()
    if not p.is_dir():
        raise InputError(f"model directory not found: {p} (pass a directory saved with save_pretrained or hf:ORG/NAME)")
    if not (p / "config.json").exists():
        raise InputError(f"{p} has no config.json: not a transformers model directory")
    return str(p), f"dir:sha256:{directory_sha256(p)}"


_PLAIN_TEMPLATE_NOTE = "plain-template"


def plain_chat_prompt(messages: Sequence[Message]) -> str:
    """Prompt for tokenizers without a chat template (base models): role-prefixed turns."""
    parts = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(f"{m['role'].capitalize()}: {content}")
    return "\n".join(parts) + "\nAssistant:"


class _TokenTrie:
    """Token sequences of the allowed answers, walked during constrained greedy decoding."""

    def __init__(self, sequences: Mapping[str, Sequence[int]]) -> None:
        self.root: dict[int, Any] = {}
        self.ends: dict[tuple[int, ...], str] = {}
        for choice, seq in sequences.items():
            node = self.root
            for t in seq:
                node = node.setdefault(int(t), {})
            self.ends.setdefault(tuple(int(t) for t in seq), choice)

    def allowed(self, prefix: Sequence[int], eos: int) -> list[int]:
        node = self.root
        for t in prefix:
            if t not in node:
                return [eos]
            node = node[t]
        nxt = list(node.keys())
        if tuple(prefix) in self.ends:
            nxt.append(eos)
        return nxt or [eos]


class TransformersGenerator(TextGenerator):
    """A transformers causal LM (``AutoModelForCausalLM``) prompted through its chat template.

    Constrained requests decode greedily through a token trie of the choices (the transformers
    equivalent of a grammar), so answers are always one of them.
    """

    def __init__(
        self,
        spec: str | os.PathLike[str],
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 1,
        default_params: DecodeParams | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        torch, transformers = import_transformers()
        source, identity = transformers_source(spec)
        self.device = resolve_device(device, torch)
        self.batch_size = max(1, batch_size)
        self.default_params = default_params or DecodeParams()
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(
                source, trust_remote_code=trust_remote_code,
                **dtype_kwarg(transformers, resolve_dtype(dtype, self.device, torch)),
            ).to(self.device)
        except OSError as e:
            raise InputError(f"could not load transformers model {spec}: {e}") from e
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if identity is None:  # first download: the snapshot's commit is known now
            commit = getattr(self.model.config, "_commit_hash", None) or _hub_commit(source)
            identity = f"hf:{source}@{commit or 'unknown'}"
        # From the files, as known_identity() computes it without loading.
        self.identity = f"transformers:{identity}" + ("" if has_chat_template(source) else f":{_PLAIN_TEMPLATE_NOTE}")
        self.name = str(spec)
        self._torch = torch
        self._lock = threading.Lock()

    def prompt_text(self, messages: Sequence[Message]) -> str:
        if self.has_template:
            return self.tokenizer.apply_chat_template(
                [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
            )
        return plain_chat_prompt(messages)

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        return [int(i) for i in ids if i is not None]

    def _batch(self, requests: Sequence[GenerationRequest], params: DecodeParams) -> list[str]:
        torch = self._torch
        texts = [self.prompt_text(r.messages) for r in requests]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        prompt_len = enc["input_ids"].shape[1]
        eos_ids = self._eos_ids()
        eos = eos_ids[0] if eos_ids else self.tokenizer.pad_token_id
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=params.max_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=eos_ids or None,
        )
        if params.greedy:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            gen_kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
            torch.manual_seed(params.seed)
        tries: list[_TokenTrie | None] = []
        for r in requests:
            if r.choices is None:
                tries.append(None)
            else:
                seqs = {c: self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in r.choices}
                tries.append(_TokenTrie(seqs))
        if any(t is not None for t in tries):
            vocab = list(range(len(self.tokenizer)))
            longest = max(
                (max(len(s) for s in t.ends) for t in tries if t is not None), default=1
            )
            if all(t is not None for t in tries):
                gen_kwargs["max_new_tokens"] = longest + 1

            def allowed(batch_id: int, input_ids: Any) -> list[int]:
                trie = tries[batch_id]
                if trie is None:
                    return vocab
                return trie.allowed([int(t) for t in input_ids[prompt_len:]], eos)

            gen_kwargs["prefix_allowed_tokens_fn"] = allowed
            if not params.greedy:  # sampling inside the trie is fine, but keep it reproducible
                torch.manual_seed(params.seed)
        with torch.no_grad():
            out = self.model.generate(**enc, **gen_kwargs)
        results = []
        for row, (r, trie) in enumerate(zip(requests, tries)):
            gen = [int(t) for t in out[row, prompt_len:]]
            while gen and (gen[-1] in eos_ids or gen[-1] == self.tokenizer.pad_token_id):
                gen.pop()
            if trie is not None and tuple(gen) in trie.ends:
                results.append(trie.ends[tuple(gen)])
            else:
                results.append(self.tokenizer.decode(gen, skip_special_tokens=True).strip())
        return results

    def generate(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> list[str]:
        return [t for _, t in sorted(self.generate_iter(requests, params))]

    def generate_iter(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        params = params or self.default_params
        for start in range(0, len(requests), self.batch_size):
            chunk = list(requests[start : start + self.batch_size])
            with self._lock:
                texts = self._batch(chunk, params)
            for j, t in enumerate(texts):
                yield start + j, t

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


# --------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------


def spec_kind(spec: str | os.PathLike[str]) -> str:
    """Which backend a model spec names: ``gguf``, ``http`` or ``transformers``."""
    s = str(spec).strip()
    if s.startswith(("http://", "https://")):
        return "http"
    if s.startswith("hf:"):
        return "transformers"
    if s.lower().endswith(".gguf"):
        return "gguf"
    p = Path(s).expanduser()
    if p.is_dir():
        return "transformers"
    if p.is_file():
        with open(p, "rb") as f:
            if f.read(4) == b"GGUF":
                return "gguf"
    raise InputError(
        f"cannot tell what model {s!r} is: pass a .gguf file, an http(s)://HOST:PORT/v1 URL, "
        "hf:ORG/NAME or a local transformers directory"
        + ("" if p.exists() else " (no such file or directory)")
    )


_GGUF_OPTS = {"n_ctx", "n_gpu_layers", "n_threads", "seed", "chat_format", "default_params", "verbose"}
_HTTP_OPTS = {"model", "api_key", "concurrency", "timeout", "retries", "constraint", "default_params"}
_HF_OPTS = {"device", "dtype", "batch_size", "default_params", "trust_remote_code"}


def pick_options(opts: Mapping[str, Any], allowed: set[str]) -> dict[str, Any]:
    """Options meant for this backend; unset (None) ones are dropped so defaults apply."""
    return {k: v for k, v in opts.items() if k in allowed and v is not None}


def load_generator(spec: str | os.PathLike[str], *, lazy: bool = False, **opts: Any) -> TextGenerator:
    """Open a text generator from a spec: ``*.gguf`` path, ``http(s)://.../v1``, ``hf:ORG/NAME`` or a
    transformers directory. Options not used by the chosen backend are ignored, so a CLI can pass
    all of its flags (``n_ctx``, ``n_gpu_layers``, ``n_threads``, ``seed``, ``chat_format``,
    ``model``, ``api_key``, ``concurrency``, ``device``, ``dtype``, ``default_params``...).
    ``lazy`` returns a :class:`LazyGenerator`: the identity now, the weights on the first call.
    """
    kind = spec_kind(spec)
    if lazy and kind != "http":  # a server holds no weights here: nothing to defer
        return LazyGenerator(spec, **opts)
    if kind == "gguf":
        return LlamaCppGenerator(spec, **pick_options(opts, _GGUF_OPTS))
    if kind == "http":
        return OpenAIGenerator(str(spec), **pick_options(opts, _HTTP_OPTS))
    return TransformersGenerator(spec, **pick_options(opts, _HF_OPTS))


def known_identity(spec: str | os.PathLike[str], **opts: Any) -> str | None:
    """The identity the generator for ``spec`` will have, when it is known without loading the model:
    a GGUF file's (memoised) hash, a local directory's, a hub model's cached snapshot; None for a hub
    model not downloaded yet or a server (ask it)."""
    kind = spec_kind(spec)
    if kind == "gguf":
        chat_format = opts.get("chat_format")
        path = check_gguf_path(spec, "LLM")
        return f"llama.cpp:sha256:{file_sha256(path)}" + (f":chat_format={chat_format}" if chat_format else "")
    if kind == "transformers":
        source, identity = transformers_source(spec)
        if identity is None:
            return None
        return f"transformers:{identity}" + ("" if has_chat_template(source) else f":{_PLAIN_TEMPLATE_NOTE}")
    return None


def has_chat_template(source: str) -> bool:
    """Whether a transformers model folder (or cached hub snapshot) ships a chat template."""
    folder = Path(source)
    if not folder.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

            cached = try_to_load_from_cache(source, "config.json")
        except Exception:  # noqa: BLE001
            cached = None
        if not isinstance(cached, str):
            return False
        folder = Path(cached).parent
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    for name in ("tokenizer_config.json", "processor_config.json"):
        try:
            config = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(config, dict) and config.get("chat_template"):
            return True
    return False


class LazyGenerator(TextGenerator):
    """A local model opened on its first call, so a run whose answers are all cached loads nothing.

    The identity comes from :func:`known_identity` without loading; where it cannot (a hub model not
    downloaded yet) asking for it loads the model, which the run needs anyway.
    """

    def __init__(self, spec: str | os.PathLike[str], **opts: Any) -> None:
        self.spec, self.opts = spec, opts
        self._known = known_identity(spec, **opts)
        self._inner: TextGenerator | None = None
        self._lock = threading.Lock()
        self.name = Path(str(spec)).name if spec_kind(spec) == "gguf" else str(spec)
        self.default_params = opts.get("default_params") or DecodeParams()

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    def _load(self) -> TextGenerator:
        with self._lock:
            if self._inner is None:
                self._inner = load_generator(self.spec, **self.opts)
                if self._known is not None and self._inner.identity != self._known:
                    raise ClipclustError(
                        f"{self.name}: the loaded model's identity {self._inner.identity} differs from "
                        f"{self._known}, computed before loading"
                    )
            return self._inner

    @property
    def identity(self) -> str:  # type: ignore[override]
        return self._known if self._known is not None else self._load().identity

    def generate(self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None) -> list[str]:
        return self._load().generate(requests, params)

    def generate_iter(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        return self._load().generate_iter(requests, params)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


# The names these helpers had before vlm.py and other modules shared them (kept for existing callers).
_HTTPStatusError, _import_llama_cpp, _import_transformers = HTTPStatusError, import_llama_cpp, import_transformers
_pick, _pool_iter = pick_options, pool_iter


def image_data_url(image: Any, fmt: str = "PNG") -> str:
    """A PIL image as a ``data:`` URL (how images travel to llama.cpp handlers and servers)."""
    buf = io.BytesIO()
    img = image if image.mode in ("RGB", "L") else image.convert("RGB")
    img.save(buf, format=fmt)
    mime = "image/png" if fmt.upper() == "PNG" else f"image/{fmt.lower()}"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


__all__ = [
    "CONSTRAINT_STRATEGIES",
    "CacheStats",
    "CachedGenerator",
    "CallStore",
    "DecodeParams",
    "GenerationRequest",
    "LlamaCppGenerator",
    "MemoryCallStore",
    "Message",
    "OpenAIClient",
    "OpenAIGenerator",
    "TextGenerator",
    "TransformersGenerator",
    "canonical_key",
    "chat",
    "choice_grammar",
    "directory_sha256",
    "file_sha256",
    "gbnf_literal",
    "generation_key",
    "image_data_url",
    "load_generator",
    "normalise_base_url",
    "run_cached",
    "spec_kind",
]
