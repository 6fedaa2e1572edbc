"""ESMC's model-independent parts: prompts, keywords, lens features, localisation's choice, cluster names."""

from __future__ import annotations

import numpy as np
import pytest

from clipclust.methods.esmc.features import (DEFAULT_TEXT_TEMPLATE, ask_keywords, criterion_prompt, explain,
                                    hellinger_features, hidden_features, lens_features, localise, parse_keywords)


def test_criterion_prompt_fills_the_template_and_refuses_one_without_placeholders() -> None:
    text = criterion_prompt(DEFAULT_TEXT_TEMPLATE, "the  object", " A red car. ")
    assert text.startswith("A red car.\n\n") and "What is the object?" in text
    assert criterion_prompt("The {criterion} of the car is", "color") == "The color of the car is"
    with pytest.raises(ValueError, match="{criterion}"):
        criterion_prompt("no placeholder", "color")
    with pytest.raises(ValueError, match="{description}"):
        criterion_prompt("The {criterion} is", "color", "a description")


def test_keywords_are_parsed_from_lists_and_llm_answers() -> None:
    assert parse_keywords("red, blue,,green") == ["red", "blue", "green"]
    assert parse_keywords("1. Red\n2. Blue.\n- \"green\"\n1. Red") == ["Red", "Blue", "green"]


class _Replies:
    def __init__(self, answer: str) -> None:
        self.answer, self.asked = answer, []

    def generate(self, requests, params=None):
        self.asked.extend(requests)
        return [self.answer for _ in requests]


def test_keywords_asked_from_an_llm_name_the_criterion_and_an_empty_answer_is_an_error() -> None:
    llm = _Replies("Red, blue, green, a very long sentence that is not a keyword")
    assert ask_keywords(llm, "the color of the car", n=3) == ["Red", "blue", "green"]
    assert "color of the car" in llm.asked[0].messages[-1]["content"]
    with pytest.raises(ValueError, match="no keywords"):
        ask_keywords(_Replies(""), "color")


def test_lens_features_spread_each_items_top_tokens_over_their_union() -> None:
    ids = np.array([[5, 9], [9, 2]])
    probs = np.array([[0.6, 0.3], [0.5, 0.4]], dtype=np.float32)
    X, vocab = lens_features(ids, probs)
    assert vocab.tolist() == [2, 5, 9]
    np.testing.assert_allclose(X, [[0.0, 0.6, 0.3], [0.4, 0.0, 0.5]])
    unit = hidden_features(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 0.0]])
    # Hellinger: sqrt then unit length, so two items sharing a second token are closer than raw probabilities say
    H = hellinger_features(np.array([[0.64, 0.36, 0.0], [0.0, 0.36, 0.64]]))
    np.testing.assert_allclose(H, [[0.8, 0.6, 0.0], [0.0, 0.6, 0.8]], atol=1e-6)


def test_explain_names_clusters_by_their_over_represented_tokens() -> None:
    text = {1: " the", 2: " red", 3: " blue", 4: " Red", 5: "<|im_end|>", 6: " crimson"}
    # every item has " the" on top; cluster 0 says red, cluster 1 says blue
    ids = np.array([[1, 2, 4, 6], [1, 2, 4, 6], [1, 3, 5, 2], [1, 3, 5, 6]])  # the special token 5 only in 1
    probs = np.array([[0.5, 0.3, 0.1, 0.05], [0.5, 0.3, 0.1, 0.05], [0.5, 0.4, 0.05, 0.01], [0.5, 0.4, 0.05, 0.01]],
                     dtype=np.float32)
    names = explain(np.array([0, 0, 1, 1]), ids, probs, text, k=3)
    assert names[0].split(" / ")[0] == "red" and "Red" not in names[0] and "the" not in names[0]
    assert names[1] == "blue" and names[2] == ""


