"""GGUF vision-language models with their mmproj projector, run in-process by llama-cpp-python: the chat
handler picked from the GGUF metadata or named explicitly."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from clipclust.errors import ClipclustError, InputError, opt
from clipclust.models.llm.generator import serial_batches
from clipclust.models.llm.hashing import file_sha256
from clipclust.models.llm.llama import chat_completion, check_gguf_path, import_llama_cpp, load_llama
from clipclust.models.llm.requests import DecodeParams
from clipclust.models.vlm.describer import DESCRIBE_PARAMS, Describer, vision_messages

CHAT_HANDLERS: dict[str, str] = {
    "llava-1-5": "Llava15ChatHandler",
    "llava-1-6": "Llava16ChatHandler",
    "obsidian": "ObsidianChatHandler",
    "moondream": "MoondreamChatHandler",
    "nanollava": "NanoLlavaChatHandler",
    "llama-3-vision-alpha": "Llama3VisionAlphaChatHandler",
    "minicpm-v-2.6": "MiniCPMv26ChatHandler",
    "qwen2.5-vl": "Qwen25VLChatHandler",
    "gemma4": "Gemma4ChatHandler",
    "mtmd": "MTMDChatHandler",
}
"""llama-cpp-python multimodal chat handlers by the names its server uses for ``--chat_format``.
``mtmd`` is the generic handler that renders the model's own GGUF chat template."""

_NAME_HINTS: list[tuple[tuple[str, ...], str]] = [
    (("qwen2.5-vl", "qwen2.5vl", "qwen2-5-vl", "qwen25vl", "qwen2-vl", "qwen2vl"), "qwen2.5-vl"),
    (("minicpm",), "minicpm-v-2.6"),
    (("moondream",), "moondream"),
    (("nanollava",), "nanollava"),
    (("llama-3-vision-alpha",), "llama-3-vision-alpha"),
    (("obsidian",), "obsidian"),
    (("gemma-4", "gemma4"), "gemma4"),
    (("llava-v1.6", "llava-1.6", "llava-v1-6", "llava-1-6", "llava-next"), "llava-1-6"),
    (("llava",), "llava-1-5"),
]


def select_chat_format(
    metadata: Mapping[str, Any], model_path: str | os.PathLike[str] | None = None,
    explicit: str | None = None,
) -> str:
    """Pick the multimodal chat handler for a GGUF VLM.

    An explicit format wins (and must be known). Otherwise name hints in the metadata
    (general.name, general.basename, general.architecture, general.finetune) and the file name
    select a dedicated handler (llava-1.5/1.6, moondream, minicpm-v, qwen2.5-vl...); a model with its
    own ``tokenizer.chat_template`` and no dedicated handler (Gemma 3, SmolVLM, ...) gets the generic
    ``mtmd`` handler that renders that template; anything else is treated as LLaVA-1.5, the format
    of the early llava GGUFs that carry no template.
    """
    if explicit:
        fmt = explicit.strip().lower()
        if fmt not in CHAT_HANDLERS:
            raise InputError(
                f"unknown VLM chat format {explicit!r}; choose one of {', '.join(CHAT_HANDLERS)}"
            )
        return fmt
    fields = ("general.name", "general.basename", "general.architecture", "general.finetune")
    parts = [str(metadata.get(f, "")) for f in fields]
    if model_path is not None:
        parts.append(Path(model_path).name)
    hint = re.sub(r"[\s_]+", "-", " ".join(parts).lower())
    for needles, fmt in _NAME_HINTS:
        if any(n in hint for n in needles):
            return fmt
    if str(metadata.get("tokenizer.chat_template", "")).strip():
        return "mtmd"
    return "llava-1-5"


