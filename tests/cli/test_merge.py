"""`clipclust merge`: shards of one job merge into what one run makes; disagreements are refused or reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipclust.store import ItemRecord, Workspace

from ..conftest import write_digits
from ..models.conftest import tiny_vlm_dir  # noqa: F401  (fixture re-exported)
from ..workspaces import blob_workspace, sha, spec
from .conftest import one_error_line

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.filterwarnings("ignore:Graph is not fully")]

PROMPT = "This is digit <>"
BOOKKEEPING = ("created", "updated", "uid", "digest")  # the workspace's own: dates, a set's id, its running digest


@pytest.fixture(autouse=True)
def _private_hash_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPCLUST_HASH_MEMO", str(tmp_path / "hashes.json"))


def contents(path: Path) -> dict:
    """Everything a workspace holds, keyed so that storage order does not matter."""
    ws = Workspace(path)
    items = ws.items()
    sets = {}
    for info in ws.list_sets():
        keys, rows = ws.read_set(info.id)
        attrs = {k: v for k, v in info.attrs.items() if k not in BOOKKEEPING}
        sets[info.id] = (attrs, dict(zip(keys, rows)))
    return {"items": {s: (l, sp) for s, l, sp in zip(items.sha256, items.label, items.split)}, "sets": sets}


def assert_same(a: dict, b: dict) -> None:
    assert a["items"] == b["items"]
    assert a["sets"].keys() == b["sets"].keys()
    for set_id, (attrs, rows) in a["sets"].items():
        other_attrs, other_rows = b["sets"][set_id]
        assert attrs == other_attrs, set_id
        assert rows.keys() == other_rows.keys(), attrs["name"]
        for key, row in rows.items():
            assert np.array_equal(row, other_rows[key]), (attrs["name"], key)  # vector for vector, bit for bit


def test_two_shards_merged_equal_one_run(cli, tmp_path, tiny_open_clip):
    digits = write_digits(tmp_path / "digits", 16)
    args = ("embed", str(digits), "--model", str(tiny_open_clip), "--prompt", PROMPT, "--fuse", "all",
            "--workers", "1", "--split", "train", "--json")
    whole = cli(*args, cache=tmp_path / "one.h5")
    assert whole.code == 0, whole.err
    shards = []
    for i in (1, 2):
        result = cli(*args, "--shard", f"{i}/2", cache=tmp_path / f"shard{i}.h5")
        assert result.code == 0, result.err
        shards.append(result.json()["new"])
    assert sum(shards) == 16 and all(n > 0 for n in shards)  # each shard embedded only its share
    first, second = (set(Workspace(tmp_path / f"shard{i}.h5").items().sha256) for i in (1, 2))
    assert not first & second

    merged = cli("merge", str(tmp_path / "shard1.h5"), str(tmp_path / "shard2.h5"), "-o", str(tmp_path / "all.h5"),
                 "--json")
    assert merged.code == 0, merged.err
    report = merged.json()
    assert report["items_added"] == 16 and report["conflicts"] == []
    text_sets = [s for s in report["sets"] if s["name"].startswith("text:")]
    assert text_sets and all(s["duplicates"] > 0 and s["differing"] == 0 for s in text_sets)  # prompts: in both
    assert_same(contents(tmp_path / "all.h5"), contents(tmp_path / "one.h5"))
    fused = [s for s in Workspace(tmp_path / "all.h5").list_sets() if s.kind.startswith("fused-")]
    assert fused and all(s.derived for s in fused)  # fused sets stay computed on read in the merged file

    again = cli("merge", str(tmp_path / "shard1.h5"), str(tmp_path / "shard2.h5"), "-o", str(tmp_path / "all.h5"))
    assert again.code == 0 and "0 new items (16 already there)" in again.out and "0 rows added" in again.out
    assert_same(contents(tmp_path / "all.h5"), contents(tmp_path / "one.h5"))
    rerun = cli(*args, cache=tmp_path / "all.h5")
    assert (rerun.json()["new"], rerun.json()["cached"]) == (0, 16)  # the merged workspace is a finished run


def test_described_shards_merge_with_their_cached_calls(cli, tmp_path, tiny_vlm_dir):
    digits = write_digits(tmp_path / "digits", 4)
    args = ("describe", str(digits), "--vlm", str(tiny_vlm_dir), "--criterion", "digit", "--max-tokens", "2",
            "--device", "cpu", "--json")
    assert cli(*args, cache=tmp_path / "one.h5").code == 0
    for i in (1, 2):
        assert cli(*args, "--shard", f"{i}/2", cache=tmp_path / f"d{i}.h5").code == 0
    merged = cli("merge", str(tmp_path / "d1.h5"), str(tmp_path / "d2.h5"), "-o", str(tmp_path / "all.h5"), "--json")
    assert merged.code == 0, merged.err
    assert merged.json()["calls_added"] == Workspace(tmp_path / "one.h5").count_calls() > 0
    assert_same(contents(tmp_path / "all.h5"), contents(tmp_path / "one.h5"))
    grouped = cli(*args, "--shard", "1/2", "--group-size", "2", "--group-by", "cluster:x", cache=tmp_path / "g.h5")
    assert grouped.code == 2 and "describe groups of items without a shard" in one_error_line(grouped)


def test_a_set_made_differently_is_refused_before_anything_is_written(cli, tmp_path, tiny_open_clip):
    digits = write_digits(tmp_path / "digits", 4)
    args = ("embed", str(digits), "--model", str(tiny_open_clip), "--workers", "1")
    assert cli(*args, "--precision", "fp32", cache=tmp_path / "a.h5").code == 0
    assert cli(*args, "--precision", "bf16", cache=tmp_path / "b.h5").code == 0
    result = cli("merge", str(tmp_path / "a.h5"), str(tmp_path / "b.h5"), "-o", str(tmp_path / "out.h5"))
    assert result.code == 2
    line = one_error_line(result)
    assert "set 'image'" in line and "was made differently in" in line and "precision 'fp32' vs 'bf16'" in line
    assert "nothing was merged" in line and not (tmp_path / "out.h5").exists()


def test_conflicting_rows_labels_and_clusterings_keep_the_first_and_are_reported(cli, tmp_path):
    blob_workspace(tmp_path / "a.h5", n_per_class=4, n_classes=2)
    ws_b, keys, X, y = blob_workspace(tmp_path / "b.h5", n_per_class=4, n_classes=2)
    image = spec("image", "image")
    ws_b.write_batch(items=[ItemRecord(sha("extra"), "extra.png", "c9")], rows=[(image, [sha("extra")], X[:1])])
    ws_b.upsert_items([ItemRecord(keys[0], "", label="relabelled")])
    other = Workspace(tmp_path / "c.h5")  # the same key with another vector
    other.write_batch(items=[ItemRecord(keys[1], "x.png", "c0")], rows=[(image, [keys[1]], X[:1] * -1)])
    other.put_many({"call-1": "answer", "call-2": "two"})
    Workspace(tmp_path / "a.h5").put_many({"call-1": "answer"})
    assert cli("cluster", "-k", "2", cache=tmp_path / "a.h5").code == 0
    assert cli("cluster", "-k", "3", cache=tmp_path / "b.h5").code == 0

    result = cli("merge", *(str(tmp_path / f"{n}.h5") for n in "abc"), "-o", str(tmp_path / "m.h5"), "--json")
    assert result.code == 0, result.err
    report = result.json()
    assert report["items_added"] == 9 and report["calls_added"] == 2 and report["calls_duplicate"] == 1
    assert report["clusterings_added"] == ["kmeans-image"]
    conflicts = report["conflicts"]
    assert any("label/split 'c0/' kept, 'relabelled/' in" in c for c in conflicts)
    assert any("set 'image': 1 keys with other rows" in c for c in conflicts)
    assert any("clustering 'kmeans-image' differs in" in c for c in conflicts)
    assert all(c in result.err for c in conflicts)  # reported on stderr too
    merged = Workspace(tmp_path / "m.h5")
    keys_m, rows_m = merged.read_set(image.id)
    assert np.array_equal(dict(zip(keys_m, rows_m))[keys[1]], X[1])  # the first input's row
    assert merged.read_clustering("kmeans-image")["ids"].max() == 1  # a's K=2 clustering
    assert merged.get_many(["call-2"]) == {"call-2": "two"}


@pytest.mark.parametrize("args, needle", [
    (["merge", "missing.h5", "-o", "out.h5"], "no workspace file missing.h5"),
    (["merge", "out.h5", "-o", "out.h5"], "at least one workspace other than the output"),
    (["merge", "a.h5"], "Missing option '--output'"),
])
def test_bad_merges_are_one_line_exit_2(cli, tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    blob_workspace(tmp_path / "a.h5", n_per_class=2, n_classes=2)
    blob_workspace(tmp_path / "out.h5", n_per_class=2, n_classes=2)
    result = cli(*args)
    assert result.code == 2
    assert needle in one_error_line(result)


def test_merge_into_an_existing_workspace_extends_it(cli, tmp_path):
    blob_workspace(tmp_path / "out.h5", n_per_class=3, n_classes=2, seed=0)
    blob_workspace(tmp_path / "more.h5", n_per_class=3, n_classes=2, seed=1)
    result = cli("merge", str(tmp_path / "more.h5"), "-o", str(tmp_path / "out.h5"), "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["items_added"] == 6
    assert len(Workspace(tmp_path / "out.h5").items()) == 12


def test_a_merge_stopped_midway_resumes_to_the_same_result(cli, tmp_path, monkeypatch):
    from clipclust.commands.embed import UNREADABLE_MEMO
    from clipclust.errors import ClipclustError

    for n, seed in (("a", 0), ("b", 1)):
        blob_workspace(tmp_path / f"{n}.h5", n_per_class=3, n_classes=2, seed=seed)
    Workspace(tmp_path / "b.h5").memo_put(UNREADABLE_MEMO, {sha("broken"): "truncated PNG"})
    inputs = [str(tmp_path / "a.h5"), str(tmp_path / "b.h5")]
    assert cli("merge", *inputs, "-o", str(tmp_path / "whole.h5")).code == 0

    real_write = Workspace.write_batch
    calls = []

    def fail_on_second(self, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ClipclustError("disk full")
        return real_write(self, **kwargs)

    monkeypatch.setattr(Workspace, "write_batch", fail_on_second)
    stopped = cli("merge", *inputs, "-o", str(tmp_path / "out.h5"))
    assert stopped.code == 1 and "disk full" in one_error_line(stopped)
    partial = contents(tmp_path / "out.h5")
    assert len(partial["items"]) == 12 and sum(len(rows) for _, rows in partial["sets"].values()) == 6  # a's rows
    monkeypatch.setattr(Workspace, "write_batch", real_write)
    resumed = cli("merge", *inputs, "-o", str(tmp_path / "out.h5"), "--json")
    assert resumed.code == 0 and resumed.json()["items_added"] == 0 and resumed.json()["sets"][0]["added"] == 6
    assert_same(contents(tmp_path / "out.h5"), contents(tmp_path / "whole.h5"))
    assert Workspace(tmp_path / "out.h5").memo_get(UNREADABLE_MEMO) == {sha("broken"): "truncated PNG"}
