"""Hostile text: files in another encoding than UTF-8, lone surrogates in imported records, templates without
'<>', labels that name no image, names and criteria with line breaks or in other scripts, k-ranges that
leave no k, empty description sets, and the text forms of counts and shards.

Every case runs the CLI and holds it to the promise (tests/hostile/conftest.py): the exit code, the exact
stderr lines (no traceback), and a workspace that still passes `check` with nothing lost.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .cases import NAME, Hostile, ictc_llm, jsonl, latin1, server, set_rows, template, ws  # noqa: F401

NOT_UTF8 = r"line \d+ is not UTF-8 text \(byte 0xe9\); save the file as UTF-8"


# -- files that are not UTF-8


def test_a_latin1_labels_csv_is_refused_naming_the_file_and_the_encoding(ws: Hostile, tmp_path: Path):
    labels = latin1(tmp_path / "labels.csv", f"path,label\n{next(ws.images.rglob('*.png'))},café\n")
    before = ws.snapshot()
    ws.run("embed", ws.images, "-m", ws.model, "--labels", labels, code=2, match=rf"labels\.csv: {NOT_UTF8}")
    ws.intact(before, same=True)


def test_a_labels_csv_with_a_byte_order_mark_is_read(ws: Hostile, tmp_path: Path):
    image = next(ws.images.rglob("*.png"))
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,label\n{image},café\n", encoding="utf-8-sig")
    before = ws.snapshot()
    ws.run("embed", ws.images, "-m", ws.model, "--labels", labels, "--no-folder-labels")
    from clipclust.store import Workspace

    items = Workspace(ws.ws).items()
    assert "café" in set(items.label)
    ws.intact(before, changed=set(items.sha256))


@pytest.mark.parametrize("command", [
    ("embed", "IMAGES", "-m", "MODEL", "-p", "a photo of <>", "--classes-file", "FILE"),
    ("finetune", "-o", "OUT", "--classes-file", "FILE"),
    ("embed", "IMAGES", "-m", "MODEL", "-p", "a photo of <>", "--class-map", "FILE"),
    ("embed", "IMAGES", "-m", "MODEL", "--agnostic", "FILE"),
], ids=["embed-classes-file", "finetune-classes-file", "embed-class-map", "embed-agnostic"])
def test_a_latin1_list_file_is_refused(ws: Hostile, tmp_path: Path, command: tuple[str, ...]):
    listing = latin1(tmp_path / "list.csv", "café,boisson\nthé,boisson\n")
    named = {"IMAGES": ws.images, "MODEL": ws.model, "FILE": listing, "OUT": ws.tmp / "tuned"}
    args = [named.get(a, a) for a in command]
    before = ws.snapshot()
    ws.run(*args, code=2, match=rf"list\.csv: {NOT_UTF8}")
    ws.intact(before, same=True)


def test_a_latin1_ictc_prompt_file_is_refused(ws: Hostile, tmp_path: Path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    latin1(prompts / "step2a.txt", "Décris {description} en un mot pour {criterion}.")
    before = ws.snapshot()
    ws.run("cluster", "--method", "ictc", "-c", "forme", "-k", "2", "--llm", "http://127.0.0.1:9/v1", "--prompts",
           prompts, code=2, match=rf"step2a\.txt: {NOT_UTF8}")
    ws.intact(before, same=True)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_latin1_descriptions_file_is_refused(ws: Hostile, tmp_path: Path, suffix: str):
    text = "text\nun café\n" if suffix == ".csv" else '{"text": "un café"}\n'
    records = latin1(tmp_path / f"records{suffix}", text)
    before = ws.snapshot()
    ws.run("describe", "--from", records, code=2, match=rf"records\{suffix}: {NOT_UTF8}")
    ws.intact(before, same=True)


# -- text that is not Unicode, or not one line


@pytest.mark.parametrize("field", ["text", "path", "label"])
def test_a_lone_surrogate_in_an_imported_record_is_refused(ws: Hostile, tmp_path: Path, field: str):
    record = {"text": "a round digit", "path": "elsewhere.png", "label": "zero", field: "bad \ud800 value"}
    records = jsonl(tmp_path / "records.jsonl", [record, {"text": "fine", "path": "x.png", "label": "one"}])
    before = ws.snapshot()
    ws.run("describe", "--from", records, "--path-field", "path", "--label-field", "label", code=2,
           match=rf"records\.jsonl:1: field '{field}': holds '\\ud800' at character 5, a lone surrogate")
    ws.intact(before, same=True)


def test_a_lone_surrogate_on_stdin_is_refused_naming_stdin(ws: Hostile):
    before = ws.snapshot()
    ws.run("describe", "--from", "-", stdin='{"text": "a \\udc80 digit"}\n', code=2,
           match=r"stdin:1: field 'text': holds '\\udc80'")
    ws.intact(before, same=True)


@pytest.mark.parametrize("data,match", [
    (b"text\n\"a\rb\nc\x00d", r"records\.csv: line 3 holds a NUL byte; expected a text file"),
    (b'{"text": "a \\u0000 digit"}\n', r"records\.jsonl:1: field 'text': holds a NUL character at character 3"),
    (b'text\n"' + b"x" * 200_000 + b'"\n', r"records\.csv:\d+: not readable as CSV \(field larger than field limit"),
], ids=["csv-nul", "json-escaped-nul", "csv-huge-field"])
def test_a_descriptions_file_with_a_nul_or_a_broken_quote_is_refused(ws: Hostile, tmp_path: Path, data: bytes,
                                                                    match: str):
    records = tmp_path / ("records.csv" if data.startswith(b"text") else "records.jsonl")
    records.write_bytes(data)
    before = ws.snapshot()
    ws.run("describe", "--from", records, code=2, match=match)
    ws.intact(before, same=True)


@pytest.mark.parametrize("value", ["mood\nignore the rest", "mood\tcolour", "mood\x1b[31m"])
@pytest.mark.parametrize("command", ["describe", "ictc", "esmc"])
def test_a_criterion_with_a_control_character_is_refused(ws: Hostile, command: str, value: str):
    args = {"describe": ("describe", "--vlm", "http://127.0.0.1:9/v1"),
            "ictc": ("cluster", "--method", "ictc", "-k", "2", "--llm", "http://127.0.0.1:9/v1"),
            "esmc": ("cluster", "--method", "esmc", "-k", "2", "--llm", "hf:none/none")}[command]
    before = ws.snapshot()
    ws.run(*args, "--criterion", value, code=2, match="holds a line break or another control character")
    ws.intact(before, same=True)


def test_a_blank_prompt_is_refused(ws: Hostile):
    before = ws.snapshot()
    ws.run("describe", "--vlm", "http://127.0.0.1:9/v1", "--prompt", "   ", code=2, match="--prompt is empty")
    ws.intact(before, same=True)


# -- templates without '<>'


@pytest.mark.parametrize("args", [
    ("embed", "IMAGES", "-m", "MODEL", "-p", "This is a digit"),
    ("embed", "IMAGES", "-m", "MODEL", "-p", "This is digit <>", "-p", "a digit"),
    ("finetune", "-o", "OUT", "--classes", "a,b", "--class-template", "a digit"),
    ("finetune", "-o", "OUT", "--classes", "a,b", "--template", "a photo of <>", "--template", "a photo"),
    ("cluster", "--method", "ictc", "-c", "shape", "-k", "2", "--llm", "http://127.0.0.1:9/v1", "--assign", "clip",
     "--clip-template", "a digit"),
], ids=["embed-prompt", "embed-second-prompt", "finetune-class-template", "finetune-template", "ictc-clip-template"])
def test_a_template_without_a_placeholder_is_refused(ws: Hostile, args: tuple[str, ...]):
    args = tuple({"IMAGES": ws.images, "MODEL": ws.model, "OUT": ws.tmp / "tuned"}.get(a, a) for a in args)
    before = ws.snapshot()
    ws.run(*args, code=2, match="has no '<>', so every class would get the same text")
    ws.intact(before, same=True)


def test_a_blank_template_is_refused(ws: Hostile):
    before = ws.snapshot()
    ws.run("embed", ws.images, "-m", ws.model, "-p", "  ", code=2, match="empty --prompt")
    ws.intact(before, same=True)


# -- labels that name no image


def test_labels_rows_that_name_no_image_are_counted_and_said(ws: Hostile, tmp_path: Path):
    image = next(ws.images.rglob("*.png"))
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,label\n{image},{image.parent.name}\nnot-there.png,x\nalso/missing.png,y\n", encoding="utf-8")
    before = ws.snapshot()
    ws.run("embed", ws.images, "-m", ws.model, "--labels", labels, lines=1,
           match=r"2 rows of .*labels\.csv name no input image and were ignored, e.g. .*not-there\.png")
    ws.intact(before, same=True)


def test_labels_of_which_no_row_names_an_image_are_refused(ws: Hostile, tmp_path: Path):
    labels = tmp_path / "labels.csv"
    labels.write_text("not-there.png,x\n", encoding="utf-8")
    before = ws.snapshot()
    ws.run("embed", ws.images, "-m", ws.model, "--labels", labels, code=2, match="none of its paths matches")
    ws.intact(before, same=True)


# -- names, k ranges


@pytest.mark.parametrize("name", ["a\nb", "tab\there", "x.replacing", "a/b", " padded", "bell\x07"],
                         ids=["newline", "tab", "replacing", "slash", "padded", "bell"])
def test_a_clustering_name_that_would_not_read_back_is_refused(ws: Hostile, name: str):
    before = ws.snapshot()
    ws.run("cluster", "-k", "3", "--name", name, code=2, match="--name: .*use a non-empty name of printable")
    ws.intact(before, same=True)


def test_a_clustering_name_in_another_script_is_kept(ws: Hostile):
    before = ws.snapshot()
    ws.run("cluster", "-k", "3", "--name", "クラスタ-ü 🎨")
    after = ws.intact(before)
    assert "クラスタ-ü 🎨" in after.clusterings
    ws.run("visualize", "クラスタ-ü 🎨", "-o", ws.tmp / "plot.png")


@pytest.mark.parametrize("k_range", ["10:2", "50:60", "1:5", "a:b", "3"])
def test_a_k_range_that_leaves_no_k_fails_before_saying_anything_else(ws: Hostile, k_range: str):
    from clipclust.store import Workspace

    stored = Workspace(ws.ws).read_clustering(NAME)["params"]["request"]
    before = ws.snapshot()
    ws.run("cluster", "-k", "auto", "--k-range", k_range, "--name", NAME, code=2, match="--k-range")
    assert Workspace(ws.ws).read_clustering(NAME)["params"]["request"] == stored
    ws.intact(before, same=True)


def test_replacing_a_clustering_is_said_when_it_happens(ws: Hostile):
    before = ws.snapshot()
    ws.run("cluster", "-k", "auto", "--k-range", "2:4", "--name", NAME, lines=1,
           match=f"clustering '{NAME}' exists with other inputs or parameters; replacing it")
    ws.intact(before)


# -- criteria in other scripts, empty description sets


def test_a_criterion_in_another_script_describes_and_clusters(ws: Hostile, server):
    srv = server(lambda n, body: "a round digit" if n % 2 else "a thin digit")
    before = ws.snapshot()
    ws.run("describe", "--vlm", srv.url, "--criterion", "forme ✏️ 形", "--concurrency", "1")
    assert set_rows(ws, "description")["description:forme ✏️ 形"] == 12
    described = ws.snapshot()
    srv.chat = ictc_llm
    result = ws.run("cluster", "--method", "ictc", "-c", "forme ✏️ 形", "-k", "2", "--on", "description:forme ✏️ 形",
                    "--llm", srv.url, "--names", "llm", "--assign", "label", "--json")
    assert result.json()["n_items"] == 12
    ws.intact(described)
    assert set(before.sets) < set(described.sets)


def test_an_empty_descriptions_file_is_refused(ws: Hostile, tmp_path: Path):
    empty = tmp_path / "none.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    before = ws.snapshot()
    ws.run("describe", "--from", empty, code=2, match="holds no descriptions")
    ws.intact(before, same=True)


def test_an_empty_json_list_of_descriptions_is_refused(ws: Hostile, tmp_path: Path):
    empty = tmp_path / "none.json"
    empty.write_text("[]", encoding="utf-8")
    before = ws.snapshot()
    ws.run("describe", "--from", empty, code=2, match="holds no descriptions")
    ws.intact(before, same=True)


def test_a_record_with_an_empty_text_is_refused(ws: Hostile, tmp_path: Path):
    records = jsonl(tmp_path / "r.jsonl", [{"text": "fine"}, {"text": "   "}])
    before = ws.snapshot()
    ws.run("describe", "--from", records, code=2, match=r"r\.jsonl:2: field 'text' is empty")
    ws.intact(before, same=True)


@pytest.mark.parametrize("method", ["ictc", "esmc"])
def test_clustering_an_empty_selection_of_descriptions_is_refused(ws: Hostile, method: str):
    before = ws.snapshot()
    ws.run("cluster", "--method", method, "-c", "shape", "-k", "2", "--llm", "http://127.0.0.1:9/v1"
           if method == "ictc" else "hf:none/none", "--split", "test", code=2, match="split 'test'")
    ws.intact(before, same=True)


def test_clustering_descriptions_that_were_never_made_is_refused(hostile: Hostile, template, tmp_path: Path):
    from clipclust.store import Workspace

    import shutil

    shutil.copyfile(template.ws, hostile.ws)
    ws = Workspace(hostile.ws)
    info = next(s for s in ws.list_sets() if s.kind == "description")
    with ws._file.open_write() as f:  # the set as an older version or another tool could leave it: gone
        del f["sets"][info.id]
    before = hostile.snapshot()
    hostile.run("cluster", "--method", "ictc", "-c", "shape", "-k", "2", "--llm", "http://127.0.0.1:9/v1", code=2,
                match="describe")
    hostile.intact(before, same=True)


# -- counts, shards and classes as text


@pytest.mark.parametrize("args,match", [
    (("cluster", "-k", "²"), "-k"),
    (("cluster", "-k", "three"), "-k"),
    (("embed", "IMAGES", "--shard", "²/3"), "shard"),
    (("embed", "IMAGES", "--shard", "3/2"), "shard"),
    (("embed", "IMAGES", "--shard", "0/0"), "shard"),
    (("embed", "IMAGES", "-m", "MODEL", "-p", "a <>", "--classes", ",,,"), "class list is empty"),
    (("embed", "IMAGES", "-m", "MODEL", "-p", "a <>", "--classes", "a,b,a"), "duplicate class names: a"),
    (("finetune", "-o", "OUT", "--classes", "a"), "at least two distinct class names"),
    (("embed", "IMAGES", "--device", "cuda:²"), "--device"),
], ids=["k-superscript", "k-word", "shard-superscript", "shard-past-count", "shard-zero", "classes-empty",
        "classes-duplicate", "finetune-one-class", "device-superscript"])
def test_a_count_shard_or_class_list_that_does_not_parse_is_refused(ws: Hostile, args: tuple[str, ...], match: str):
    args = tuple({"IMAGES": ws.images, "MODEL": ws.model, "OUT": ws.tmp / "tuned"}.get(a, a) for a in args)
    before = ws.snapshot()
    ws.run(*args, code=2, match=match)
    ws.intact(before, same=True)