class LlamaCppDescriber(Describer):
    """A GGUF VLM with its mmproj projector, run in-process by llama-cpp-python."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        mmproj: str | os.PathLike[str] | None = None,
        *,
        chat_format: str | None = None,
        n_ctx: int = 4096,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        seed: int = 0,
        default_params: DecodeParams | None = None,
        verbose: bool = False,
    ) -> None:
        self.path = check_gguf_path(model_path, "VLM")
        if mmproj is None:
            raise InputError(
                f"{self.path.name} needs its vision projector: pass {opt('mmproj')} FILE.gguf (the "
                "mmproj-*.gguf file published next to the model)"
            )
        self.mmproj = check_gguf_path(mmproj, "mmproj")
        if chat_format:
            select_chat_format({}, None, chat_format)  # validate before the slow load
        llama_cpp = import_llama_cpp()
        self.llama = load_llama(
            self.path, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads, seed=seed,
            chat_format=None, verbose=verbose,
        )
        self.chat_format = select_chat_format(self.llama.metadata, self.path, chat_format)
        handler_cls = getattr(llama_cpp.llama_chat_format, CHAT_HANDLERS[self.chat_format], None)
        if handler_cls is None:
            raise InputError(
                f"the installed llama-cpp-python has no {CHAT_HANDLERS[self.chat_format]} for "
                f"{self.path.name}: upgrade it (pip install -U llama-cpp-python) or pick another "
                f"{opt('chat_format')}"
            )
        handler = handler_cls(clip_model_path=str(self.mmproj), verbose=verbose)
        self.llama.chat_handler = handler
        init = getattr(handler, "_init_mtmd_context", None)
        if init is not None:  # load the projector now, so a wrong mmproj fails here, not mid-run
            try:
                init(self.llama)
            except ValueError as e:
                self.llama.close()
                raise InputError(
                    f"could not load mmproj {self.mmproj} for {self.path.name} ({e}); pass the "
                    "mmproj file made for this model"
                ) from e
        self.default_params = default_params or DESCRIBE_PARAMS
        self.identity = gguf_identity(self.path, self.mmproj, self.chat_format)
        self.name = f"{self.path.name} + {self.mmproj.name}"
        self._lock = threading.Lock()

    def _one(self, image: Image.Image, prompt: str, params: DecodeParams) -> str:
        try:
            return chat_completion(self.llama, vision_messages(prompt, image), params).strip()
        except ValueError as e:
            msg = str(e)
            if "exceed context window" in msg:
                raise InputError(
                    f"image + prompt do not fit the context window of {self.path.name} ({msg}); "
                    f"raise {opt('n_ctx')}"
                ) from e
            if "mtmd" in msg or "clip" in msg.lower() or "vision" in msg.lower():
                raise InputError(
                    f"could not use mmproj {self.mmproj} with {self.path.name} ({msg}); pass the "
                    f"mmproj file made for this model, or set {opt('chat_format')}"
                ) from e
            raise ClipclustError(f"llama.cpp failed on {self.path.name}: {msg}") from e

    def describe_iter(
        self, images: Sequence[Image.Image], prompt: str, params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        params = params or self.default_params
        return serial_batches(images, 1, self._lock, lambda batch: [self._one(batch[0], prompt, params)])

    def close(self) -> None:
        llama = getattr(self, "llama", None)
        if llama is not None and hasattr(llama, "close"):
            llama.close()


def gguf_identity(path: Path, mmproj: Path, chat_format: str) -> str:
    """The weights, the projector and the chat handler: each changes the descriptions."""
    return f"llama.cpp-vlm:sha256:{file_sha256(path)}:mmproj-sha256:{file_sha256(mmproj)}:{chat_format}"


def known_gguf_identity(spec: str, mmproj: str | os.PathLike[str] | None = None, *,
                        chat_format: str | None = None, **_: Any) -> str | None:
    """The identity without loading: the chat format comes from the GGUF metadata, read without the
    tensors; None without a projector (opening the model then says what is missing)."""
    path = check_gguf_path(spec, "VLM")
    if mmproj is None:
        return None
    projector = check_gguf_path(mmproj, "mmproj")
    if chat_format:
        return gguf_identity(path, projector, select_chat_format({}, None, chat_format))
    vocab = import_llama_cpp().Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        metadata = dict(vocab.metadata)
    finally:
        vocab.close()
    return gguf_identity(path, projector, select_chat_format(metadata, path, None))
