"""Vision-language describers: images and a prompt in, one text per image out.

The package mirrors :mod:`clipclust.models.llm` and is built on its pieces: :mod:`.describer` (the
interface, the description's cache key and :class:`CachedDescriber`, which keeps every description in
the same call store as the text calls), :mod:`.llama` (a GGUF model with its mmproj projector through
llama-cpp-python), :mod:`.server` (an OpenAI-compatible server, images as data-URL content parts),
:mod:`.hf` (transformers image-text-to-text models) and :mod:`.factory` (the backends' registry,
identities without loading, lazy loading).
"""

from __future__ import annotations

from clipclust.models.vlm.describer import (
    DESCRIBE_PARAMS,
    CachedDescriber,
    Describer,
    ImageSource,
    describe_key,
    image_data_url,
    open_image,
)
from clipclust.models.vlm.llama import CHAT_HANDLERS, LlamaCppDescriber, select_chat_format
from clipclust.models.vlm.server import OpenAIDescriber
from clipclust.models.vlm.hf import TransformersDescriber
from clipclust.models.vlm.factory import DESCRIBERS, LazyDescriber, known_describer_identity, load_describer

__all__ = [
    "CHAT_HANDLERS",
    "DESCRIBERS",
    "DESCRIBE_PARAMS",
    "CachedDescriber",
    "Describer",
    "ImageSource",
    "LazyDescriber",
    "LlamaCppDescriber",
    "OpenAIDescriber",
    "TransformersDescriber",
    "describe_key",
    "image_data_url",
    "known_describer_identity",
    "load_describer",
    "open_image",
    "select_chat_format",
]