class _FakeLens:
    """A 3-layer 'model' whose lens at layer 2, position -2 puts 0.9 on token 7 (the keyword)."""

    n_layers = 3

    def keyword_tokens(self, words):
        return [7] if "red" in words else []

    def states(self, prompts, layers, positions, images=None):
        out = np.zeros((len(prompts), len(layers), len(positions), 2), np.float32)
        for li, layer in enumerate(layers):
            for pi, position in enumerate(positions):
                out[:, li, pi, 0] = 0.9 if (layer, position) == (2, -2) else 0.1 * layer
        return out

    def lens(self, hidden, layer):
        import torch

        probs = torch.full((hidden.shape[0], 10), 0.0)
        probs[:, 7] = torch.as_tensor(hidden[:, 0])
        probs[:, 0] = 1 - probs[:, 7]
        return probs

    def token_texts(self, ids):
        return [f"t{i}" for i in ids]


def test_localise_picks_the_layer_and_position_whose_lens_favours_the_keywords() -> None:
    found = localise(_FakeLens(), ["a", "b"], ["red"])
    assert (found.layer, found.position) == (2, -2) and found.score == pytest.approx(0.9)
    assert [row["layer"] for row in found.table] == [1, 2, 3]
    assert found.table[1]["top"][0] == "t7" and found.n_samples == 2
    with pytest.raises(ValueError, match="keywords"):
        localise(_FakeLens(), ["a"], ["blue"])


def test_state_set_ids_stay_those_of_stored_workspaces() -> None:
    """The states' set ids are pinned: a workspace written before finds its states again (no forward pass)."""
    from clipclust.methods.esmc.states import state_specs

    specs = state_specs("hf:org/model@abc", "fp32", "set123", "T {criterion}", "color", 3, -1)
    assert {role: spec.id for role, spec in specs.items()} == {
        "hidden": "be50b707d67b9a32", "lens": "2c8f6fb52aaba2c4", "vocab": "ce43884e95660b71"}
    assert specs["hidden"].name == "esmc-hidden:color L3@-1" and specs["hidden"].prompt == "T color"
    assert specs["vocab"].keyed_by == "token" and specs["vocab"].dtype == "str" and specs["vocab"].prompt == ""
    assert specs["lens"].provenance["layer"] == 3 and specs["hidden"].attrs == {}


def test_explain_keeps_whole_words_only_and_checks_them_against_the_descriptions() -> None:
    # byte-level BPE (" " start) and SentencePiece ("\u2581" start) marks; pieces that continue a word have none
    text = {1: " Har", 2: "p", 3: "String", 4: "ly", 5: " violin", 6: "\u2581Guitar", 7: " Ac", 8: " 42", 9: " sky"}
    ids = np.array([[1, 3, 4, 5, 2], [1, 3, 4, 5, 2], [6, 7, 8, 9, 2], [6, 7, 8, 9, 2]])
    probs = np.array([[0.4, 0.3, 0.1, 0.1, 0.05]] * 4, dtype=np.float32)
    clusters = np.array([0, 0, 1, 1])
    assert explain(clusters, ids, probs, text, k=2) == ["Har / violin", "Guitar / Ac / sky"]  # word starts only
    texts = ["a woman plays the harp and a violin", "a violin on a chair", "an acoustic guitar under the sky",
             "a guitar on a stage"]
    names = explain(clusters, ids, probs, text, k=2, texts=texts)  # " Har", " Ac": no word of the descriptions
    assert names[0].split(" / ")[0] == "violin" and "Har" not in names[0]
    assert names[1].split(" / ")[:2] == ["Guitar", "sky"] and "Ac" not in names[1].split(" / ")
    assert len(names[0].split(" / ")) == 3  # completed with a word the cluster's descriptions use more
    assert names[0].split(" / ")[1] in {"chair", "woman", "plays", "harp"}


