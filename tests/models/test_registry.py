"""Model strings and backends: one reader of the strings, and each model kind's registry choosing a backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipclust.cli.common import describe_error
from clipclust.errors import ClipclustError, InputError
from clipclust.models.clip import ENCODERS, parse_model_spec
from clipclust.models.hidden import READERS
from clipclust.models.llm import GENERATORS
from clipclust.models.registry import Backend, LazyModel, Registry, model_ref
from clipclust.models.vlm import DESCRIBERS


def test_every_form_of_a_model_string(tmp_path: Path) -> None:
    gguf = tmp_path / "weights.bin"
    gguf.write_bytes(b"GGUF" + bytes(8))
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"not gguf")
    forms = {
        "http://127.0.0.1:8080/v1": "url", "https://api.example.com/v1": "url", "hf:org/name": "hf",
        "hf-hub:org/name": "hf-hub", f"local-dir:{tmp_path}": "local-dir", str(tmp_path / "missing.gguf"): "gguf",
        str(gguf): "gguf", str(tmp_path): "dir", str(checkpoint): "file", "ViT-B-32/laion2b_s34b_b79k": "name",
        "plainword": "unknown", "": "unknown",
    }
    assert {spec: model_ref(spec).form for spec in forms} == forms
    assert model_ref(" hf:org/name ").name == "org/name" and model_ref(f"local-dir:{tmp_path}").path == tmp_path
    assert model_ref(tmp_path / "missing.gguf").path == tmp_path / "missing.gguf"


def test_each_kind_takes_its_own_forms(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    taken = {kind: [b.name for b in registry.backends if b.accepts(model_ref(str(tmp_path)))]
             for kind, registry in [("clip", ENCODERS), ("llm", GENERATORS), ("vlm", DESCRIBERS), ("hidden", READERS)]}
    assert taken == {"clip": ["transformers"], "llm": ["transformers"], "vlm": ["transformers"], "hidden": ["transformers"]}
    (tmp_path / "open_clip_config.json").write_text("{}")  # a folder with both configs is open_clip's
    assert ENCODERS.resolve(tmp_path)[0].name == "open_clip"
    assert [ENCODERS.resolve(s)[0].name for s in ("ViT-B-32/x", "hf-hub:a/b", "hf:a/b")] == ["open_clip", "open_clip", "transformers"]
    with pytest.raises(InputError, match="unknown model 'ViT-B-32/x': pass hf:ORG/NAME"):
        READERS.resolve("ViT-B-32/x")
    for registry in (GENERATORS, DESCRIBERS):
        with pytest.raises(InputError, match="unknown model 'hf-hub:a/b'"):
            registry.resolve("hf-hub:a/b")


def test_clip_refusals_say_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="folder has neither open_clip_config.json"):
        parse_model_spec(str(tmp_path))
    checkpoint = tmp_path / "w.pt"
    checkpoint.write_bytes(b"weights")
    with pytest.raises(InputError) as caught:
        parse_model_spec(str(checkpoint))
    assert describe_error(caught.value).endswith(f"needs its architecture: --model ARCH/{checkpoint}")
    with pytest.raises(InputError) as caught:
        parse_model_spec(" ")
    assert describe_error(caught.value) == "empty --model; e.g. --model ViT-B-32/laion2b_s34b_b79k"
    with pytest.raises(InputError, match="unknown model 'plainword': use ARCH/PRETRAINED"):
        parse_model_spec("plainword")


class Toy:
    def __init__(self, spec: str, identity: str | None = None, **opts: object) -> None:
        self.identity, self.name, self.opts, self.closed = identity or f"toy:{spec}", f"toy {spec}", opts, False

    def close(self) -> None:
        self.closed = True


def toys(known: str | None) -> Registry:
    registry = Registry("toy", "pass a toy")
    registry.register(Backend("toy", frozenset({"name"}), Toy, options=frozenset({"identity", "size"}),
                              identity=lambda spec, **_: known))
    return registry


def test_a_backend_gets_only_the_options_it_declares_and_unset_ones_are_dropped() -> None:
    opened = toys(None).open("a/b", size=3, colour="red", identity=None)
    assert opened.opts == {"size": 3}
    with pytest.raises(ValueError, match="registered twice"):
        toys(None).register(Backend("toy", frozenset({"url"}), Toy))
    with pytest.raises(ValueError, match=r"unknown forms \['http'\]"):
        toys(None).register(Backend("web", frozenset({"http"}), Toy))
    with pytest.raises(InputError, match="unknown model 'hf:x/y': pass a toy$"):
        toys(None).open("hf:x/y")


def test_a_lazy_model_loads_on_first_use_and_refuses_an_identity_that_moved() -> None:
    lazy = LazyModel(toys("toy:a/b"), "a/b")
    assert lazy.identity == "toy:a/b" and not lazy.loaded and lazy.name == "a/b"
    assert lazy._model().name == "toy a/b" and lazy.loaded and lazy.name == "toy a/b"
    unknown = LazyModel(toys(None), "a/b")
    assert unknown.identity == "toy:a/b" and unknown.loaded  # not knowable: asking loads
    moved = LazyModel(toys("toy:a/b"), "a/b", identity="toy:other")
    with pytest.raises(ClipclustError, match="identity toy:other differs from toy:a/b"):
        moved._model()
    assert not moved.loaded
