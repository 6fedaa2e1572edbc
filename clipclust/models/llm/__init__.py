"""Text generation behind one small interface, plus a call cache.

Methods (IC|TC steps 2a, 2b, 3) only see :class:`TextGenerator`: a list of chat requests in, one
string per request out. Backends: a GGUF file through llama-cpp-python, an OpenAI-compatible HTTP
server (llama.cpp's server, vLLM, Ollama: how users scale out), and transformers causal LMs.

:class:`CachedGenerator` wraps any backend so that every call is looked up in a :class:`CallStore`
by a key that covers everything the answer depends on (model identity, decoding parameters, the full
messages, the constraint and the input id). Re-running costs nothing, editing one step's prompt
recomputes only that step, and each finished call is stored at once so that an interruption loses
only the calls in flight.

One module per concern: :mod:`.requests` (decoding, requests, keys), :mod:`.hashing` (file
identities), :mod:`.generator` (the interface), :mod:`.caching` (the call cache), :mod:`.llama`
(llama.cpp), :mod:`.client` (the ``openai`` client of OpenAI-compatible servers), :mod:`.server` (text
generation on them), :mod:`.hf` (transformers) and :mod:`.factory` (the backends' registry, identities
without loading, lazy loading). :mod:`clipclust.models.vlm` builds its describers on the same pieces.
"""

from __future__ import annotations

from clipclust.models.llm.requests import (
    KEY_VERSION,
    DecodeParams,
    GenerationRequest,
    Message,
    canonical_key,
    chat,
    generation_key,
)
from clipclust.models.llm.hashing import directory_sha256, file_sha256
from clipclust.models.llm.generator import TextGenerator
from clipclust.models.llm.caching import (
    CacheStats,
    CachedGenerator,
    CallStore,
    MemoryCallStore,
    ProgressFn,
    run_cached,
)
from clipclust.models.llm.llama import LlamaCppGenerator, choice_grammar, gbnf_literal, load_llama
from clipclust.models.llm.client import DEFAULT_TIMEOUT, OpenAIClient, normalise_base_url, tell_slow
from clipclust.models.llm.server import CONSTRAINT_STRATEGIES, OpenAIGenerator
from clipclust.models.llm.hf import TransformersGenerator, transformers_source
from clipclust.models.llm.factory import GENERATORS, LazyGenerator, known_identity, load_generator

__all__ = [
    "CONSTRAINT_STRATEGIES",
    "DEFAULT_TIMEOUT",
    "GENERATORS",
    "KEY_VERSION",
    "CacheStats",
    "CachedGenerator",
    "CallStore",
    "DecodeParams",
    "GenerationRequest",
    "LazyGenerator",
    "LlamaCppGenerator",
    "MemoryCallStore",
    "Message",
    "OpenAIClient",
    "OpenAIGenerator",
    "ProgressFn",
    "TextGenerator",
    "TransformersGenerator",
    "canonical_key",
    "chat",
    "choice_grammar",
    "directory_sha256",
    "file_sha256",
    "gbnf_literal",
    "generation_key",
    "known_identity",
    "load_generator",
    "load_llama",
    "normalise_base_url",
    "run_cached",
    "tell_slow",
    "transformers_source",
]
