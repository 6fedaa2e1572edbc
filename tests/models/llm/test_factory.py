"""The text generators' registry: which backend a model string opens, foreign options ignored, the
identity without loading, and lazy loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clipclust.errors import InputError
from clipclust.models.llm import (
    GENERATORS,
    CachedGenerator,
    DecodeParams,
    GenerationRequest,
    LazyGenerator,
    LlamaCppGenerator,
    MemoryCallStore,
    chat,
    known_identity,
    load_generator,
)

from ..conftest import free_port


def test_each_model_string_opens_with_its_backend(gguf_path: Path, tmp_path: Path, tiny_causal_lm_dir: Path) -> None:
    def backend(spec: Any) -> str:
        return GENERATORS.resolve(spec)[0].name

    assert backend(gguf_path) == "llama.cpp"
    assert backend("http://127.0.0.1:8080/v1") == "server" and not GENERATORS.resolve("http://h/v1")[0].local
    assert backend("hf:HuggingFaceTB/SmolLM2-135M-Instruct") == "transformers"
    assert backend(tiny_causal_lm_dir) == "transformers"
    with pytest.raises(InputError, match="unknown model .*nothing-here.*pass a .gguf file.*no such file"):
        backend(tmp_path / "nothing-here")
    with pytest.raises(InputError, match="unknown model 'ViT-B-32/laion2b'"):  # a CLIP name is no LLM
        backend("ViT-B-32/laion2b")
    gen = load_generator(gguf_path, n_ctx=512, n_threads=1, concurrency=8, device="cpu")  # foreign options ignored
    try:
        assert isinstance(gen, LlamaCppGenerator) and gen.n_ctx == 512
    finally:
        gen.close()
    # a server holds no weights here: lazy changes nothing, and a dead one is one line at once
    with pytest.raises(InputError, match="not answering"):
        load_generator(f"http://127.0.0.1:{free_port()}/v1", lazy=True)


def test_lazy_gguf_generator_knows_its_identity_and_loads_on_the_first_call(
    gguf_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clipclust.models.llm as llm

    loads: list[Any] = []
    real = llm.load_llama
    monkeypatch.setattr(llm.llama, "load_llama", lambda *a, **k: loads.append(a) or real(*a, **k))
    gen = load_generator(gguf_path, lazy=True, n_ctx=512, n_threads=1)
    assert isinstance(gen, LazyGenerator) and not gen.loaded
    assert gen.identity == f"llama.cpp:sha256:{llm.file_sha256(gguf_path)}" and loads == []
    assert known_identity(gguf_path) == gen.identity
    cached = CachedGenerator(gen, MemoryCallStore({CachedGenerator(gen, MemoryCallStore()).key(
        GenerationRequest(chat("Say hi."))): "hi"}))
    assert cached.generate([GenerationRequest(chat("Say hi."))]) == ["hi"] and loads == []  # all cached
    try:
        assert len(gen.generate([GenerationRequest(chat("Say hi."))], DecodeParams(max_tokens=2))) == 1
        assert gen.loaded and len(loads) == 1
        assert gen._inner is not None and gen._inner.identity == gen.identity
    finally:
        gen.close()
