"""`clipclust cluster --method ictc` end to end with the real SmolLM2 GGUF (one thread, 12 descriptions):
imported descriptions -> K names -> every item assigned; re-runs served by the call cache; evaluate and
export show the names; bad requests are one stderr line with exit code 2."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from clipclust.store import Workspace

from ..models.conftest import smollm2_path
from .conftest import one_error_line

MOODS = [
    ("A smiling child laughing at a sunny birthday party.", "happy"),
    ("People cheering and dancing joyfully at a festival.", "happy"),
    ("A grinning man celebrating a goal with raised arms.", "happy"),
    ("A bride and groom laughing under confetti.", "happy"),
    ("A lonely woman crying alone on a rainy bench.", "sad"),
    ("A man with his head in his hands, tears on his face.", "sad"),
    ("A grieving family in black clothes at a funeral.", "sad"),
    ("A sad dog looking out of a window on a grey day.", "sad"),
    ("An angry man shouting and pointing his finger.", "angry"),
    ("Two drivers yelling angrily at each other in traffic.", "angry"),
    ("A furious woman slamming her fist on the table.", "angry"),
    ("Protesters with clenched fists screaming in rage.", "angry"),
]


@pytest.fixture(autouse=True)
def _private_hash_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPCLUST_HASH_MEMO", str(tmp_path / "hashes.json"))


@pytest.fixture()
def imported(cli, tmp_path: Path) -> Path:
    src = tmp_path / "moods.jsonl"
    src.write_text("".join(json.dumps({"text": t, "mood": m}) + "\n" for t, m in MOODS))
    res = cli("describe", "--from", str(src), "--label-field", "mood")
    assert res.code == 0, res.err
    return tmp_path / "ws.h5"


def ictc(cli, *extra: str):
    return cli("cluster", "--method", "ictc", "--criterion", "mood", "-k", "3", "--llm", str(smollm2_path()),
               "--threads", "1", "--n-ctx", "2048", *extra)


def test_ictc_constrained_end_to_end_then_cached(cli, imported: Path) -> None:
    first = ictc(cli, "--names", "llm", "--assign", "constrained", "--json")
    assert first.code == 0, first.err
    summary = json.loads(first.out)
    assert summary["name"] == "ictc-mood" and summary["method"] == "ictc"
    names = summary["names"]
    assert len(names) == 3 and len(set(names)) == 3 and all(names)
    params = summary["params"]
    assert params["calls_total"]["misses"] > 0 and params["calls"]["step3"]["misses"] == 12
    assert params["n_unmatched"] == 0  # constrained decoding can only answer one of the names

    ws = Workspace(imported)
    stored = ws.read_clustering("ictc-mood")
    assert list(stored["names"]) == names
    ids = np.asarray(stored["ids"])
    assert ids.shape == (12,) and ids.min() >= 0 and ids.max() < 3  # every item assigned to a real cluster
    assert set(stored["keys"]) == set(ws.items().sha256)
    assert len(stored["raw_labels"]) == 12 and len(stored["answers"]) == 12
    assert all(stored["answers"][i] == names[c] for i, c in enumerate(ids))
    assert set(stored["params"]["kept"]) <= set(stored["params"]["dictionary"])

    reused = ictc(cli, "--names", "llm", "--assign", "constrained")
    assert reused.code == 0, reused.err
    assert "ictc-mood: reused" in reused.out and all(n in reused.out for n in names)

    forced = json.loads(ictc(cli, "--names", "llm", "--assign", "constrained", "--force", "--json").out)
    total = params["calls_total"]["hits"] + params["calls_total"]["misses"]
    assert forced["params"]["calls_total"] == {"hits": total, "misses": 0}  # every answer from the cache
    assert forced["names"] == names and forced["sizes"] == summary["sizes"]

    # an edited --extra changes step 2b's prompt: step 2a comes from the cache, step 2b is asked again
    edited = json.loads(ictc(cli, "--names", "llm", "--assign", "constrained", "--extra", "Use one word per name.", "--json").out)
    assert edited["params"]["calls"]["step2a"] == {"hits": 12, "misses": 0}
    assert edited["params"]["calls"]["step2b"]["misses"] >= 1

    report = cli("evaluate", "ictc-mood", "--json")
    assert report.code == 0, report.err
    data = json.loads(report.out)["ictc-mood"]
    assert data["cluster_names"] == edited["names"] and data["n_labelled"] == 12 and data["silhouette"] is None
    table = cli("evaluate", "ictc-mood")
    assert table.code == 0 and table.err == "" and "ictc-mood clusters: 0 " + edited["names"][0] in table.out

    exported = cli("export", "ictc-mood")
    assert exported.code == 0, exported.err
    rows = list(csv.DictReader(io.StringIO(exported.out)))
    assert len(rows) == 12
    assert all(r["cluster_name"] == edited["names"][int(r["cluster"])] for r in rows)
    assert {r["label"] for r in rows} == {"happy", "sad", "angry"}


def test_ictc_defaults_name_from_labels_and_a_rerun_loads_no_model(
    cli, imported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ictc(cli)
    assert first.code == 0, first.err
    assert "coverage " in first.out and "items assigned to the closest name without naming it" in first.out
    params = Workspace(imported).read_clustering("ictc-mood")["params"]
    # names auto: SmolLM2's labels put two heavy labels in one concept, so the concepts are named
    assert params["names_mode"] == "taxonomy" and params["assign"] == "label-embed"
    assert params["names_choice"].startswith("auto: heavy labels in one concept")
    assert "names auto: heavy labels in one concept" in first.out
    assert "step3" not in params["calls"] or params["calls"]["step3"]["misses"] == 0  # no LLM call in step 3
    assert params["text_model"].startswith("sentence-transformers:")
    assert 0.0 < params["coverage"] <= 1.0

    import clipclust.models.llm as llm
    import sentence_transformers

    def no_loading(*_: object, **__: object) -> None:
        raise AssertionError("a model was loaded with nothing left to compute")

    monkeypatch.setattr(llm.llama, "load_llama", no_loading)
    forced = ictc(cli, "--force", "--json")  # recomputed, every LLM answer from the cache: the LLM stays unloaded
    assert forced.code == 0, forced.err
    assert json.loads(forced.out)["params"]["calls_total"]["misses"] == 0
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", no_loading)
    reused = ictc(cli)
    assert reused.code == 0, reused.err
    assert "ictc-mood: reused" in reused.out


def test_ictc_generate_mode(cli, imported: Path) -> None:
    res = ictc(cli, "--assign", "generate", "--name", "mood-free")
    assert res.code == 0, res.err
    assert res.out.startswith("mood-free: stored (ictc on 'description:import-moods', 12 items")
    assert "items assigned to the closest name without naming it" in res.out and "LLM calls: 0 cached, " in res.out
    stored = Workspace(imported).read_clustering("mood-free")
    assert len(stored["names"]) == 3 and np.all((stored["ids"] >= 0) & (stored["ids"] < 3))
    assert stored["params"]["assign"] == "generate"


@pytest.mark.parametrize(
    "args, needle",
    [
        (("cluster", "--method", "ictc", "--criterion", "mood", "-k", "3"), "--llm: the ictc method needs an LLM"),
        (("cluster", "--method", "ictc", "-k", "3", "--llm", "x.gguf"), "--criterion: the ictc method needs a criterion"),
        (("cluster", "--method", "ictc", "--criterion", "mood", "--llm", "x.gguf"), "-k: the ictc method needs the number of clusters"),
        (("cluster", "--method", "kmeans", "-k", "3", "--criterion", "mood"), "--criterion: applies to the esmc or ictc or text method, not kmeans"),
        (("cluster", "--method", "ictc", "--criterion", "mood", "-k", "3", "--llm", "x.gguf", "--assign", "vote"),
         "--assign: 'vote': expected one of label-embed, label, embed, clip, constrained, generate"),
        (("cluster", "--method", "ictc", "--criterion", "mood", "-k", "3", "--llm", "x.gguf", "--names", "vote"),
         "--names: 'vote': expected one of auto, frequent, hybrid, llm, taxonomy"),
        (("cluster", "--method", "ictc", "--criterion", "mood", "-k", "3", "--llm", "x.gguf", "--levels", "0"),
         "--levels: 0: expected 1, 2 or 3"),
        (("cluster", "--method", "ictc", "--criterion", "mood", "-k", "3", "--llm", "x.gguf", "--levels", "4"),
         "--levels: 4: expected 1, 2 or 3"),
        (("cluster", "--method", "ictc", "--criterion", "mood", "-k", "3", "--llm", "x.gguf", "--levels", "2",
          "--names", "frequent"), "--levels: coarser levels are cuts of the label taxonomy; choose names taxonomy"),
        (("cluster", "--method", "ictc", "--criterion", "mood", "-k", "3", "--llm", "x.gguf", "--names", "taxonomy",
          "--extra", "Be brief."), "--extra: an extra naming instruction is for the LLM's names"),
        (("cluster", "--method", "ictc", "--criterion", "mood", "-k", "3", "--llm", "x.gguf", "--top-p", "1.5"),
         "--top-p: 1.5: expected a number in (0, 1]"),
        (("cluster", "--method", "ictc", "--criterion", "mood", "-k", "3", "--llm", "x.gguf", "--extra", "Be brief."),
         "--extra: an extra naming instruction is for the LLM's names; choose names llm or hybrid"),
    ],
)
def test_ictc_bad_requests(cli, imported: Path, args: tuple[str, ...], needle: str) -> None:
    res = cli(*args)
    assert res.code == 2
    assert needle in one_error_line(res)


def test_ictc_without_descriptions(cli, digits_ws: Path) -> None:
    res = cli("cluster", "--method", "ictc", "--criterion", "mood", "-k", "3", "--llm", str(smollm2_path()))
    assert res.code == 2
    assert "clipclust describe" in one_error_line(res)


def test_montage_titles_are_the_cluster_names(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from clipclust.core import plots
    lines = []
    for i, (text, mood) in enumerate(MOODS):
        image = tmp_path / "imgs" / f"{i:02d}.png"
        image.parent.mkdir(exist_ok=True)
        Image.new("RGB", (12, 10), (20 * i, 100, 200 - 10 * i)).save(image)
        lines.append(json.dumps({"text": text, "file": f"imgs/{i:02d}.png", "mood": mood}))
    (tmp_path / "moods.jsonl").write_text("\n".join(lines) + "\n")
    res = cli("describe", "--from", str(tmp_path / "moods.jsonl"), "--path-field", "file", "--label-field", "mood")
    assert res.code == 0 and "12 matched to images, 0 text-only" in res.out, res.out + res.err
    assert ictc(cli, "--assign", "embed").code == 0
    names = list(Workspace(tmp_path / "ws.h5").read_clustering("ictc-mood")["names"])

    drawn: dict[str, int] = {}
    real_montage = plots.montage

    def spy(rows, path, **kwargs):
        drawn.update({title: len(images) for title, images in rows.items()})
        return real_montage(rows, path, **kwargs)

    monkeypatch.setattr(plots, "montage", spy)
    out = cli("visualize", "--kind", "montage", "--clustering", "ictc-mood", "--per-cluster", "12",
              "-o", str(tmp_path / "m.png"))
    assert out.code == 0, out.err
    assert (tmp_path / "m.png").is_file() and sum(drawn.values()) == 12
    assert all(any(n in title for n in names) for title in drawn)


def test_montage_of_text_only_items_says_what_to_do(cli, imported: Path) -> None:
    assert ictc(cli, "--assign", "embed").code == 0
    res = cli("visualize", "--kind", "montage", "--clustering", "ictc-mood", "-o", str(imported.parent / "m.png"))
    assert res.code == 2 and "clipclust export ictc-mood" in one_error_line(res)


def test_ictc_clip_assignment_scores_names_against_stored_image_vectors(
    cli, digits_ws: Path, tmp_path: Path, open_clip_encoder
) -> None:
    from clipclust.commands.cluster import run_clustering
    from clipclust.models.llm import TextGenerator

    ws = Workspace(digits_ws)
    items = ws.items()
    paths = [p for p, s in zip(items.path, items.split) if s == "train"][:12]
    digit = {p: Path(p).parent.name for p in paths}
    src = tmp_path / "digits.jsonl"
    src.write_text("".join(json.dumps({"text": f"A handwritten digit {digit[p]}.", "path": p}) + "\n" for p in paths))
    assert cli("describe", "--from", str(src), "--path-field", "path").code == 0

    class Labeller(TextGenerator):  # step 2a answers the digit; no other call may happen
        identity = "scripted-digits"

        def generate(self, requests, params=None):  # type: ignore[no-untyped-def]
            return [f"Answer: digit {r.messages[-1]['content'].split()[-1].rstrip('.')}" for r in requests]

    k = len(set(digit.values()))
    summary = run_clustering(ws, method="ictc", k=k, criterion="digit", generator=Labeller(), assign="clip",
                             clip_encoder=open_clip_encoder)
    params = summary.params
    assert params["assign"] == "clip" and params["clip"]["template"] == "a photo of a <>."
    assert len(summary.names) == k and all(n.startswith("digit ") for n in summary.names)
    assert sum(summary.sizes.values()) == 12 and params["n_llm_assigned"] == 0
    assert "step3" not in params["calls"] or params["calls"]["step3"]["misses"] == 0

    # descriptions without images cannot be scored by CLIP: one line saying what to do, exit 2
    text_only = tmp_path / "text.jsonl"
    text_only.write_text("".join(json.dumps({"text": f"A digit {d}."}) + "\n" for d in ("seven", "one", "two")))
    assert cli("describe", "--from", str(text_only)).code == 0
    res = ictc(cli, "--assign", "clip", "--on", "description:import-text")
    assert res.code == 2 and "have no vector in image set" in one_error_line(res)


def test_a_degenerate_ictc_result_is_warned_about_and_stored(imported: Path) -> None:
    from clipclust.commands.cluster import run_clustering
    from clipclust.models.llm import TextGenerator
    from clipclust.core.progress import SilentReporter

    class EchoingTemplate(TextGenerator):  # issue 8's failure: names echo the template, step 3 says "1"
        identity = "scripted-degenerate"

        def generate(self, requests, params=None):  # type: ignore[no-untyped-def]
            return ["{1}: happy\n{2}: joyful\n{3}: glad" if "list of labels" in r.messages[-1]["content"]
                    else "Answer: 1" for r in requests]

    reporter = SilentReporter()
    summary = run_clustering(Workspace(imported), method="ictc", k=3, criterion="mood", generator=EchoingTemplate(),
                             names="llm", assign="generate", reporter=reporter)
    assert summary.names == ["happy", "joyful", "glad"]  # never "1", "2", "3"
    assert any("holds 12 of 12 items" in w for w in reporter.warnings)
    assert any("clusters are empty" in w for w in reporter.warnings)
    assert summary.params["warnings"] == reporter.warnings


MOOD_LABELS = {"happy": "joyful", "sad": "gloomy", "angry": "furious"}


class MoodLabeller:
    """Step 2a: two labels per mood (12 items, 6 labels); a concept-name question: the mood word."""

    identity = "scripted-moods"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, requests, params=None):  # type: ignore[no-untyped-def]
        from clipclust.methods.ictc.concepts import NAME_SYSTEM

        self.calls += len(requests)
        out = []
        for r in requests:
            text = r.messages[-1]["content"]
            if r.messages[0]["content"] == NAME_SYSTEM:
                out.append(next(m for m, alt in MOOD_LABELS.items() if m in text or alt in text))
                continue
            row = next(i for i, (t, _) in enumerate(MOODS) if t in text)
            mood = MOODS[row][1]
            out.append(f"Answer: {mood if row % 2 else MOOD_LABELS[mood]}")
        return out


def test_ictc_taxonomy_levels_and_k_auto_through_the_method(imported: Path) -> None:
    from clipclust.core.progress import SilentReporter
    from clipclust.methods.registry import ClusterRequest, get_method, resolve_options, METHODS
    from clipclust.models.llm import TextGenerator

    class Gen(MoodLabeller, TextGenerator):
        pass

    spec = get_method("ictc")
    gen = Gen()
    req = ClusterRequest.of(method="ictc", k="auto", criterion="mood", generator=gen, names="taxonomy", levels=2)
    req.options, _ = resolve_options(spec, req.options, METHODS)
    prepared = spec.prepare(Workspace(imported), req)
    assert prepared.identity["k"] == "auto" and prepared.identity["levels"] == 2
    out = spec.compute(prepared, req, SilentReporter())
    k = out.details["k_chosen"]
    assert out.details["k"] == k and len(out.cluster_names) == k and 2 <= k <= 6
    assert out.details["k_evidence"][0].startswith("candidates 2..6")
    truth = [m for _, m in MOODS]
    ids = list(out.ids)
    assert all(len({ids[i] for i in range(12) if truth[i] == m}) == 1 for m in MOOD_LABELS)  # moods never split
    if k == 3:  # the three moods, each named by the LLM ("happy" for happy + joyful)
        assert sorted(out.cluster_names) == sorted(MOOD_LABELS)
    assert out.details["coverage"] == 1.0
    for level in out.levels:
        parent: dict[int, set[int]] = {}
        for f, c in zip(ids, level.ids):
            parent.setdefault(int(f), set()).add(int(c))
        assert all(len(p) == 1 for p in parent.values()) and level.details["k"] < k

    calls = gen.calls
    prepared = spec.prepare(Workspace(imported), req)
    again = spec.compute(prepared, req, SilentReporter())  # every answer from the workspace's call cache
    assert gen.calls == calls and list(again.ids) == ids and again.cluster_names == out.cluster_names
    assert again.details["calls_total"]["misses"] == 0


def test_ictc_taxonomy_with_smollm2_names_a_concept(tmp_path: Path) -> None:
    """The real SmolLM2 answers the concept-name question; its answer is validated like any other."""
    from clipclust.methods.ictc import group_labels
    from clipclust.methods.ictc.concepts import name_concepts
    from clipclust.methods.ictc.taxonomy import build_taxonomy
    from clipclust.models.llm import load_generator

    labels = {"eagle": 6, "sparrow": 5, "owl": 4, "airplane": 6, "ship": 5, "truck": 4}
    family = {"eagle": 0, "sparrow": 0, "owl": 0, "airplane": 1, "ship": 1, "truck": 1}

    def embed(texts):  # type: ignore[no-untyped-def]
        out = np.zeros((len(texts), 8))
        for row, t in enumerate(texts):
            for i, w in enumerate(family):
                if w in t:
                    out[row, 2 + i], out[row, family[w]] = 1.0, 0.8
        return out

    items = [w for w, c in labels.items() for _ in range(c)]
    tax, _ = build_taxonomy(group_labels(labels), items, [f"a {w}" for w in items], embed)
    gen = load_generator(str(smollm2_path()), n_threads=1, n_ctx=512, seed=0)
    try:
        named = name_concepts(tax, tax.cut(2), gen, "object")
    finally:
        gen.close()
    assert named.names == ["transportation", "bird"] and named.sources == ["llm", "llm"]
