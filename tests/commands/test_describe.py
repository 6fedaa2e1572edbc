"""The describing library without a real VLM: a scripted describer shows what is stored, that cached items
never open their files, that an interrupted run keeps its finished batches, and how groups are formed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from PIL import Image

from clipclust.store import Workspace
from clipclust.commands.describe import describe_items, import_into_workspace, text_item_sha256
from clipclust.commands.describe.per_item import BATCH
from clipclust.errors import InputError
from clipclust.models.llm import DecodeParams
from clipclust.models.vlm import Describer


class SizeDescriber(Describer):
    """Describes an image by its size and mean red value; can fail after a number of images."""

    identity = "test:size-describer"
    name = "size"

    def __init__(self, fail_after: int | None = None) -> None:
        self.seen = 0
        self.fail_after = fail_after

    def describe(self, images: Sequence[Image.Image], prompt: str, params: DecodeParams | None = None) -> list[str]:
        out = []
        for im in images:
            if self.fail_after is not None and self.seen >= self.fail_after:
                raise KeyboardInterrupt
            self.seen += 1
            out.append(f"{im.width}x{im.height} red {int(np.asarray(im)[..., 0].mean())}")
        return out


def folder(root: Path, n: int) -> Path:
    for i in range(n):
        label = "a" if i % 2 else "b"
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (10 + i, 8), (i * 5 % 256, 0, 0)).save(root / label / f"{i:03d}.png")
    return root


def rows(ws: Workspace, kind: str = "description") -> dict[str, str]:
    (info,) = [s for s in ws.list_sets() if s.kind == kind]
    keys, data = ws.read_set(info.id)
    return dict(zip(keys, data))


def test_descriptions_are_stored_per_item_and_cached(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws.h5")
    images = folder(tmp_path / "imgs", 5)
    summary = describe_items(ws, [str(images)], describer=SizeDescriber(), criterion="colour")
    assert (summary.n_items, summary.described, summary.cached) == (5, 5, 0)
    assert summary.set_name == "description:colour" and "colour" in summary.prompt
    assert summary.set_id == "23275a7d690f9a00"  # the id older workspaces hold for this set
    stored = rows(ws)
    items = ws.items()
    for key, path, width in zip(items.sha256, items.path, items.width):
        assert stored[key].startswith(f"{width}x8") and Path(path).is_file()
    # a second run: no describer call, no file opened (the files are gone, the answers are not)
    for p in images.rglob("*.png"):
        p.write_bytes(b"")  # unreadable now; only a cache miss would try to decode it
    again = describe_items(ws, None, describer=SizeDescriber(fail_after=0), criterion="colour")
    assert (again.described, again.cached) == (0, 5)
    # --prompt instead of a criterion is a different set
    other = describe_items(ws, None, describer=SizeDescriber(), prompt="Say the size.")
    assert other.set_name.startswith("description:prompt-") and other.set_id != summary.set_id


def test_interrupted_run_keeps_finished_batches(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws.h5")
    images = folder(tmp_path / "imgs", BATCH + 4)
    with pytest.raises(KeyboardInterrupt):
        describe_items(ws, [str(images)], describer=SizeDescriber(fail_after=BATCH + 2), criterion="colour")
    assert len(rows(ws)) == BATCH  # the first batch's rows were written when it completed
    resumed = SizeDescriber()
    summary = describe_items(ws, [str(images)], describer=resumed, criterion="colour")
    assert len(rows(ws)) == BATCH + 4
    assert resumed.seen == 2 and summary.described == 2  # two answers of the broken batch were in the call store
    assert summary.cached == BATCH + 2


def test_unreadable_image_is_skipped_and_reported(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws.h5")
    images = folder(tmp_path / "imgs", 3)
    (images / "a" / "broken.png").write_bytes(b"not an image")
    summary = describe_items(ws, [str(images)], describer=SizeDescriber(), criterion="colour")
    assert summary.described == 3 and [Path(p).name for p, _ in summary.skipped] == ["broken.png"]
    assert len(rows(ws)) == 3


def test_group_descriptions_from_a_zeroshot_set(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws.h5")
    images = folder(tmp_path / "imgs", 6)
    describe_items(ws, [str(images)], describer=SizeDescriber(), criterion="colour")
    keys = ws.items().sha256
    sims = np.array([[1.0, 0.0] if i < 4 else [0.0, 1.0] for i in range(6)], np.float32)
    spec = {"id": "zs1", "name": "zeroshot:a <>", "kind": "zeroshot", "model": "m", "prompt": "a <>",
            "keyed_by": "item", "provenance": {}, "attrs": {"classes": json.dumps(["x", "y"])}}
    ws.write_batch(rows=[(spec, keys, sims)])
    summary = describe_items(ws, None, describer=SizeDescriber(), criterion="colour", group_size=3, group_by="zeroshot")
    assert summary.kind == "group-description" and summary.n_groups == 3  # x: 3 + 1, y: 2
    assert (summary.set_id, ws.resolve_set("group-membership").id) == ("84ceb19c6cc008af", "7483148d44c0d806")
    members = {k: json.loads(v) for k, v in rows(ws, "group-membership").items()}
    assert {m["label"] for k, m in members.items() if keys.index(k) < 4} == {"x"}
    assert sorted(len(m["members"]) for m in {m["group"]: m for m in members.values()}.values()) == [1, 2, 3]
    texts = rows(ws, "group-description")
    assert all(texts[k] == texts[m["members"][0]] for k, m in members.items())
    with pytest.raises(InputError, match="^group_by labels: expected 'zeroshot' or 'cluster:NAME'$"):
        describe_items(ws, None, describer=SizeDescriber(), criterion="colour", group_size=3, group_by="labels")


def test_import_text_only_items_use_their_own_hash(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws.h5")
    src = tmp_path / "d.csv"
    src.write_text("text,label\nfirst text,a\nsecond text,b\nfirst text,a\n")
    summary = import_into_workspace(ws, src, label_field="label")
    assert (summary.matched, summary.text_only, len(summary.skipped), summary.new_rows) == (0, 2, 1, 2)
    assert summary.set_id == "cec723c18c0077d2"
    items = ws.items()
    assert set(items.sha256) == {text_item_sha256("first text"), text_item_sha256("second text")}
    assert list(items.width) == [0, 0] and sorted(items.label) == ["a", "b"]
    assert rows(ws)[text_item_sha256("second text")] == "second text"


def test_set_ids_are_those_older_workspaces_hold() -> None:
    """Description, group-description and membership ids as the dict-built specs derived them:
    short_hash(model, kind, prompt, *parts), and short_hash(group set id, "membership")."""
    from clipclust.commands.describe.descriptions import description_spec, membership_spec
    from clipclust.store import short_hash

    params = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 100, "seed": 0}
    one = description_spec("description", "description:mood", "test:vlm", "Describe the mood.", {}, (params,))
    assert one.id == "0c3d384da523ca3e" == short_hash("test:vlm", "description", "Describe the mood.", params)
    assert (one.keyed_by, one.dtype, one.provenance["kind"]) == ("item", "str", "description")
    groups = description_spec("group-description", "group-description:mood [cluster:km x4]", "test:vlm",
                              "Describe these.", {}, (params, "cluster:km", 4))
    assert groups.id == "23f2f4386e804dd7"
    members = membership_spec(groups)
    assert members.id == "625ab16631fce1d9" == short_hash(groups.id, "membership")
    assert (members.kind, members.name) == ("group-membership", "group-membership:mood [cluster:km x4]")
    imported = description_spec("description", "description:import-notes", "import:notes.jsonl", "", {}, ("caption",))
    assert imported.id == "52331e2f533fcc99"
