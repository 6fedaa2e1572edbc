"""The values a criterion names itself: what -k auto of the LLM methods reads before the data."""

from __future__ import annotations

import pytest

from clipclust.methods.criterion_values import MAX_VALUES, named_values


@pytest.mark.parametrize("criterion, values", [
    ("animal or vehicle", ["animal", "vehicle"]),
    ("Whether it is an animal or a vehicle?", ["animal", "vehicle"]),
    ("wind or string instrument", ["wind instrument", "string instrument"]),  # the head noun shared
    ("indoor vs outdoor scene", ["indoor scene", "outdoor scene"]),
    ("mood: calm, tense or joyful", ["calm", "tense", "joyful"]),
    ("day/night", ["day", "night"]),
    ("living or non-living", ["living", "non-living"]),
    ("cats versus dogs", ["cats", "dogs"]),
])
def test_alternatives_are_the_values(criterion: str, values: list[str]) -> None:
    assert named_values(criterion) == values


@pytest.mark.parametrize("criterion", [
    "object", "instrument family", "mood", "", "   ",
    "cats, dogs and birds",          # a list without an alternative word: examples, not a partition
    "animal or animal",              # one value
    "red or 3d",                     # not words
    "a very long first alternative here or short",
    " or ".join(f"v{chr(97 + i)}x" for i in range(MAX_VALUES + 1)),  # digits: not values
    " or ".join("abcdefghijklmnopqrstuvwxyz"[i] * 3 for i in range(MAX_VALUES + 1)),  # too many
])
def test_criteria_that_name_no_values(criterion: str) -> None:
    assert named_values(criterion) == []


def test_k_from_values_needs_fewer_values_than_items() -> None:
    from clipclust.methods.criterion_values import k_from_values

    assert k_from_values("animal or vehicle", 10) == (2, "the criterion names its values (animal, vehicle): K=2")
    assert k_from_values("animal or vehicle", 2) is None  # as many values as items: not a clustering
    assert k_from_values("object", 10) is None
