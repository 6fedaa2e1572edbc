"""`clipclust describe` end to end: the tiny self-built LLaVA on a folder of images, group descriptions,
imports from JSONL/CSV, and bad input as one stderr line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from clipclust.store import Workspace
from clipclust.commands.describe import text_item_sha256

from ..models.conftest import smollm2_path, tiny_vlm_dir  # noqa: F401  (fixture re-exported)
from .conftest import one_error_line


@pytest.fixture(autouse=True)
def _private_hash_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPCLUST_HASH_MEMO", str(tmp_path / "hashes.json"))


def colour_folder(root: Path) -> Path:
    """Six small images in two class folders (red/, blue/)."""
    for label, rgb in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.new("RGB", (20 + 4 * i, 16), tuple(min(255, c + 10 * i) for c in rgb)).save(root / label / f"{i}.png")
    return root


def description_rows(ws: Workspace, kind: str = "description") -> dict[str, str]:
    sets = [s for s in ws.list_sets() if s.kind == kind]
    assert len(sets) == 1, [s.name for s in sets]
    keys, data = ws.read_set(sets[0].id)
    return dict(zip(keys, data))


def test_describe_folder_stores_a_text_set_and_reruns_for_free(
    cli, tmp_path: Path, tiny_vlm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = colour_folder(tmp_path / "imgs")
    args = ("describe", str(images), "--vlm", str(tiny_vlm_dir), "--criterion", "colour", "--max-tokens", "4",
            "--device", "cpu")
    first = cli(*args)
    assert first.code == 0, first.err
    assert first.out.startswith("6 items: 6 described, 0 cached"), first.out
    assert "'description:colour'" in first.out
    ws = Workspace(tmp_path / "ws.h5")
    rows = description_rows(ws)
    items = ws.items()
    assert set(rows) == set(items.sha256) and len(rows) == 6
    assert all(isinstance(t, str) for t in rows.values())
    assert sorted(set(items.label)) == ["blue", "red"]
    assert all(w > 0 for w in items.width)  # decoded images record their size
    info = [s for s in ws.list_sets() if s.kind == "description"][0]
    assert "colour" in info.prompt and info.model.startswith("transformers-vlm:")
    calls = ws.count_calls()

    from clipclust.models.vlm.hf import TransformersDescriber

    def no_loading(*_: object, **__: object) -> None:
        raise AssertionError("the VLM was loaded with every description stored")

    # a re-run with nothing to compute loads nothing (the registry builds this class on first use)
    monkeypatch.setattr(TransformersDescriber, "__init__", no_loading)
    again = cli(*args, "--json")
    assert again.code == 0, again.err
    summary = json.loads(again.out)
    assert (summary["described"], summary["cached"]) == (0, 6)
    assert ws.count_calls() == calls
    assert description_rows(ws) == rows

    # without IMAGES: every workspace item whose file exists; nothing new to compute
    bare = cli("describe", "--vlm", str(tiny_vlm_dir), "--criterion", "colour", "--max-tokens", "4", "--device", "cpu")
    assert bare.code == 0, bare.err
    assert bare.out.startswith("6 items: 0 described, 6 cached"), bare.out


def test_group_descriptions_by_a_stored_clustering(cli, tmp_path: Path, tiny_vlm_dir: Path) -> None:
    import numpy as np

    images = colour_folder(tmp_path / "imgs")
    assert cli("describe", str(images), "--vlm", str(tiny_vlm_dir), "--criterion", "colour", "--max-tokens", "3",
               "--device", "cpu").code == 0
    ws = Workspace(tmp_path / "ws.h5")
    items = ws.items()
    ids = np.array([0 if lab == "red" else 1 for lab in items.label])
    ws.save_clustering("by-colour", keys=items.sha256, ids=ids, params={"method": "manual"})

    args = ("describe", "--vlm", str(tiny_vlm_dir), "--criterion", "colour", "--max-tokens", "3", "--device", "cpu",
            "--group-size", "2", "--group-by", "cluster:by-colour", "--json")
    out = cli(*args)
    assert out.code == 0, out.err
    summary = json.loads(out.out)
    assert summary["kind"] == "group-description" and summary["n_groups"] == 4  # 3 + 3 items in groups of 2
    assert summary["described"] == 4
    rows = description_rows(ws, "group-description")
    members = {k: json.loads(v) for k, v in description_rows(ws, "group-membership").items()}
    assert set(rows) == set(items.sha256)
    for key, m in members.items():
        assert key in m["members"] and rows[key] == rows[m["members"][0]]  # a group shares one text
        assert m["label"] == str(ids[items.sha256.index(key)])
    assert sorted(len(m["members"]) for m in {v["group"]: v for v in members.values()}.values()) == [1, 1, 2, 2]

    again = json.loads(cli(*args).out)
    assert (again["described"], again["cached"]) == (0, 6)


def test_import_jsonl_matches_images_and_adds_text_only_items(cli, tmp_path: Path) -> None:
    images = colour_folder(tmp_path / "imgs")
    src = tmp_path / "desc.jsonl"
    lines = [
        {"caption": "a bright red square", "file": "imgs/red/0.png", "cls": "red"},  # an image file, not yet stored
        {"caption": "a deep blue square", "file": str(images / "blue" / "1.png"), "cls": "blue"},
        {"caption": "a happy dog on grass", "file": None, "cls": "dog"},  # text only
        {"caption": "a sleepy cat", "file": "missing/cat.png", "cls": "cat"},  # path that does not exist
        {"caption": "a bright red square again", "file": "imgs/red/0.png", "cls": "red"},  # same item twice
    ]
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    res = cli("describe", "--from", str(src), "--text-field", "caption", "--path-field", "file",
              "--label-field", "cls")
    assert res.code == 0, res.err
    assert res.out.startswith("5 descriptions imported: 2 matched to images, 2 text-only items, 1 skipped"), res.out
    assert "'description:import-desc'" in res.out
    ws = Workspace(tmp_path / "ws.h5")
    rows = description_rows(ws)
    items = ws.items()
    by_key = dict(zip(items.sha256, zip(items.path, items.label, items.width)))
    dog = text_item_sha256("a happy dog on grass")
    assert rows[dog] == "a happy dog on grass" and by_key[dog] == ("", "dog", 0)
    cat = text_item_sha256("a sleepy cat")
    assert by_key[cat][0] == "missing/cat.png" and by_key[cat][2] == 0
    red = [k for k, (p, _, _) in by_key.items() if p.endswith("red/0.png")]
    assert len(red) == 1 and rows[red[0]] == "a bright red square" and by_key[red[0]][2] == 20
    info = [s for s in ws.list_sets() if s.kind == "description"][0]
    assert info.model == "import:desc.jsonl"

    again = cli("describe", "--from", str(src), "--text-field", "caption", "--path-field", "file", "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["new_rows"] == 0


def test_import_csv_attaches_to_stored_items(cli, tmp_path: Path) -> None:
    images = colour_folder(tmp_path / "imgs")
    first = tmp_path / "a.jsonl"
    first.write_text(json.dumps({"text": "x", "path": str(images / "red" / "2.png")}) + "\n")
    assert cli("describe", "--from", str(first), "--path-field", "path").code == 0
    src = tmp_path / "more.csv"
    src.write_text(f"text,path,label\nreddish,{images / 'red' / '2.png'},red\nonly words,,misc\n")
    res = cli("describe", "--from", str(src), "--path-field", "path", "--label-field", "label", "--json")
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    assert (summary["matched"], summary["text_only"], summary["new_rows"]) == (1, 1, 2)
    assert summary["set"] == "description:import-more"
    assert len(Workspace(tmp_path / "ws.h5").items()) == 2


@pytest.mark.parametrize(
    "args, needle",
    [
        (("describe", "--criterion", "mood"), "--vlm SPEC"),
        (("describe", "--from", "X.jsonl", "--vlm", "m.gguf"), "pass only one"),
        (("describe", "--from", "nope.jsonl"), "not found"),
        # library errors, their settings spelled as this command's flags and arguments
        (("describe", "--vlm", "m.gguf", "--criterion", "mood"), "; pass IMAGES to describe or --cache"),
        (("describe", "--vlm", "m.gguf", "--criterion", " "), "--criterion is empty; say what to describe, e.g. --criterion mood"),
        (("describe", "--vlm", "m.gguf", "--criterion", "mood", "--group-size", "2"),
         "group descriptions need both --group-size N and --group-by zeroshot|cluster:NAME"),
    ],
)
def test_bad_usage_is_one_line_exit_2(cli, args: tuple[str, ...], needle: str) -> None:
    res = cli(*args)
    assert res.code == 2
    assert needle in one_error_line(res)


def test_gguf_vlm_without_mmproj_and_unknown_field(cli, tmp_path: Path) -> None:
    images = colour_folder(tmp_path / "imgs")
    res = cli("describe", str(images), "--vlm", str(smollm2_path()), "--criterion", "mood")
    assert res.code == 2 and "--mmproj" in one_error_line(res)
    src = tmp_path / "d.jsonl"
    src.write_text(json.dumps({"text": "a"}) + "\n")
    res = cli("describe", "--from", str(src), "--label-field", "class")
    assert res.code == 2 and "'class'" in one_error_line(res)
    res = cli("describe", str(images), "--vlm", str(smollm2_path()))
    assert res.code == 2 and "--criterion" in one_error_line(res)
