"""transformers causal LMs (a tiny self-built Llama): determinism, token-trie constraints, and the hub
identity before and after the first download."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipclust.models.llm import (
    DecodeParams,
    GenerationRequest,
    TransformersGenerator,
    chat,
    known_identity,
    load_generator,
    transformers_source,
)


def test_transformers_generator_deterministic_and_constrained(tiny_causal_lm_dir: Path) -> None:
    gen = load_generator(tiny_causal_lm_dir, device="cpu")
    assert isinstance(gen, TransformersGenerator)
    assert gen.identity.startswith("transformers:dir:sha256:")
    free = [GenerationRequest(chat("describe the cat")), GenerationRequest(chat("describe the red car"))]
    a = gen.generate(free, DecodeParams(max_tokens=6))
    assert a == gen.generate(free, DecodeParams(max_tokens=6))
    choices = ("cat", "red car", "blue ship")
    out = gen.generate(
        [GenerationRequest(chat(f"describe the {w}"), choices) for w in ("cat", "dog", "bird", "car")],
        DecodeParams(max_tokens=6),
    )
    assert all(o in choices for o in out), out
    assert load_generator(tiny_causal_lm_dir, device="cpu").identity == gen.identity



def _fake_hub_snapshot(cache: Path, repo: str, commit: str, model_dir: Path) -> None:
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in model_dir.iterdir():
        if f.is_file():
            (snap / f.name).write_bytes(f.read_bytes())
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)


def test_hub_identity_is_the_snapshot_commit_before_and_after_download(
    tmp_path: Path, tiny_causal_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert transformers_source("hf:org/tiny") == ("org/tiny", None)  # not downloaded: unknown, never "@main"
    assert known_identity("hf:org/tiny") is None
    commit = "0123456789abcdef0123456789abcdef01234567"
    _fake_hub_snapshot(tmp_path / "hub", "org/tiny", commit, tiny_causal_lm_dir)
    assert transformers_source("hf:org/tiny") == ("org/tiny", f"hf:org/tiny@{commit}")
    ident = known_identity("hf:org/tiny")
    assert ident is not None and ident.startswith(f"transformers:hf:org/tiny@{commit}")
    direct = known_identity(tiny_causal_lm_dir)
    loaded = load_generator(tiny_causal_lm_dir, device="cpu")
    try:
        assert direct == loaded.identity  # the same identity with and without loading
    finally:
        loaded.close()
