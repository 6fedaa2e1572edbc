"""A fuzz pass over the parsers that read what a user types or a model answers: prompt templates, --classes,
--k-range, --shard, cluster names, the labels CSV, `describe --from` records, and the LLM answers IC|TC reads
labels and names from.

The properties: a parser returns or raises its documented error (:class:`InputError`; the LLM-answer
parsers never raise), never anything else; what it accepts round-trips where there is a round trip; and it
answers in bounded time (each test is a bounded number of examples with a deadline, so the file stays near
ten seconds).  Examples are not stored between runs (``database=None``): the suite leaves no files behind.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clipclust.errors import InputError

FAST = settings(max_examples=300, deadline=400, database=None, suppress_health_check=[HealthCheck.too_slow])
FILES = settings(max_examples=100, deadline=800, database=None, suppress_health_check=[HealthCheck.too_slow])

ANY_TEXT = st.text(st.characters(codec=None), max_size=40)  # any code point, lone surrogates included
NAME = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters=",<>"),
               min_size=1, max_size=12).map(str.strip).filter(bool)
DIGITS = st.text(st.sampled_from("0123456789²³¹٣٤۵߂०१" + "/:- +"), max_size=12)  # ASCII and other digits


def refused_or(call, *args, **kwargs):
    """``call(...)``'s result, or None when it raised InputError (anything else fails the test)."""
    try:
        return call(*args, **kwargs)
    except InputError:
        return None


# -- prompt templates


@FAST
@given(ANY_TEXT)
@example("This is a digit")
@example("   ")
def test_a_template_is_accepted_only_when_it_has_a_placeholder(template: str):
    from clipclust.core.templates import PLACEHOLDER, check_template

    accepted = refused_or(check_template, template)
    assert (accepted is not None) == (bool(template.strip()) and PLACEHOLDER in template)


@FAST
@given(st.lists(ANY_TEXT, min_size=2, max_size=4).map("<>".join), st.lists(NAME, min_size=2, max_size=6, unique=True))
def test_an_accepted_template_gives_every_class_its_own_text(template: str, classes: list[str]):
    from clipclust.core.templates import check_template, fill, prompt_texts

    if refused_or(check_template, template) is None:
        return
    texts = prompt_texts(template, classes)
    assert len(set(texts)) == len(classes)
    assert fill(template, "<>") == template


# -- --classes, --k-range, --shard, cluster names


@FAST
@given(ANY_TEXT)
def test_classes_text_is_parsed_or_refused(text: str):
    from clipclust.core.templates import parse_classes

    names = refused_or(parse_classes, text)
    if names is not None:
        assert names and len(set(names)) == len(names) and all(n == n.strip() and n for n in names)


@FAST
@given(st.lists(NAME, min_size=1, max_size=8, unique=True))
def test_classes_round_trip(names: list[str]):
    from clipclust.core.templates import parse_classes

    assert parse_classes(",".join(names)) == names


@FILES
@given(st.binary(max_size=200))
@example("caf\xe9\nna\xefve\n".encode("latin-1"))
def test_a_classes_file_of_any_bytes_is_parsed_or_refused(data: bytes):
    from clipclust.core.templates import parse_classes

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "classes.txt"
        path.write_bytes(data)
        refused_or(parse_classes, None, str(path))


@FAST
@given(DIGITS)
@example("10:2")
@example("²:3")
def test_k_range_text_is_parsed_or_refused(text: str):
    from clipclust.cli.cluster import _k_range
    from clipclust.commands.cluster import _check_request
    from clipclust.methods.registry import ClusterRequest

    parsed = refused_or(_k_range, text)
    if parsed is not None:
        low, high = parsed
        checked = refused_or(lambda: _check_request(ClusterRequest(k="auto", k_range=parsed)) or "accepted")
        assert (checked == "accepted") == (2 <= low <= high)


@FAST
@given(st.integers(-5, 10**6), st.integers(-5, 10**6))
def test_k_range_round_trips(low: int, high: int):
    from clipclust.cli.cluster import _k_range

    assert _k_range(f"{low}:{high}") == (low, high)


