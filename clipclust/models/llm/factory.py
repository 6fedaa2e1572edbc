"""Opening a generator from a spec, its identity without loading, and lazy loading."""

from __future__ import annotations

import base64
import io
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from clipclust.errors import ClipclustError, InputError

from clipclust.models.llm.generator import TextGenerator
from clipclust.models.llm.hashing import file_sha256
from clipclust.models.llm.hf import TransformersGenerator, _PLAIN_TEMPLATE_NOTE, has_chat_template, transformers_source
from clipclust.models.llm.llama import LlamaCppGenerator, check_gguf_path
from clipclust.models.llm.requests import DecodeParams, GenerationRequest
from clipclust.models.llm.server import OpenAIGenerator


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


def image_data_url(image: Any, fmt: str = "PNG") -> str:
    """A PIL image as a ``data:`` URL (how images travel to llama.cpp handlers and servers)."""
    buf = io.BytesIO()
    img = image if image.mode in ("RGB", "L") else image.convert("RGB")
    img.save(buf, format=fmt)
    mime = "image/png" if fmt.upper() == "PNG" else f"image/{fmt.lower()}"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")
