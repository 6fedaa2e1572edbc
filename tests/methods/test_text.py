"""The text route (``method="text"``): descriptions embedded by a sentence-transformers model, then k-means.

Tiny self-built models (tests/text_models.py) for the mechanics: the stored, resumable embedding set, -k auto,
the criterion reaching an instruction-aware model as a prefix and reported as unused by a plain one, a re-run
that loads no model; the real packaged MiniLM for the one quality check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import clipclust as cc
from clipclust.errors import InputError
from clipclust.models.text_encoder import E5_INSTRUCT, REPRESENT, TextEncoder, instruction_format

from ..text_models import tiny_text_models  # noqa: F401  (a fixture)
from ..workspaces import blob_workspace, described_workspace

COLOURS = ["red red cat", "red cat red", "a red red cat", "red cat", "red red red cat",
           "blue truck blue", "blue blue truck", "a blue truck", "blue truck blue blue", "truck blue"]
LABELS = ["a"] * 5 + ["b"] * 5


def _st_encode(folder: Path, texts: list[str], prompt: str | None = None) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                        **({"prompt": prompt} if prompt else {}))


def _folder(tmp_path: Path, name: str, prompts: dict[str, str] | None = None, published: str = "") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_name_or_path": published}))
    if prompts is not None:
        (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    return folder


def test_instruction_format_read_from_the_model_files(tmp_path: Path) -> None:
    qwen = _folder(tmp_path, "a", {"query": "Instruct: Given a web search query, retrieve passages\nQuery:",
                                   "document": ""})
    # the model's own separator ("Query:" without a space) is kept
    assert instruction_format(qwen).prefix("cluster by mood") == "Instruct: cluster by mood\nQuery:"
    assert instruction_format(_folder(tmp_path, "b", {"query": "Represent this sentence for searching: "})).template \
        == REPRESENT
    assert instruction_format(_folder(tmp_path, "c", {}, "intfloat/multilingual-e5-large-instruct")).template \
        == E5_INSTRUCT
    assert instruction_format(_folder(tmp_path, "d", {"query": "query: ", "passage": "passage: "},
                                      "intfloat/e5-base-v2")) is None  # fixed prefixes, no instruction
    assert instruction_format(_folder(tmp_path, "e", None, "sentence-transformers/all-MiniLM-L6-v2")) is None
    assert TextEncoder().instruction_format is None  # the packaged MiniLM, read without loading it


def test_clusters_descriptions_and_stores_the_embeddings(tmp_path: Path, tiny_text_models) -> None:
    ws, keys = described_workspace(tmp_path / "ws.h5", COLOURS, LABELS)
    summary = cc.cluster(ws, method="text", k=2, text_model=str(tiny_text_models["plain"]))
    assert summary.method == "text" and summary.n_clusters == 2 and not summary.reused
    stored = ws.read_clustering(summary.name)
    params = summary.params
    assert params["n_encoded"] == 10 and params["prompt"] == "" and params["criterion"] is None
    embedded = next(s for s in ws.list_sets() if s.id == params["embedding_set"])
    assert embedded.kind == "text-embedding" and embedded.shape == (10, 16)
    set_keys, vectors = ws.read_set(embedded.id)
    row = {k: i for i, k in enumerate(set_keys)}
    expected = _st_encode(tiny_text_models["plain"], COLOURS)
    assert np.allclose(vectors[[row[k] for k in keys]], expected, atol=1e-5)
    from clipclust.core.clustering import cluster

    assert stored["keys"] == keys  # the description set's order
    assert np.array_equal(np.asarray(stored["ids"]), cluster(expected, "kmeans", 2, 0).ids)  # k-means, seed 0
    # the clustering's input is the embedding set, the descriptions named beside it: evaluate scores its
    # silhouette, visualize maps it
    assert params["sets"]["input"]["id"] == embedded.id and params["sets"]["descriptions"]["kind"] == "description"
    assert summary.on == embedded.name == "text:st on description:synthetic"
    scores = cc.evaluate(ws, summary.name).to_dict()[summary.name]
    assert scores["silhouette"] is not None and scores["acc"] is not None
    assert cc.visualize(ws, summary.name, "pca", tmp_path / "map.png").n_points == 10
    # item-keyed: a classic method clusters the same vectors by name
    assert cc.cluster(ws, method="agglomerative", k=2, on=embedded.id).n_clusters == 2


def test_k_auto_chooses_by_silhouette_over_the_range(tmp_path: Path, tiny_text_models) -> None:
    ws, _ = described_workspace(tmp_path / "ws.h5", COLOURS, LABELS)
    summary = cc.cluster(ws, method="text", k="auto", k_range=(2, 5), text_model=str(tiny_text_models["plain"]))
    table = summary.k_table
    assert [row["k"] for row in table] == [2, 3, 4, 5]
    best = max(table, key=lambda row: (row["silhouette"], -row["k"]))
    assert summary.k == best["k"] == summary.params["k_chosen"] == summary.n_clusters
    with pytest.raises(InputError, match="k_range"):
        cc.cluster(ws, method="text", k="auto", k_range=(12, 20), text_model=str(tiny_text_models["plain"]))
    named = cc.cluster(ws, method="text", k="auto", k_range=(3, 5), criterion="warm or cool colour",
                       text_model=str(tiny_text_models["plain"]))
    assert named.k == named.params["k_chosen"] == 2 and named.k_table is None
    assert named.params["k_evidence"] == ["the criterion names its values (warm colour, cool colour): K=2"]


def test_the_criterion_reaches_an_instruction_aware_model_as_its_prefix(tmp_path: Path, tiny_text_models) -> None:
    ws, keys = described_workspace(tmp_path / "ws.h5", COLOURS, LABELS)
    folder = tiny_text_models["prompted"]
    summary = cc.cluster(ws, method="text", k=2, criterion="color", text_model=str(folder))
    prefix = "Instruct: cluster by color\nQuery: "
    params = summary.params
    assert params["criterion_used"] is True and params["prompt"] == prefix
    assert "as the instruction" in params["criterion_note"] and "'query' prompt" in params["criterion_note"]
    set_keys, vectors = ws.read_set(params["embedding_set"])
    row = {k: i for i, k in enumerate(set_keys)}
    got = vectors[[row[k] for k in keys]]
    assert np.allclose(got, _st_encode(folder, COLOURS, prompt=prefix), atol=1e-5)
    assert not np.allclose(got, _st_encode(folder, COLOURS), atol=1e-3)  # the prefix changed the vectors
    # another criterion is another instruction: another set, another request
    other = cc.cluster(ws, method="text", k=2, criterion="animal", text_model=str(folder))
    assert other.params["embedding_set"] != params["embedding_set"] and other.params["n_encoded"] == 10


def test_a_plain_model_says_the_criterion_was_not_used(tmp_path: Path, tiny_text_models) -> None:
    ws, _ = described_workspace(tmp_path / "ws.h5", COLOURS, LABELS)
    folder = tiny_text_models["plain"]
    summary = cc.cluster(ws, method="text", k=2, criterion="color", text_model=str(folder))
    params = summary.params
    assert params["criterion_used"] is False and params["prompt"] == ""
    assert "criterion 'color' not used" in params["criterion_note"]
    from clipclust.methods import get_method

    lines = get_method("text").report(summary)
    assert any("criterion 'color' not used" in line for line in lines)
    # the same vectors as without a criterion: nothing was prefixed
    bare = cc.cluster(ws, method="text", k=2, text_model=str(folder))
    assert bare.params["embedding_set"] == params["embedding_set"] and bare.params["n_encoded"] == 0


def test_a_rerun_or_another_k_loads_no_model(tmp_path: Path, tiny_text_models, monkeypatch) -> None:
    ws, _ = described_workspace(tmp_path / "ws.h5", COLOURS, LABELS)
    model = str(tiny_text_models["plain"])
    first = cc.cluster(ws, method="text", k=2, text_model=model)
    import sentence_transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(sentence_transformers.SentenceTransformer, "__init__", refuse)
    assert cc.cluster(ws, method="text", k=2, text_model=model).reused
    forced = cc.cluster(ws, method="text", k=2, text_model=model, force=True)
    other_k = cc.cluster(ws, method="text", k=3, text_model=model, name="three")
    assert not forced.reused and forced.params["n_encoded"] == 0 and other_k.params["n_encoded"] == 0
    assert np.array_equal(ws.read_clustering(first.name)["ids"], ws.read_clustering(forced.name)["ids"])
    assert other_k.n_clusters == 3


class _FailingOnce:
    """A text encoder that fails on its second batch (a crash mid-run), then works when asked again."""

    def __init__(self, inner: TextEncoder) -> None:
        self.inner, self.identity, self.spec, self.calls = inner, inner.identity, inner.spec, 0
        self.instruction_format, self.instruction_prefix = inner.instruction_format, inner.instruction_prefix
        self.texts: list[str] = []

    def __call__(self, texts, prompt=None):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("out of memory")
        self.texts += list(texts)
        return self.inner(texts, prompt=prompt)


def test_an_interrupted_run_keeps_its_batches_and_the_next_encodes_the_rest(tmp_path: Path, tiny_text_models) -> None:
    ws, keys = described_workspace(tmp_path / "ws.h5", COLOURS, LABELS)
    failing = _FailingOnce(TextEncoder(str(tiny_text_models["plain"])))
    with pytest.raises(RuntimeError, match="out of memory"):
        cc.cluster(ws, method="text", k=2, text_encoder=failing, encode_batch=4)
    assert "text-description-synthetic" not in ws.list_clusterings()
    embedded = [s for s in ws.list_sets() if s.kind == "text-embedding"]
    assert len(embedded) == 1 and embedded[0].shape[0] == 4  # the first batch is kept
    summary = cc.cluster(ws, method="text", k=2, text_encoder=failing, encode_batch=4)
    assert summary.params["n_encoded"] == 6 and len(failing.texts) == 10  # each description embedded once
    assert ws.read_set(embedded[0].id)[1].shape == (10, 16)


def test_bad_requests_are_input_errors(tmp_path: Path, tiny_text_models) -> None:
    blobs, *_ = blob_workspace(tmp_path / "blobs.h5", n_per_class=3, n_classes=2)
    with pytest.raises(InputError, match="needs descriptions"):
        cc.cluster(blobs, method="text", k=2)
    ws, _ = described_workspace(tmp_path / "ws.h5", COLOURS, LABELS)
    with pytest.raises(InputError) as missing:
        cc.cluster(ws, method="text", k=2, text_model=str(tmp_path / "no-such-model"))
    assert missing.value.option == "text_model"
    with pytest.raises(InputError) as too_many:
        cc.cluster(ws, method="text", k=11, text_model=str(tiny_text_models["plain"]))
    assert too_many.value.option == "k" and "10 items" in str(too_many.value)
    with pytest.raises(InputError) as no_k:
        cc.cluster(ws, method="text", text_model=str(tiny_text_models["plain"]))
    assert no_k.value.option == "k"


TOPICS = [
    ("The chef stirred the tomato sauce and tasted the soup.", "cooking"),
    ("Bake the bread in a hot oven for forty minutes.", "cooking"),
    ("She chopped onions and garlic for the pasta.", "cooking"),
    ("A recipe for chocolate cake with butter and sugar.", "cooking"),
    ("The striker scored a goal in the final minute of the match.", "football"),
    ("The goalkeeper saved a penalty kick.", "football"),
    ("Fans cheered as the team won the league title.", "football"),
    ("The referee showed the defender a red card.", "football"),
]


def test_the_packaged_minilm_separates_two_topics(tmp_path: Path) -> None:
    ws, _ = described_workspace(tmp_path / "ws.h5", [t for t, _ in TOPICS], [lab for _, lab in TOPICS])
    summary = cc.cluster(ws, method="text", k=2, criterion="topic")
    ids = np.asarray(ws.read_clustering(summary.name)["ids"])
    assert len(set(ids[:4])) == 1 and len(set(ids[4:])) == 1 and ids[0] != ids[4]
    assert summary.params["criterion_used"] is False  # MiniLM takes no instruction, and says so
    assert summary.params["text_model_name"] == "all-MiniLM-L6-v2"


def test_models_saved_under_one_folder_name_have_different_identities(tiny_text_models) -> None:
    plain, prompted = (TextEncoder(str(tiny_text_models[name])) for name in ("plain", "prompted"))
    assert plain.folder.name == prompted.folder.name == "st"  # same name, same architecture, same weight size
    assert plain.identity != prompted.identity  # the weights' fingerprint tells them apart
    assert plain.identity == TextEncoder(str(tiny_text_models["plain"])).identity
