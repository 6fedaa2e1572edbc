"""The discover use case: reads the description set, stores its result keyed by the request, and answers the
same request again from the store without any model call; bad requests are input errors."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from clipclust.commands.discover import discover
from clipclust.commands.describe import import_into_workspace
from clipclust.errors import InputError
from clipclust.models.llm import DecodeParams, GenerationRequest, TextGenerator
from clipclust.store import Workspace

from ..methods.test_discover import PROPOSALS, TEXTS, scripted


class Refusing(TextGenerator):
    """A generator that must not be asked anything."""

    identity = "scripted"

    def generate(self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None) -> list[str]:
        raise AssertionError("a stored result was asked of the LLM again")


class ToyEncoder:
    """A text encoder that needs no model: one axis per distinct text, so nothing merges by meaning."""

    identity = "toy-encoder"

    def __init__(self) -> None:
        self.axes: dict[str, int] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return np.eye(256)[[self.axes.setdefault(t, len(self.axes)) for t in texts]]


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    src = tmp_path / "things.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    workspace = Workspace(tmp_path / "ws.h5")
    import_into_workspace(workspace, str(src))
    return workspace


def test_discover_stores_the_result_and_reuses_it_without_calls(ws: Workspace) -> None:
    gen = scripted(PROPOSALS)
    first = discover(ws, generator=gen, n=2, sample=32, batch=8, label_sample=16, text_encoder=ToyEncoder())
    assert not first.reused and first.n_items == 32 and first.on == "description:import-things"
    assert [c["criterion"] for c in first.criteria] == ["object", "colour"]
    assert first.criteria[0]["groups"] == 4 and first.calls["misses"] == len(gen.requests) > 0
    assert first.to_dict()["criteria"][1]["values"][0]["value"] in ("red", "blue")

    again = discover(Workspace(ws.path), generator=Refusing(), n=2, sample=32, batch=8, label_sample=16,
                     text_encoder=ToyEncoder())
    assert again.reused and again.calls == {} and again.criteria == first.criteria and again.key == first.key

    other = discover(ws, generator=scripted(PROPOSALS), n=1, sample=32, batch=8, label_sample=16,
                     text_encoder=ToyEncoder())
    assert not other.reused and other.key != first.key and other.calls["hits"] > 0  # answers came from the cache
    forced = discover(ws, generator=scripted(PROPOSALS), n=2, sample=32, batch=8, label_sample=16,
                      text_encoder=ToyEncoder(), force=True)
    assert not forced.reused and forced.calls["misses"] == 0 and forced.criteria == first.criteria


@pytest.mark.parametrize("kwargs, needle", [
    ({"n": 0}, "n: the number of criteria"),
    ({"sample": 1}, "sample: the sample"),
    ({"generator": None}, "llm: discovering criteria needs an LLM"),
    ({"on": "nothing"}, "nothing"),
    ({"threads": 2}, "unknown option 'threads'"),
])
def test_bad_requests(ws: Workspace, kwargs: dict, needle: str) -> None:
    args = {"generator": scripted(PROPOSALS), "text_encoder": ToyEncoder(), **kwargs}
    with pytest.raises(InputError, match=needle):
        discover(ws, **args)


def test_a_workspace_without_descriptions(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no workspace"):
        discover(Workspace(tmp_path / "none.h5"), generator=scripted(PROPOSALS), text_encoder=ToyEncoder())
