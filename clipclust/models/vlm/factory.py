"""The describers' registry: a model string (and a GGUF model's projector) to its backend, its identity
without loading, lazy loading."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from PIL import Image

from clipclust.errors import InputError
from clipclust.models.llm import hf
from clipclust.models.llm.requests import DecodeParams
from clipclust.models.registry import Backend, LazyModel, Registry
from clipclust.models.vlm.describer import DESCRIBE_PARAMS, Describer
from clipclust.models.vlm.hf import TransformersDescriber
from clipclust.models.vlm.llama import LlamaCppDescriber, known_gguf_identity
from clipclust.models.vlm.server import OpenAIDescriber

DESCRIBERS = Registry("VLM", "pass a .gguf file (with its mmproj), an http(s)://HOST:PORT/v1 URL, hf:ORG/NAME "
                             "or a local transformers directory")
"""Describers by model string: a GGUF file and its projector in-process, a server, a transformers model."""

DESCRIBERS.register(Backend(
    "llama.cpp", frozenset({"gguf"}), LlamaCppDescriber, identity=known_gguf_identity,
    options=frozenset({"mmproj", "chat_format", "n_ctx", "n_gpu_layers", "n_threads", "seed", "default_params",
                       "verbose"}),
))
DESCRIBERS.register(Backend(
    "server", frozenset({"url"}), OpenAIDescriber, local=False,
    options=frozenset({"model", "api_key", "concurrency", "timeout", "notice", "retries", "default_params"}),
))
DESCRIBERS.register(Backend(
    "transformers", frozenset({"hf", "dir"}), TransformersDescriber,
    identity=lambda spec, **_: hf.known_identity("transformers-vlm", spec),
    options=frozenset({"device", "dtype", "batch_size", "default_params", "trust_remote_code"}),
))


def load_describer(
    spec: str | os.PathLike[str], mmproj: str | os.PathLike[str] | None = None, *, lazy: bool = False, **opts: Any
) -> Describer:
    """Open a describer: ``FILE.gguf`` (+ ``mmproj``), ``http(s)://.../v1``, ``hf:ORG/NAME`` or a
    transformers directory. Options the chosen backend does not use are ignored. ``lazy`` returns a
    :class:`LazyDescriber`: the identity now, the weights on the first call."""
    backend, _ = DESCRIBERS.resolve(spec)
    if backend.name != "llama.cpp" and mmproj is not None:
        raise InputError(
            f"only applies to GGUF models; {spec} is "
            + ("a server (it loads its own projector)" if backend.name == "server" else "a transformers model"),
            option="mmproj",
        )
    if lazy and backend.local:
        return LazyDescriber(spec, mmproj, **opts)
    return DESCRIBERS.open(spec, mmproj=mmproj, **opts)


def known_describer_identity(
    spec: str | os.PathLike[str], mmproj: str | os.PathLike[str] | None = None, **opts: Any
) -> str | None:
    """The identity the describer for ``spec`` will have, when known without loading the weights (a
    GGUF's chat format comes from its metadata, read without the tensors); None for a hub model not
    downloaded yet or a server."""
    return DESCRIBERS.known_identity(spec, mmproj=mmproj, **opts)


class LazyDescriber(LazyModel, Describer):
    """A local VLM opened on its first call (see :class:`~clipclust.models.registry.LazyModel`)."""

    def __init__(self, spec: str | os.PathLike[str], mmproj: str | os.PathLike[str] | None = None,
                 **opts: Any) -> None:
        super().__init__(DESCRIBERS, spec, mmproj=mmproj, **opts)
        self.default_params = opts.get("default_params") or DESCRIBE_PARAMS

    def describe(self, images: Sequence[Image.Image], prompt: str, params: DecodeParams | None = None) -> list[str]:
        return self._model().describe(images, prompt, params)

    def describe_iter(
        self, images: Sequence[Image.Image], prompt: str, params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        return self._model().describe_iter(images, prompt, params)
