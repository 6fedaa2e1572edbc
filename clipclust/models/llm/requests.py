"""Decoding settings, one chat request, and the cache key of an answer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from clipclust.errors import InputError


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
