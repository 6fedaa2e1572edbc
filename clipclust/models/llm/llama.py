"""llama.cpp (GGUF) models run in-process, with grammar-constrained choices."""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from clipclust.errors import ClipclustError, InputError, opt

from clipclust.models.llm.generator import TextGenerator, serial_batches
from clipclust.models.llm.hashing import file_sha256
from clipclust.models.llm.requests import DecodeParams, GenerationRequest, Message


def import_llama_cpp() -> Any:
    try:
        import llama_cpp  # noqa: PLC0415
    except ImportError as e:
        raise InputError(
            "GGUF models need llama-cpp-python, which is not installed: "
            "pip install 'clipclust[llm]' (or pip install llama-cpp-python)"
        ) from e
    if not _closing.is_set():
        _closing.set()
        atexit.register(_close_null_files)
    return llama_cpp


_closing = threading.Event()


def _close_null_files() -> None:
    """llama-cpp-python opens two /dev/null files at import (to silence the C library) and never closes them;
    left to the interpreter's teardown, each would print a ResourceWarning as the last line a user sees."""
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None and not handle.closed:
            handle.close()


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


DEFAULT_SEQUENCES = 1
"""Greedy answers decoded one call at a time by default.  Decoding N together (llama.cpp sequences in one
context) reads the weights once per answer step for all of them, but a row computed beside others rounds
differently in the last bits, so a near-tie can go the other way: on IC|TC's step 2a (140 long dev
descriptions, Qwen2.5-0.5B) 138 of 140 answers were the same, for 1.07x, since evaluating each
description's prompt is 87% of the time (bench/llm_speed.py).  Worth it where answers are long."""

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


def chat_completion(llama: Any, messages: Sequence[Message], params: DecodeParams, **extra: Any) -> str:
    """One chat completion of a loaded model with the decoding settings (no repetition penalty: it would
    bend constrained and short answers); the answer's text, unstripped."""
    out = llama.create_chat_completion(
        messages=[dict(m) for m in messages], temperature=params.temperature, top_p=params.top_p,
        max_tokens=params.max_tokens, seed=params.seed, repeat_penalty=1.0, **extra,
    )
    return out["choices"][0]["message"].get("content") or ""


class LlamaCppGenerator(TextGenerator):
    """A GGUF chat model run in-process by llama-cpp-python.

    The chat template comes from the GGUF metadata unless ``chat_format`` names one of
    llama-cpp-python's formats. Prompt-prefix reuse is automatic: llama-cpp-python keeps the KV cache
    of the previous call and only evaluates the tokens after the longest common prefix, so prompts
    that put the shared instruction first are much cheaper per item. Constrained requests use a
    GBNF grammar, so the answer is always one of the choices.

    Greedy requests without choices are decoded ``concurrency`` at a time as llama.cpp sequences
    (:mod:`.batched`): the same prompts, stops and budgets as one call at a time, without reading every
    weight once per answer token and item; a near-tie may round the other way (see
    :data:`DEFAULT_SEQUENCES`).  ``concurrency=1``, the default, keeps one call at a time.
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
        concurrency: int = DEFAULT_SEQUENCES,
    ) -> None:
        if concurrency < 1:
            raise InputError(f"concurrency must be >= 1, got {concurrency}", option="concurrency")
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
        self.max_concurrency = concurrency
        self._batcher: Any = None  # made on the first batch: a second context on the same weights

    def _one(self, request: GenerationRequest, params: DecodeParams) -> str:
        extra: dict[str, Any] = {}
        if request.choices is not None:
            extra["grammar"] = import_llama_cpp().LlamaGrammar.from_string(choice_grammar(request.choices), verbose=False)
            # Never cut a choice short: a token covers at least one character, and decoding stops
            # as soon as the grammar is complete.
            params = replace(params, max_tokens=max(params.max_tokens, max(len(c) for c in request.choices) + 2))
        try:
            text = chat_completion(self.llama, request.messages, params, **extra)
        except ValueError as e:
            raise self._failure(e) from e
        if request.choices is not None and text in request.choices:
            return text  # exact, even for a choice with edge whitespace
        return text.strip()

    def _failure(self, e: ValueError) -> ClipclustError:
        m = _CTX_RE.search(str(e))
        if m:
            return InputError(
                f"prompt of {m.group(1)} tokens does not fit the context window of {m.group(2)} "
                f"tokens of {self.path.name}: raise {opt('n_ctx')}, lower max_tokens, or shorten the "
                f"prompt (e.g. fewer labels in step 2b via a higher {opt('min_count')})"
            )
        return ClipclustError(f"llama.cpp failed on {self.path.name}: {e}")

    def generate(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> list[str]:
        out: dict[int, str] = dict(self.generate_iter(requests, params))
        return [out[i] for i in range(len(requests))]

    def generate_iter(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        """``(index, answer)`` as each call finishes: greedy unconstrained requests in groups decoded
        together, the others (sampling, choices) one at a time; not necessarily in order."""
        params = params or self.default_params
        if self.max_concurrency == 1 or not params.greedy:
            return serial_batches(requests, 1, self._lock, lambda batch: [self._one(batch[0], params)])
        return self._batched(list(requests), params)

    def _batched(self, requests: list[GenerationRequest], params: DecodeParams) -> Iterator[tuple[int, str]]:
        """Groups of up to ``max_concurrency`` requests decoded together; each answer is yielded as its
        sequence ends (the lock is held meanwhile: the model is never shared mid-group)."""
        from clipclust.models.llm.batched import GreedyBatcher, prepare  # noqa: PLC0415

        for start in range(0, len(requests), self.max_concurrency):
            with self._lock:
                if self._batcher is None:
                    self._batcher = GreedyBatcher(self.llama, n_seq=self.max_concurrency, n_ctx=self.n_ctx)
                together: list[tuple[int, Any]] = []
                for i in range(start, min(start + self.max_concurrency, len(requests))):
                    try:
                        prompt = None if requests[i].choices is not None else prepare(
                            self.llama, requests[i].messages, params)
                    except ValueError as e:
                        raise self._failure(e) from e
                    if prompt is not None and self._batcher.fits(prompt):
                        together.append((i, prompt))
                    else:  # a grammar, or a prompt too long to share the context: one call
                        yield i, self._one(requests[i], params)
                if together:
                    for j, text in self._batcher.run([p for _, p in together]):
                        yield together[j][0], text.strip()

    def reset_prompt_cache(self) -> None:
        """Forget the evaluated prefix so the next call evaluates its prompt from scratch (benchmark
        baselines, and tests that want the same starting state twice)."""
        with self._lock:
            self.llama.reset()

    def close(self) -> None:
        if getattr(self, "_batcher", None) is not None:
            self._batcher.close()
            self._batcher = None
        llama = getattr(self, "llama", None)
        if llama is not None and hasattr(llama, "close"):
            llama.close()