def test_explain_with_the_real_smollm2_tokens_names_clusters_in_whole_words() -> None:
    import llama_cpp

    from ..models.conftest import smollm2_path

    vocab = llama_cpp.Llama(model_path=str(smollm2_path()), vocab_only=True, verbose=False)
    words = {0: [" Harp", " Stringly", " violin"], 1: [" Acoustic", " saxophone", " Guitar", " Woodwind"]}
    token_text: dict[int, str] = {}
    rows = {}
    for cluster, spoken in words.items():
        pieces = [t for w in spoken for t in vocab.tokenize(w.encode(), add_bos=False, special=False)]
        for t in pieces:
            token_text[t] = vocab.detokenize([t], special=True).decode("utf-8", "replace")
        rows[cluster] = pieces
    assert {"Har", "String", "ly", "Ac", "sax", "Wood"} <= {t.strip() for t in token_text.values()}  # real pieces
    width = max(len(r) for r in rows.values())
    ids = np.array([rows[c] + rows[c][:1] * (width - len(rows[c])) for c in (0, 0, 1, 1)])
    probs = np.tile(np.linspace(0.3, 0.05, width, dtype=np.float32), (4, 1))
    texts = ["a harp beside a violin", "a violin player", "an acoustic guitar", "a saxophone and a guitar"]
    names = explain(np.array([0, 0, 1, 1]), ids, probs, token_text, k=2, texts=texts)
    description_words = {w for t in texts for w in t.split()}
    for name in names:
        assert all(word.lower() in description_words for word in name.split(" / ")), names
    assert "violin" in names[0].split(" / ") and "Guitar" in names[1].split(" / ")


def test_ward_levels_nest_the_fine_clusters_and_auto_k_finds_separated_groups() -> None:
    from clipclust.methods.esmc.taxonomy import auto_k, coarse_cuts, ward_tree

    rng = np.random.default_rng(0)
    groups = rng.normal(size=(3, 6)) * 20  # 3 far groups of 3 nearer blobs of 10 items: 9 fine clusters
    blobs = np.repeat(groups, 3, axis=0) + rng.normal(size=(9, 6)) * 3
    fine = np.repeat(np.arange(9), 10)
    X = blobs[fine] + rng.normal(size=(90, 6)) * 0.3
    (coarse,) = coarse_cuts(X, fine, 9, depth=2)
    assert coarse.k == 3 and "K=3" in coarse.evidence[0]
    for c in range(9):  # every fine cluster in one coarse cluster, the coarse clusters the far groups
        assert np.unique(coarse.ids[fine == c]).size == 1
    assert np.unique(coarse.ids.reshape(9, 10)[:, 0].reshape(3, 3), axis=1).shape == (3, 1)
    assert 3 in [cut.k for cut in coarse_cuts(X, fine, 9, depth=3)]  # the far groups are one of the two cuts
    assert coarse_cuts(X, fine, 2, depth=2) == []  # below K=2 there is no coarser level

    tree = ward_tree(blobs[:3], np.array([1.0, 1.0, 2.0]))
    assert len(tree.merges) == 2 and tree.heights[0] <= tree.heights[1]
    assert sorted(np.bincount(tree.cut(2)).tolist()) == [1, 2]

    five = np.repeat(rng.normal(size=(5, 8)) * 10, 12, axis=0) + rng.normal(size=(60, 8))
    k, evidence, table = auto_k(five, (2, 8), seed=0)
    assert k == 5 and "chosen K=5" in evidence[-1] and [row["k"] for row in table] == list(range(2, 9))
    assert evidence[0].startswith("largest eigengap of the states' cosine k-NN graph") and "K=5" in evidence[0]
    assert max(table, key=lambda row: row["votes"])["k"] == 5


def test_auto_k_on_a_large_set_solves_each_component_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lanczos finds one copy of a repeated eigenvalue: five separate groups (five zeros) must still read K=5."""
    import clipclust.methods.esmc.taxonomy as taxonomy

    rng = np.random.default_rng(1)
    five = np.repeat(rng.normal(size=(5, 8)) * 10, 12, axis=0) + rng.normal(size=(60, 8))
    monkeypatch.setattr(taxonomy, "DENSE_EIGEN_MAX", 5)
    values = taxonomy.laplacian_spectrum(five, 8, 8)
    assert np.allclose(values[:5], 0.0, atol=1e-8) and values[5] > 0.5
    assert taxonomy.auto_k(five, (2, 8), seed=0)[0] == 5
