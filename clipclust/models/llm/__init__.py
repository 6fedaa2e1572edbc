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
identities), :mod:`.generator` (the interface), :mod:`.calls` (the call cache), :mod:`.llama`
(llama.cpp), :mod:`.server` (OpenAI-compatible servers), :mod:`.hf` (transformers) and
:mod:`.factory` (specs, identities without loading, lazy loading).
"""

from __future__ import annotations

from clipclust.models.llm.requests import (  # noqa: F401
    DecodeParams,
    GenerationRequest,
    KEY_VERSION,
    Message,
    canonical_key,
    chat,
    generation_key,
)
from clipclust.models.llm.hashing import (  # noqa: F401
    directory_sha256,
    file_sha256,
)
from clipclust.models.llm.generator import (  # noqa: F401
    TextGenerator,
)
from clipclust.models.llm.caching import (  # noqa: F401
    CacheStats,
    CachedGenerator,
    CallStore,
    MemoryCallStore,
    ProgressFn,
    run_cached,
)
from clipclust.models.llm.llama import (  # noqa: F401
    LlamaCppGenerator,
    _CTX_RE,
    check_gguf_path,
    choice_grammar,
    gbnf_literal,
    import_llama_cpp,
    load_llama,
)
from clipclust.models.llm.server import (  # noqa: F401
    CONSTRAINT_STRATEGIES,
    HTTPStatusError,
    OpenAIClient,
    OpenAIGenerator,
    normalise_base_url,
    pool_iter,
)
from clipclust.models.llm.hf import (  # noqa: F401
    has_chat_template,
    TransformersGenerator,
    _PLAIN_TEMPLATE_NOTE,
    _TokenTrie,
    dtype_kwarg,
    import_transformers,
    plain_chat_prompt,
    resolve_device,
    resolve_dtype,
    transformers_source,
)
from clipclust.models.llm.factory import (  # noqa: F401
    LazyGenerator,
    _GGUF_OPTS,
    _HF_OPTS,
    _HTTP_OPTS,
    image_data_url,
    known_identity,
    load_generator,
    pick_options,
    spec_kind,
)

# The names these helpers had before vlm.py and other modules shared them (kept for existing callers).
_HTTPStatusError, _import_llama_cpp, _import_transformers = HTTPStatusError, import_llama_cpp, import_transformers
_pick, _pool_iter = pick_options, pool_iter

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
