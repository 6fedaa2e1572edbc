"""Vision-language describers: images and a prompt in, one text per image out (a package from here on, to be
split by concern like :mod:`clipclust.models.llm`)."""

from __future__ import annotations

from clipclust.models.vlm.describer import (
    CHAT_HANDLERS,
    DESCRIBE_PARAMS,
    GROUP_PROMPT,
    ITEM_PROMPT,
    CachedDescriber,
    Describer,
    GroupDescription,
    ImageSource,
    LazyDescriber,
    LlamaCppDescriber,
    OpenAIDescriber,
    TransformersDescriber,
    describe_groups,
    describe_key,
    group_indices,
    latteclip_prompt,
    known_describer_identity,
    load_describer,
    select_chat_format,
)

__all__ = [
    "CHAT_HANDLERS",
    "DESCRIBE_PARAMS",
    "GROUP_PROMPT",
    "ITEM_PROMPT",
    "CachedDescriber",
    "Describer",
    "GroupDescription",
    "ImageSource",
    "LazyDescriber",
    "LlamaCppDescriber",
    "OpenAIDescriber",
    "TransformersDescriber",
    "describe_groups",
    "describe_key",
    "group_indices",
    "latteclip_prompt",
    "known_describer_identity",
    "load_describer",
    "select_chat_format",
]
