"""The describers' registry: which backend a model string opens, the identity without loading, lazy loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clipclust.errors import InputError
from clipclust.models.llm import DecodeParams, MemoryCallStore
from clipclust.models.vlm import (
    DESCRIBERS,
    CachedDescriber,
    LazyDescriber,
    TransformersDescriber,
    known_describer_identity,
    load_describer,
)

from .conftest import solid


def test_each_model_string_opens_with_its_backend(gguf_path: Path, tiny_vlm_dir: Path, tmp_path: Path) -> None:
    assert [b.name for b in DESCRIBERS.backends] == ["llama.cpp", "server", "transformers"]
    assert DESCRIBERS.resolve(gguf_path)[0].name == "llama.cpp"
    assert DESCRIBERS.resolve("https://example.org/v1")[0].name == "server"
    assert DESCRIBERS.resolve(tiny_vlm_dir)[0].name == "transformers"
    with pytest.raises(InputError, match="unknown model .*: pass a .gguf file \\(with its mmproj\\)"):
        load_describer(tmp_path / "nothing-here")
    assert known_describer_identity(gguf_path) is None  # no projector: opening it says what is missing


def test_lazy_describer_knows_its_identity_and_loads_on_the_first_miss(
    tiny_vlm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Any] = []
    real = TransformersDescriber.__init__
    monkeypatch.setattr(TransformersDescriber, "__init__", lambda self, *a, **k: opened.append(a) or real(self, *a, **k))
    lazy = load_describer(tiny_vlm_dir, lazy=True, device="cpu", mmproj=None)
    assert isinstance(lazy, LazyDescriber) and not lazy.loaded and lazy.name == str(tiny_vlm_dir)
    assert lazy.identity == known_describer_identity(tiny_vlm_dir) and lazy.identity.startswith("transformers-vlm:dir:")
    params = DecodeParams(max_tokens=3)
    store = MemoryCallStore()
    cached = CachedDescriber(lazy, store)
    assert cached.describe([], "describe the image", params, input_ids=[]) == [] and opened == []
    texts = cached.describe([solid((255, 0, 0))], "describe the image", params, input_ids=["a"])
    assert lazy.loaded and len(opened) == 1 and lazy._inner.identity == lazy.identity
    again = CachedDescriber(load_describer(tiny_vlm_dir, lazy=True, device="cpu"), store)
    assert again.describe([solid((255, 0, 0))], "describe the image", params, input_ids=["a"]) == texts
    assert not again.describer.loaded  # every description stored: nothing loaded
