"""Criteria discovery with scripted LLM answers: parsing proposals, merging and ranking them, the label
checks that drop one-value, all-different and duplicate criteria, and the degenerate-output warnings."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pytest

from clipclust.errors import InputError
from clipclust.methods.discover import (all_different, batches, criterion_key, groups_for_mass, merge_candidates, parse_criteria,
                                        partition_ami, run_discover, sample_order, verdict)
from clipclust.models.llm import CachedGenerator, GenerationRequest, MemoryCallStore

from .test_ictc import Scripted

OBJECTS = ("car", "cat", "boat", "dog")
COLOURS = ("red", "blue")
TEXTS = [f"A {COLOURS[i % 2]} {OBJECTS[(i // 2) % 4]} seen outdoors, picture {i}." for i in range(32)]


def test_parse_criteria_reads_lines_and_drops_what_is_not_a_proposal() -> None:
    answer = """Here are three criteria:
cuisine: the country a dish comes from
1. **Main object**: what the picture mainly shows.
- Colour - the dominant colour. Often red.
Criterion 3: setting: indoors or outdoors
criterion: The image features a large truck parked in front of a building with a man
image: the image itself
the object in the image is a deer standing in a grassy field
animal types
"""
    assert parse_criteria(answer) == [("main object", "what the picture mainly shows"),
                                      ("colour", "the dominant colour"), ("setting", "indoors or outdoors"),
                                      ("animal types", "")]
    assert parse_criteria("") == [] and parse_criteria("1.\n2.\n---") == []


def test_criterion_keys_fold_plurals_and_filler_words() -> None:
    assert criterion_key("Animal types") == criterion_key("type of animal") == "animal"
    assert criterion_key("main object") == criterion_key("Objects") == "object"
    assert criterion_key("the image") == "the image"  # only filler: the words themselves


def test_samples_are_seeded_and_batches_bounded() -> None:
    order = sample_order(100, 20, seed=3)
    assert order == sample_order(100, 20, seed=3) and order != sample_order(100, 20, seed=4)
    assert len(set(order)) == 20 and sample_order(5, 20, 0) != [] and sorted(sample_order(5, 20, 0)) == list(range(5))
    assert [len(b) for b in batches(list(range(20)), 8)] == [8, 8, 4]
    assert [len(b) for b in batches(list(range(19)), 8)] == [8, 11]  # a tail under half a batch joins the last


def test_candidates_merge_by_key_and_meaning_and_rank_by_batches() -> None:
    proposals = [[("colour", "c"), ("object", "what")], [("main object", "x"), ("color", "hue")],
                 [("objects", "y")], [("mood", "m")]]

    def toy_embed(texts: Sequence[str]) -> np.ndarray:  # colour ~ color; everything else apart
        axis = {"colour": 0, "color": 0, "object": 1, "mood": 2}
        return np.eye(3)[[axis[t] for t in texts]]

    lexical = merge_candidates(proposals)
    assert [(c.name, c.support) for c in lexical] == [("object", 3), ("colour", 1), ("color", 1), ("mood", 1)]
    merged = merge_candidates(proposals, toy_embed)
    assert [(c.name, c.support) for c in merged] == [("object", 3), ("color", 2), ("mood", 1)]  # ties: the shorter wording
    assert merged[0].explanation == "what" and set(merged[0].forms) == {"object", "main object", "objects"}


def test_group_estimate_and_verdicts() -> None:
    assert groups_for_mass([10, 5, 3, 1, 1, 1]) == 4 and groups_for_mass([10, 5, 3, 1, 1]) == 3 and groups_for_mass([]) == 0 and groups_for_mass([7]) == 1
    assert verdict([("red", 19), ("blue", 1)], 20, 20) == "one value"
    assert verdict([(str(i), 1) for i in range(12)], 12, 12) == "" and all_different([(str(i), 1) for i in range(12)])
    assert not all_different([("red", 2), ("blue", 1)])
    assert verdict([("red", 2), ("blue", 1)], 3, 12) == "no answers"
    assert verdict([("red", 8), ("blue", 4)], 12, 12) == ""
    assert partition_ami([0, 0, 1, 1], [5, 5, 7, 7]) == pytest.approx(1.0)
    assert partition_ami([0, 0, 1, 1], [0, 1, 0, 1]) < 0.1


def _criterion(request: GenerationRequest) -> str:
    system = request.messages[0]["content"]
    if "main object" in system:  # IC|TC's object preset names no criterion
        return "object"
    named = re.search(r'criterion "([^"]+)"', system)
    return named.group(1) if named else "another preset"  # action, mood, location: no answer here


def scripted(proposals: Sequence[str]) -> Scripted:
    """Proposal calls answered in turn from ``proposals``; label calls by reading the description."""
    turn = iter(range(10**6))

    def answer(request: GenerationRequest) -> str:
        if "sort photo collections" in request.messages[0]["content"]:
            return proposals[next(turn) % len(proposals)]
        text, criterion = request.messages[-1]["content"], _criterion(request)
        words = text.lower().rstrip(".").split()
        if criterion in ("object", "thing"):
            return f"Answer: {words[2].capitalize()}"
        if criterion == "colour":
            return f"Answer: {words[1]}"
        if criterion == "setting":
            return "Answer: outdoors"
        if criterion == "kind":  # other words, the same partition as object
            return "Answer: " + {"car": "automobile", "cat": "feline", "boat": "vessel", "dog": "canine"}[words[2]]
        if criterion == "picture number":
            return f"Answer: number {words[-1]}"
        return "Answer: none"

    return Scripted(answer)


PROPOSALS = [
    "cuisine: the country a dish comes from\nobject: what the picture shows\ncolour: the main colour",
    "1. Main object: the thing shown\n2. setting: where it is",
    "object: the thing\nthing: the thing in the picture\npicture number: its index",
    "objects - what is shown\ncolour - its colour\nkind: the kind",
]


def test_run_keeps_criteria_the_labels_support_and_drops_the_rest() -> None:
    gen = scripted(PROPOSALS)
    cached = CachedGenerator(gen, MemoryCallStore())
    result = run_discover(cached, TEXTS, 4, sample=32, batch=8, label_sample=16, check=7, seed=1)
    assert result.n_batches == 4 and result.n_sampled == 32 and result.n_label_sample == 16
    assert [c.name for c in result.criteria] == ["object", "colour"]
    obj, colour = result.criteria
    assert obj.support == 4 and colour.support == 2
    assert {v for v, _ in obj.values} == set(OBJECTS) and obj.n_groups == 4 and obj.n_labelled == 16
    assert {v for v, _ in colour.values} == set(COLOURS) and colour.n_groups == 2
    reasons = {d["criterion"]: d["reason"] for d in result.dropped}
    assert reasons["setting"] == "one value" and reasons["picture number"] == "all different (no value seen twice in 16)"
    assert reasons["thing"] == "duplicate of object (its values for 100% of the items)"
    assert reasons["kind"] == "duplicate of object (AMI 1.00)"
    assert any("'setting': one value for every sampled description" in w for w in result.warnings)
    assert any("found 2 distinct criteria of the 4 asked" in w for w in result.warnings)
    assert reasons["action"] == "no answers"  # the first common criterion, checked after the LLM's six
    # bounded: 4 proposal calls, then 16 labels for each of the 7 candidates checked
    assert len(gen.requests) == 4 + 7 * 16 and result.calls == {"hits": 0, "misses": 4 + 7 * 16}
    again = run_discover(cached, TEXTS, 4, sample=32, batch=8, label_sample=16, check=7, seed=1)
    assert again.calls == {"hits": 116, "misses": 0} and [c.name for c in again.criteria] == ["object", "colour"]


def test_checks_stop_at_n_kept_criteria() -> None:
    gen = scripted(PROPOSALS)
    result = run_discover(gen, TEXTS, 1, sample=16, batch=8, label_sample=8)
    assert [c.name for c in result.criteria] == ["object"] and result.dropped == []
    assert len(gen.requests) == 2 + 8 and result.warnings == []


def test_one_criterion_repeated_by_every_batch_is_warned_about() -> None:
    result = run_discover(scripted(["object: the thing shown"]), TEXTS, 3, sample=24, batch=8, label_sample=8)
    assert [c.name for c in result.criteria] == ["object"]
    assert any("every batch proposed the same criterion, 'object'" in w for w in result.warnings)
    assert any("found 1 distinct criteria of the 3 asked" in w for w in result.warnings)


def test_answers_without_criteria_are_warned_about() -> None:
    copied = "The image features a large red car parked in front of a building on a sunny day."
    result = run_discover(scripted([copied]), TEXTS, 2, sample=16, batch=8, label_sample=8)
    assert result.n_candidates == 0
    assert any("none of the 2 batches' answers named a criterion" in w for w in result.warnings)
    # the common criteria are still checked: here only object holds
    assert [(c.name, c.support) for c in result.criteria] == [("object", 0)]
    assert [d["criterion"] for d in result.dropped] == ["action", "mood", "location"]


@pytest.mark.parametrize("kwargs, needle", [({"n": 0}, "n: the number of criteria"),
                                            ({"sample": 1}, "sample: the sample must"),
                                            ({"batch": 0}, "batch: a batch must"),
                                            ({"label_sample": 1}, "label_sample: the label sample")])
def test_bad_numbers_are_input_errors(kwargs: dict, needle: str) -> None:
    args = {"n": 2, **kwargs}
    with pytest.raises(InputError, match=needle):
        run_discover(scripted(PROPOSALS), TEXTS, args.pop("n"), **args)


def test_a_criterion_answered_with_anothers_values_is_its_duplicate() -> None:
    from clipclust.methods.discover import LabelStats, duplicate_of, shared_values

    obj = LabelStats("object", ["dog", "cat", "car", "dog", "ship", "deer"], [], [0, 1, 2, 0, 3, 4], 5)
    # asked for colour, a small model named the objects again, not item by item: the AMI of two nearly
    # all-different partitions says nothing, the shared values do
    colour = LabelStats("colour", ["cats", "dog", "deer", "ship", "red", "car"], [], [0, 1, 2, 3, 4, 5], 6)
    assert shared_values(colour, obj) == pytest.approx(5 / 6)
    assert duplicate_of(colour, [obj]) == "duplicate of object (its values for 83% of the items)"
    variants = LabelStats("shade", ["dogs", "kitty", "car", "doggy", "ship", "red"], [], [0, 1, 2, 3, 4, 5], 6)
    assert shared_values(variants, obj) == pytest.approx(3 / 6)

    axes = {"kitty": 0, "cat": 0, "doggy": 1, "dog": 1}

    def toy_embed(texts: Sequence[str]) -> np.ndarray:  # kitty ~ cat, doggy ~ dog, every other text apart
        return np.eye(16)[[axes.setdefault(t, len(axes)) for t in texts]]

    # item by item: kitty is the object's cat, doggy its dog (the red item stays apart)
    assert shared_values(variants, obj, toy_embed) == pytest.approx(5 / 6)
    real = LabelStats("colour", ["red", "blue", "red", "blue", "white", "red"], [], [0, 1, 0, 1, 2, 0], 3)
    assert shared_values(real, obj) == 0 and duplicate_of(real, [obj]) is None


def test_common_criteria_follow_the_llms_and_skip_what_it_already_proposed() -> None:
    from clipclust.methods.discover import with_common

    proposed = merge_candidates([[("main object", "x"), ("place", "where")]])
    assert [c.name for c in with_common(proposed)] == ["main object", "place", "action", "mood", "location"]

    axes = {"place": 0, "location": 0}

    def toy_embed(texts: Sequence[str]) -> np.ndarray:  # place ~ location, every other text apart
        return np.eye(8)[[axes.setdefault(t, len(axes)) for t in texts]]

    assert [(c.name, c.support) for c in with_common(proposed, toy_embed)][2:] == [("action", 0), ("mood", 0)]