@FAST
@given(DIGITS)
@example("²/3")
@example("1/99999999999999999999")
def test_shard_text_is_parsed_or_refused(text: str):
    from clipclust.core.sharding import Shard, parse_shard

    shard = refused_or(parse_shard, text)
    assert shard is None or isinstance(shard, Shard) and 1 <= shard.index <= shard.count


@FAST
@given(st.integers(1, 10**9).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))))
def test_shard_round_trips(shard: tuple[int, int]):
    from clipclust.core.sharding import parse_shard

    text = f"{shard[0]}/{shard[1]}"
    assert str(parse_shard(text)) == text


@FAST
@given(ANY_TEXT)
@example("a\nb")
@example("x.replacing")
def test_a_cluster_name_is_accepted_only_when_it_reads_back_as_given(name: str):
    from clipclust.commands.cluster import _check_name

    if refused_or(_check_name, name) is not None:
        assert name.isprintable() and name == name.strip() and "/" not in name
        name.encode("utf-8")


@FAST
@given(ANY_TEXT)
@example("²")
def test_k_text_is_parsed_or_refused(text: str):
    from clipclust.methods.inputs import parse_k

    k = refused_or(parse_k, text)
    assert k is None or k == "auto" or isinstance(k, int)


@FILES
@given(st.sampled_from([".csv", ".json", ".txt"]), st.binary(max_size=200))
@example(".json", b"[1, 2]")
@example(".csv", b"label\n")
@example(".csv", b'a,"' + b"x" * 200_000 + b'"\n')
def test_a_class_map_of_any_bytes_is_read_or_refused(suffix: str, data: bytes):
    from clipclust.core.templates import read_class_map

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"map{suffix}"
        path.write_bytes(data)
        mapping = refused_or(read_class_map, str(path))
    assert mapping is None or mapping and all(isinstance(v, str) for v in mapping.values())


@FILES
@given(st.binary(max_size=200))
def test_a_prompt_set_file_of_any_bytes_is_read_or_refused(data: bytes):
    from clipclust.core.templates import read_prompt_set

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prompts.txt"
        path.write_bytes(data)
        read = refused_or(read_prompt_set, str(path))
    assert read is None or read[1] and len(set(read[1])) == len(read[1])


# -- the labels CSV


@FILES
@given(st.binary(max_size=300))
@example("path,label\na.png,caf\xe9\n".encode("latin-1"))
@example(b"a.png\n")
@example(b'a.png,"' + b"x" * 200_000 + b'"\n')
def test_a_labels_csv_of_any_bytes_is_read_or_refused(data: bytes):
    from clipclust.core.images import read_labels_csv

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.csv"
        path.write_bytes(data)
        labels = refused_or(read_labels_csv, path)
        assert labels is None or all(isinstance(v, str) for v in labels.values())


LABEL = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp", "Zs")), min_size=1, max_size=10)


@FILES
@given(st.dictionaries(st.text("abcdefgh", min_size=1, max_size=6), LABEL, min_size=1, max_size=5))
def test_labels_round_trip(rows: dict[str, str]):
    from clipclust.core.images import read_labels_csv

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder).resolve()
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for name, label in rows.items():
            writer.writerow([f"{name}.png", label])
        (root / "labels.csv").write_text(buffer.getvalue(), encoding="utf-8")
        for name in rows:
            (root / f"{name}.png").write_bytes(b"")
        read = read_labels_csv(root / "labels.csv")
    assert read == {root / f"{name}.png": label.strip() for name, label in rows.items()}


# -- `describe --from` records


@FILES
@given(st.sampled_from([".jsonl", ".json", ".csv", ".tsv"]), st.binary(max_size=300))
@example(".jsonl", b'{"text": "a \\ud800 digit"}\n')
@example(".csv", "text\ncaf\xe9\n".encode("latin-1"))
@example(".json", b"[1, 2]")
def test_a_descriptions_file_of_any_bytes_is_read_or_refused(suffix: str, data: bytes):
    from clipclust.commands.describe.importing import import_descriptions

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"records{suffix}"
        path.write_bytes(data)
        records = refused_or(import_descriptions, path, path_field=None)
    for record in records or []:
        assert _storable(record.text) and _storable(record.label or "")  # nothing the workspace cannot hold


