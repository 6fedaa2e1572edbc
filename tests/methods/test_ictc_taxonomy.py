"""IC|TC's label taxonomy with scripted answers and a toy embedder: names at the level K asks for (not
the K most frequent fine labels), the fine case unchanged, a family label never beside its member,
nested levels, k auto's evidence, and the LLM's concept names validated with label fallbacks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from clipclust.errors import InputError
from clipclust.methods.ictc import group_labels, run_ictc
from clipclust.methods.ictc.concepts import head_word, name_concepts
from clipclust.methods.ictc.taxonomy import build_taxonomy, choose_k
from clipclust.models.llm import GenerationRequest

from .test_ictc import Scripted

FAMILY = {"whale": 0, "dolphin": 0, "seal": 0, "eagle": 1, "sparrow": 1, "owl": 1}
COUNTS = {"whale": 8, "dolphin": 6, "seal": 4, "eagle": 7, "sparrow": 5, "owl": 3}


def toy_embed(texts: Sequence[str]) -> np.ndarray:
    """One axis per animal word plus a shared family axis (0.8): family members are close, never
    near-duplicates (cosine 0.39 < the grouping threshold)."""
    words = list(FAMILY)
    out = np.zeros((len(texts), 2 + len(words)))
    for row, text in enumerate(texts):
        for i, word in enumerate(words):
            if word in text:
                out[row, 2 + i] += 1.0
                out[row, FAMILY[word]] += 0.8
        if not out[row].any():
            out[row, 0] = out[row, 1] = 0.1
    return out


def animals(counts: dict[str, int] = COUNTS) -> tuple[list[str], list[int]]:
    descs = [f"a photo of a {w} in the wild" for w, c in counts.items() for _ in range(c)]
    return descs, [FAMILY[w] for w, c in counts.items() for _ in range(c)]


def labelling(names: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """Step 2a: the animal word in the description; a concept-name question: ``names`` by its first label."""
    def script(request: GenerationRequest) -> str:
        text = request.messages[-1]["content"]
        if text.startswith("One short name for: "):
            first = text.split(": ", 1)[1].split(",")[0]
            return (names or {}).get(first, "")
        return next((f"Answer: {w}" for w in FAMILY if w in text), "Answer: none")
    return script


def test_coarse_k_names_concepts_not_the_most_frequent_labels() -> None:
    descs, truth = animals()
    gen = Scripted(labelling({"whale": "Sea mammals", "eagle": "Birds."}))
    res = run_ictc(gen, descs, "animal", 2, mode="label-embed", names_mode="taxonomy", embed=toy_embed)
    assert res.names == ["sea mammals", "birds"]  # never ["whale", "eagle"], the two heaviest labels
    assert res.names_sources == ["llm", "llm"]
    assert res.cluster_ids == truth and res.coverage == 1.0 and all(res.matched)
    asked = [r.messages[-1]["content"] for r in gen.requests if r.messages[-1]["content"].startswith("One short")]
    assert asked == ["One short name for: whale, dolphin, seal", "One short name for: eagle, sparrow, owl"]
    assert any("'birds' (llm) for: eagle, sparrow, owl" == n for n in res.names_notes)
    frequent = run_ictc(gen, descs, "animal", 2, mode="label-embed", names_mode="frequent", embed=toy_embed)
    assert frequent.names == ["whale", "eagle"]  # the old default at a coarse K


def test_bad_concept_names_fall_back_to_label_statistics() -> None:
    descs, truth = animals()
    # generic, another concept's label, junk: each rejected; the heaviest label names the concept
    for bad in ("Things", "eagle", "1.", "A very long name for a group of animals", "whale, dolphin"):
        gen = Scripted(labelling({"whale": bad, "eagle": "birds"}))
        res = run_ictc(gen, descs, "animal", 2, mode="label-embed", names_mode="taxonomy", embed=toy_embed)
        assert res.names == ["whale", "birds"] and res.names_sources == ["heaviest label", "llm"], bad
    same = run_ictc(Scripted(labelling({"whale": "Animals", "eagle": "animals"})), descs, "animal", 2,
                    mode="label-embed", names_mode="taxonomy", embed=toy_embed)
    assert same.names == ["whale", "eagle"]  # one answer for two concepts names neither
    assert head_word({"sports car": 5, "race car": 4, "truck": 3}) == "car"
    assert head_word({"whale": 5, "seal": 4}) is None
    # no LLM at all: label statistics name every concept
    tax, _ = build_taxonomy(group_labels({"sports car": 4, "race car": 4, "eagle": 9}), [], ["x"] * 17,
                            lambda t: np.eye(3)[[0 if "car" in s else 1 if "eagle" in s else 2 for s in t]] + 0.1)
    named = name_concepts(tax, tax.cut(2), None)
    assert named.names == ["eagle", "car"] and named.sources == ["label", "head word"]


def test_fine_k_keeps_the_labels_names_and_assignment() -> None:
    descs, truth = animals()
    gen = Scripted(labelling())
    tax = run_ictc(gen, descs, "animal", 6, mode="label-embed", names_mode="taxonomy", embed=toy_embed)
    old = run_ictc(gen, descs, "animal", 6, mode="label-embed", names_mode="frequent", embed=toy_embed)
    assert sorted(tax.names) == sorted(old.names) == sorted(FAMILY)
    assert [tax.names[i] for i in tax.cluster_ids] == [old.names[i] for i in old.cluster_ids]
    assert tax.names_sources == ["label"] * 6 and tax.coverage == 1.0
    assert not [r for r in gen.requests if r.messages[-1]["content"].startswith("One short")]  # no naming call


def test_a_family_label_joins_its_member_instead_of_taking_a_slot() -> None:
    # "brass" is said of trumpets (its descriptions are trumpet descriptions), and outweighs guitar
    descs = (["a trumpet on a stand"] * 20 + ["a shiny trumpet in a case"] * 9 + ["a violin and bow"] * 20
             + ["a guitar on a chair"] * 8)
    said = ["trumpet"] * 20 + ["brass"] * 9 + ["violin"] * 20 + ["guitar"] * 8

    def script(request: GenerationRequest) -> str:
        text = request.messages[-1]["content"]
        return f"Answer: {said[descs.index(next(d for d in descs if d in text))] if 'shiny' not in text else 'brass'}"

    def embed(texts: Sequence[str]) -> np.ndarray:
        axis = {"trumpet": 0, "violin": 1, "guitar": 2, "brass": 3}  # the words: unrelated to each other
        out = np.full((len(texts), 4), 0.05)
        for row, t in enumerate(texts):
            for word, a in axis.items():
                out[row, a] += 1.0 if word in t else 0.0
        return out

    gen = Scripted(script)
    old = run_ictc(gen, descs, "instrument", 3, mode="label-embed", names_mode="frequent", embed=embed)
    assert old.names == ["trumpet", "violin", "brass"]  # the failure: a family beside its member
    new = run_ictc(gen, descs, "instrument", 3, mode="label-embed", names_mode="taxonomy", embed=embed)
    assert new.names == ["trumpet", "violin", "guitar"]
    assert {new.names[new.cluster_ids[i]] for i in range(20, 29)} == {"trumpet"}  # brass items with the trumpets


def test_levels_nest_and_are_named_at_their_own_level() -> None:
    descs, truth = animals()
    gen = Scripted(labelling({"whale": "sea mammals", "eagle": "birds"}))
    res = run_ictc(gen, descs, "animal", 6, mode="label-embed", names_mode="taxonomy", embed=toy_embed, levels=3)
    assert [lv.k for lv in res.levels][0] == 2 and len(res.levels) == 2
    coarse, middle = res.levels
    assert coarse.names == ["sea mammals", "birds"] and coarse.ids == truth
    for finer_ids, level in ((middle.ids, coarse), (res.cluster_ids, middle)):
        parents: dict[int, set[int]] = {}
        for f, c in zip(finer_ids, level.ids):
            parents.setdefault(f, set()).add(c)
        assert all(len(p) == 1 for p in parents.values())  # every finer cluster inside exactly one coarser
    assert middle.parents_of_finer == [next(iter({c for f, c in zip(res.cluster_ids, middle.ids) if f == i}))
                                       for i in range(6)]
    small = run_ictc(gen, descs, "animal", 2, mode="label-embed", names_mode="taxonomy", embed=toy_embed, levels=2)
    assert small.levels == [] and any("leaves room for 0 coarser level" in w for w in small.warnings)
    with pytest.raises(InputError, match="choose names taxonomy"):
        run_ictc(gen, descs, "animal", 6, mode="label-embed", names_mode="frequent", embed=toy_embed, levels=2)
    with pytest.raises(InputError, match="levels must be 1, 2 or 3"):
        run_ictc(gen, descs, "animal", 6, mode="label-embed", names_mode="taxonomy", embed=toy_embed, levels=4)


def test_k_auto_takes_the_clearest_gap_and_says_why() -> None:
    descs, truth = animals()
    gen = Scripted(labelling({"whale": "sea mammals", "eagle": "birds"}))
    res = run_ictc(gen, descs, "animal", "auto", mode="label-embed", names_mode="taxonomy", embed=toy_embed)
    assert res.k == 2 and res.cluster_ids == truth
    assert res.k_evidence[0] == "candidates 2..6 by the merge-cost gap of the label tree"
    assert sum("(chosen)" in line for line in res.k_evidence) == 1 and "k=2:" in res.k_evidence[1]
    freq = run_ictc(gen, descs, "animal", "auto", mode="label-embed", names_mode="frequent", embed=toy_embed)
    assert freq.k == 2 and freq.k_evidence == res.k_evidence  # K from the tree whatever names the run takes
    tax, _ = build_taxonomy(group_labels(COUNTS), [], descs, toy_embed)
    assert choose_k(tax, 7)[0] in (2, 3)  # bounded by N/2
    with pytest.raises(InputError, match="fewer than k=2"):
        run_ictc(Scripted(lambda r: "Answer: whale"), descs, "animal", "auto", mode="label-embed",
                 names_mode="taxonomy", embed=toy_embed)


def test_auto_names_keep_labels_at_k_level_and_name_concepts_when_labels_are_finer() -> None:
    descs, truth = animals()
    gen = Scripted(labelling({"whale": "Sea mammals", "eagle": "Birds."}))
    fine = run_ictc(gen, descs, "animal", 6, mode="label-embed", names_mode="auto", embed=toy_embed)
    old = run_ictc(gen, descs, "animal", 6, mode="label-embed", names_mode="frequent", embed=toy_embed)
    assert fine.names_mode == "frequent" and fine.names == old.names and fine.cluster_ids == old.cluster_ids
    assert fine.names_choice.startswith("auto: the 6 heaviest raw labels hold 100% of the items, one per concept")
    coarse = run_ictc(gen, descs, "animal", 2, mode="label-embed", names_mode="auto", embed=toy_embed)
    assert coarse.names_mode == "taxonomy" and coarse.names == ["sea mammals", "birds"]
    assert coarse.cluster_ids == truth
    assert "hold 45% of the items (under 50%): the labels are finer than k" in coarse.names_choice
    deeper = run_ictc(gen, descs, "animal", 6, mode="label-embed", names_mode="auto", embed=toy_embed, levels=2)
    assert deeper.names_mode == "taxonomy" and "levels need the concepts" in deeper.names_choice
    assert [lv.k for lv in deeper.levels] == [2]


def values_embed(texts: Sequence[str]) -> np.ndarray:
    """:func:`toy_embed` where "sea" and "ocean" lie on the sea family's axis and "bird" on the birds'."""
    out = toy_embed(texts)
    for row, text in enumerate(texts):
        words = set(text.split())
        if words & {"sea", "ocean", "bird"}:
            out[row] = 0.0
            out[row, 1 if "bird" in words else 0] = 1.0
    return out


def test_k_auto_takes_the_values_the_criterion_names_over_the_labels_level() -> None:
    descs, truth = animals()
    gen = Scripted(labelling())  # the labels stay fine (whale, eagle...) whatever the criterion says
    res = run_ictc(gen, descs, "sea animal or bird", "auto", mode="label-embed", names_mode="auto",
                   embed=values_embed)
    assert res.k == 2 and res.names == ["sea animal", "bird"] and res.cluster_ids == truth
    assert res.names_sources == ["criterion", "criterion"] and res.names_choice == "auto: the values the criterion names"
    assert res.k_evidence[0] == ("the criterion names its values (sea animal, bird): k=2, each raw label under "
                                 "the nearest value")
    assert res.k_evidence[1] == "sea animal: whale (8), dolphin (6), seal (4)"
    assert res.coverage == 1.0
    plain = run_ictc(gen, descs, "animal", "auto", mode="label-embed", names_mode="auto", embed=values_embed)
    assert plain.k_evidence[0] == "candidates 2..6 by the merge-cost gap of the label tree"  # no values: the gap
    given = run_ictc(gen, descs, "sea animal or bird", 6, mode="label-embed", names_mode="auto", embed=values_embed)
    assert given.k == 6 and given.k_evidence == []  # a given K is kept as it is
    frequent = run_ictc(gen, descs, "sea animal or bird", "auto", mode="label-embed", names_mode="frequent",
                        embed=values_embed)
    assert frequent.k == 2 and frequent.names == ["whale", "eagle"]  # the names mode asked for, at the values' K
    deeper = run_ictc(gen, descs, "sea animal or bird", "auto", mode="label-embed", names_mode="auto",
                      embed=values_embed, levels=2)
    assert deeper.levels == [] and any("they are the coarsest level" in w for w in deeper.warnings)


def test_values_no_label_lies_near_fall_back_to_the_gap() -> None:
    descs, truth = animals()
    gen = Scripted(labelling({"whale": "sea mammals", "eagle": "birds"}))
    res = run_ictc(gen, descs, "sea or ocean", "auto", mode="label-embed", names_mode="taxonomy", embed=values_embed)
    assert res.k_evidence[0] == "the criterion names 2 values (sea, ocean) but every raw label lies nearest 'sea'"
    assert res.k_evidence[1] == "candidates 2..6 by the merge-cost gap of the label tree"
    assert res.k == 2 and res.cluster_ids == truth


def test_a_value_nearer_every_label_does_not_gather_them_all() -> None:
    """"shore" lies as near the birds as the sea animals; "flyer" nearer birds only, and far from all:
    uncentred cosines would put every label under "shore"."""
    def embed(texts: Sequence[str]) -> np.ndarray:
        out = np.hstack([toy_embed(texts), np.zeros((len(texts), 1))])
        for row, text in enumerate(texts):
            if text == "shore":
                out[row] = 0.0
                out[row, :2] = 0.5
            elif text == "flyer":
                out[row] = 0.0
                out[row, 1], out[row, -1] = 0.4, 1.0
        return out

    descs, truth = animals()
    res = run_ictc(Scripted(labelling()), descs, "shore or flyer", "auto", mode="label-embed", names_mode="auto",
                   embed=embed)
    assert res.k == 2 and res.names == ["shore", "flyer"] and res.cluster_ids == truth
