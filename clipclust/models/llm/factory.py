"""The text generators' registry: a model string to its backend, its identity without loading, lazy loading."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from clipclust.models.llm import hf
from clipclust.models.llm.generator import TextGenerator
from clipclust.models.llm.hashing import file_sha256
from clipclust.models.llm.hf import TransformersGenerator
from clipclust.models.llm.llama import LlamaCppGenerator, check_gguf_path
from clipclust.models.llm.requests import DecodeParams, GenerationRequest
from clipclust.models.llm.server import OpenAIGenerator
from clipclust.models.registry import Backend, LazyModel, Registry


def _gguf_identity(spec: str, chat_format: str | None = None, **_: Any) -> str:
    """A GGUF file's (memoised) hash, and the chat format when one is forced."""
    path = check_gguf_path(spec, "LLM")
    return f"llama.cpp:sha256:{file_sha256(path)}" + (f":chat_format={chat_format}" if chat_format else "")


GENERATORS = Registry("LLM", "pass a .gguf file, an http(s)://HOST:PORT/v1 URL, hf:ORG/NAME or a local "
                             "transformers directory")
"""Text generators by model string: a GGUF file in-process, a server, a transformers model."""

GENERATORS.register(Backend(
    "llama.cpp", frozenset({"gguf"}), LlamaCppGenerator, identity=_gguf_identity,
    options=frozenset({"n_ctx", "n_gpu_layers", "n_threads", "seed", "chat_format", "default_params", "verbose",
                       "concurrency"}),
))
GENERATORS.register(Backend(
    "server", frozenset({"url"}), OpenAIGenerator, local=False,
    options=frozenset({"model", "api_key", "concurrency", "timeout", "notice", "retries", "constraint", "default_params"}),
))
GENERATORS.register(Backend(
    "transformers", frozenset({"hf", "dir"}), TransformersGenerator,
    identity=lambda spec, **_: hf.known_identity("transformers", spec),
    options=frozenset({"device", "dtype", "batch_size", "default_params", "trust_remote_code"}),
))


def load_generator(spec: str | os.PathLike[str], *, lazy: bool = False, **opts: Any) -> TextGenerator:
    """Open a text generator from a spec: ``*.gguf`` path, ``http(s)://.../v1``, ``hf:ORG/NAME`` or a
    transformers directory. Options not used by the chosen backend are ignored, so a CLI can pass
    all of its flags (``n_ctx``, ``n_gpu_layers``, ``n_threads``, ``seed``, ``chat_format``,
    ``model``, ``api_key``, ``concurrency``, ``device``, ``dtype``, ``default_params``...).
    ``lazy`` returns a :class:`LazyGenerator`: the identity now, the weights on the first call.
    """
    backend, _ = GENERATORS.resolve(spec)
    if lazy and backend.local:  # a server holds no weights here: nothing to defer
        return LazyGenerator(spec, **opts)
    return GENERATORS.open(spec, **opts)


def known_identity(spec: str | os.PathLike[str], **opts: Any) -> str | None:
    """The identity the generator for ``spec`` will have, when it is known without loading the model:
    a GGUF file's (memoised) hash, a local directory's, a hub model's cached snapshot; None for a hub
    model not downloaded yet or a server (ask it)."""
    return GENERATORS.known_identity(spec, **opts)


class LazyGenerator(LazyModel, TextGenerator):
    """A local text generator opened on its first call (see :class:`~clipclust.models.registry.LazyModel`)."""

    def __init__(self, spec: str | os.PathLike[str], **opts: Any) -> None:
        super().__init__(GENERATORS, spec, **opts)
        self.default_params = opts.get("default_params") or DecodeParams()

    def generate(self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None) -> list[str]:
        return self._model().generate(requests, params)

    def generate_iter(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        return self._model().generate_iter(requests, params)