@FILES
@given(st.lists(st.fixed_dictionaries({"text": ANY_TEXT, "label": ANY_TEXT}), min_size=1, max_size=5))
def test_description_records_round_trip_or_are_refused(rows: list[dict[str, str]]):
    from clipclust.commands.describe.importing import import_descriptions

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "records.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        records = refused_or(import_descriptions, path, label_field="label")
    storable = all(_storable(r["text"]) and _storable(r["label"]) for r in rows)
    if records is None:
        assert not storable or any(not r["text"].strip() for r in rows)
        return
    assert [r.text for r in records] == [r["text"].strip() for r in rows]
    assert [r.label for r in records] == [r["label"] if r["label"].strip() else None for r in rows]


def _storable(text: str) -> bool:
    """Whether the workspace's strings can hold ``text`` (UTF-8, no NUL)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\0" not in text


# -- LLM answers into labels and names


@FAST
@given(ANY_TEXT)
@example("**Answer:** 1. Cats - because they purr")
@example("0_:")  # normalise was not idempotent: "0_" then "0"
def test_an_answer_is_read_into_a_normalised_label(text: str):
    from clipclust.methods.ictc.parsing import normalise, parse_answer, short_label

    label = parse_answer(text)
    assert isinstance(label, str) and label == label.strip()
    assert normalise(label) == label
    short_label(label)


@FAST
@given(st.text(st.characters(codec="utf-8"), max_size=80), st.one_of(st.none(), st.integers(1, 12)))
@example("1. cats\n2. dogs\n1. cats\n2. dogs", 2)
@example('{"names": ["a", "b"]}', None)
@example("| # | name |\n|---|---|\n| 1 | cat |", 1)
def test_a_names_answer_gives_distinct_usable_names(text: str, k: int | None):
    from clipclust.methods.ictc.parsing import is_junk_name, name_key, parse_names

    names = parse_names(text, k)
    assert all(isinstance(n, str) and n.strip() for n in names)
    assert len({name_key(n) for n in names}) == len(names)
    assert not any(is_junk_name(n) for n in names)


WORD = st.text("bcdfghklmnprtvwxz", min_size=4, max_size=8)  # no vowel-led stop words, no plural 's'


@FAST
@given(st.lists(WORD, min_size=2, max_size=8, unique=True), st.sampled_from(["{i}. {n}", "- {n}", "Cluster {i}: {n}",
                                                                          "**{i}.** {n}", "({i}) {n}"]))
def test_a_numbered_or_bulleted_list_of_names_round_trips(names: list[str], style: str):
    from clipclust.methods.ictc.parsing import parse_names

    text = "\n".join(style.format(i=i, n=n) for i, n in enumerate(names, start=1))
    assert parse_names(text, len(names)) == names


@FAST
@given(ANY_TEXT, st.lists(NAME, min_size=1, max_size=6))
def test_an_assignment_answer_maps_to_one_of_the_names(text: str, names: list[str]):
    from clipclust.methods.ictc.matching import match_answer

    match = match_answer(text, names)
    assert 0 <= match.index < len(names)


@FAST
@given(st.lists(NAME, min_size=1, max_size=6), st.data())
def test_a_name_answered_back_is_matched_to_itself(names: list[str], data: st.DataObject):
    from clipclust.methods.ictc.matching import match_answer
    from clipclust.methods.ictc.parsing import name_key

    chosen = data.draw(st.sampled_from(names))
    match = match_answer(chosen, names)
    assert match.matched and (names[match.index] == chosen or name_key(names[match.index]) == name_key(chosen))


def test_no_names_to_match_against_is_an_input_error():
    from clipclust.methods.ictc.matching import match_answer

    with pytest.raises(InputError):
        match_answer("cat", [])
