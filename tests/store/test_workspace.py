"""The workspace: readable with plain h5py, safe under kills and concurrent writers, locking with a timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from clipclust.store import ItemRecord, SetSpec, Workspace
from clipclust.errors import ClipclustError, InputError

from ..conftest import write_digits

REPO = Path(__file__).resolve().parents[2]


def _spec(set_id: str = "s1", kind: str = "image") -> SetSpec:
    return SetSpec(id=set_id, name=kind, kind=kind, model="m")


def _sha(i: int) -> str:
    return f"{i:064x}"


def test_write_batch_dedups_and_updates_items(tmp_path):
    ws = Workspace(tmp_path / "ws.h5")
    recs = [ItemRecord(_sha(i), f"/x/{i}.png", label="a", width=3, height=4) for i in range(3)]
    added = ws.write_batch(items=recs, rows=[(_spec(), [r.sha256 for r in recs], np.eye(3, dtype=np.float32))])
    again = ws.write_batch(rows=[(_spec(), [_sha(0), _sha(3), _sha(3)], np.ones((3, 3), np.float32))])
    assert (added, again) == (3, 1)
    keys, data = ws.read_set("s1")
    assert keys == [_sha(0), _sha(1), _sha(2), _sha(3)]
    np.testing.assert_array_equal(data[0], [1, 0, 0])  # the first row written wins
    ws.upsert_items([ItemRecord(_sha(1), "/y/1.png", label="b", split="test")])
    items = ws.items()
    assert items.path[1] == "/y/1.png" and items.label[1] == "b" and items.split[1] == "test" and items.width[1] == 3


def test_resolve_set_by_id_name_and_kind(tmp_path):
    ws = Workspace(tmp_path / "ws.h5")
    for sid, name, kind in (("a1", "fused-label:P <>", "fused-label"), ("b2", "fused-all:P <>", "fused-all")):
        ws.write_batch(rows=[(_spec(sid, kind).replace_fields(name=name), [_sha(0)], np.zeros((1, 2), np.float32))])
    assert ws.resolve_set("b2").name == "fused-all:P <>"
    assert ws.resolve_set("fused-label").id == "a1"
    with pytest.raises(InputError, match="matches 2 sets"):
        ws.resolve_set("fused")
    with pytest.raises(InputError, match="no stored set matches 'image'"):
        ws.resolve_set("image")


def test_not_a_workspace_and_garbage_files(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(InputError, match="not a clipclust workspace"):
        Workspace(other).items()
    garbage = tmp_path / "garbage.h5"
    garbage.write_text("not hdf5")  # never was a workspace: no 'check --repair' advice
    with pytest.raises(InputError, match="not a workspace: .* is not an HDF5 file"):
        Workspace(garbage).items()
    broken = tmp_path / "broken.h5"  # an HDF5 signature, then garbage: a damaged file, for check --repair
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 600)
    with pytest.raises(ClipclustError, match="not a readable HDF5 file"):
        Workspace(broken).items()


def test_readable_with_plain_h5py_without_clipclust(tmp_path, digits_dir, open_clip_encoder, tiny_open_clip):
    from clipclust.commands.embed.embedding import EmbedOptions, embed

    ws_path = tmp_path / "ws.h5"
    embed(Workspace(ws_path), [str(digits_dir)], EmbedOptions(model=str(tiny_open_clip), prompts=["digit <>"]),
          encoder=open_clip_encoder)
    script = textwrap.dedent(f"""
        import json, sys, h5py
        with h5py.File({str(ws_path)!r}, "r") as f:
            assert f.attrs["format"] == "clipclust-workspace"
            labels = f["items/label"].asstr()[:]
            shas = f["items/sha256"][:].astype(str)
            sets = {{g.attrs["name"]: g for g in f["sets"].values()}}
            image = sets["image"]
            keys, vectors = image["keys"][:].astype(str), image["data"][:]
            prov = json.loads(sets["fused-label:digit <>"].attrs["provenance"])
            print(len(labels), len(set(shas)), vectors.shape[0], len(keys), prov["template"], sorted(set(labels))[0])
        assert "clipclust" not in sys.modules
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split() == ["40", "40", "40", "40", "digit", "<>", "0"]


def test_lock_timeout_gives_a_clear_error(tmp_path):
    from filelock import FileLock

    ws = Workspace(tmp_path / "ws.h5", lock_timeout=0.3)
    with FileLock(str(ws.path) + ".lock"):
        with pytest.raises(ClipclustError, match="in use by another clipclust process"):
            ws.upsert_items([ItemRecord(_sha(1), "/a.png")])
    ws.upsert_items([ItemRecord(_sha(1), "/a.png")])  # free again: works
    assert len(ws.items()) == 1


def _embed_cmd(cache: Path, images: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "clipclust", "--quiet", "--cache", str(cache), "embed", str(images), "--model",
            str(model), "--device", "cpu", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_two_embeds_an_answer_writer_and_a_reader_at_once(tmp_path, tiny_open_clip):
    cache = tmp_path / "ws.h5"
    a = write_digits(tmp_path / "a", 30)
    b = write_digits(tmp_path / "b", 30, offset=100)
    procs = [subprocess.Popen(_embed_cmd(cache, folder, tiny_open_clip, "-b", "4", "-p", "digit <>"), env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for folder in (a, b)]
    ws = Workspace(cache)
    seen, puts = [], 0  # meanwhile: answers put one at a time (as describe does) and a reader (as info)
    while any(p.poll() is None for p in procs) or puts < 10:
        ws.put_many({f"answer key {puts}": f"answer {puts}"})
        puts += 1
        seen.append(ws.count_items())
        time.sleep(0.05)
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert seen == sorted(seen) and ws.count_calls() == puts
    assert ws.get_many([f"answer key {puts - 1}"]) == {f"answer key {puts - 1}": f"answer {puts - 1}"}
    assert len(ws.items()) == 60
    assert len(ws.set_keys(ws.resolve_set("image").id)) == 60
    assert len(ws.set_keys(ws.resolve_set("text", keyed_by="class").id)) == 10  # both wrote the same texts once


def test_killed_mid_run_leaves_a_readable_file_and_resumes(tmp_path, tiny_open_clip):
    cache = tmp_path / "ws.h5"
    images = write_digits(tmp_path / "d", 400)
    proc = subprocess.Popen(_embed_cmd(cache, images, tiny_open_clip, "-b", "2", "-w", "1"), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ws = Workspace(cache)
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if cache.exists():
            try:
                stored = len(ws.items())
            except ClipclustError:
                continue
            if stored >= 6:
                break
    assert proc.poll() is None, "the run finished before it could be killed; give it more images"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with h5py.File(cache, "r") as f:  # readable, consistent: as many vectors as items
        done = f["items/sha256"].shape[0]
        image_set = next(g for g in f["sets"].values() if g.attrs["kind"] == "image")
        assert image_set["data"].shape[0] == done and 6 <= done < 400
    out = subprocess.run(_embed_cmd(cache, images, tiny_open_clip, "--json"), env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    import json

    summary = json.loads(out.stdout)
    assert summary["cached"] >= done and summary["new"] + summary["cached"] == 400


def _image_spec(**provenance) -> SetSpec:
    return SetSpec(id="s", name="image", kind="image", provenance=provenance)


def test_set_digest_changes_only_when_rows_change(tmp_path):
    ws = Workspace(tmp_path / "ws.h5")
    ws.write_batch(rows=[(_image_spec(), [_sha(1), _sha(2)], np.ones((2, 4)))])
    first = ws.set_digest("s")
    ws.write_batch(rows=[(_image_spec(), [_sha(1)], np.zeros((1, 4)))])  # a key it holds: skipped
    assert ws.set_digest("s") == first
    ws.write_batch(rows=[(_image_spec(), [_sha(3)], np.ones((1, 4)))])
    second = ws.set_digest("s")
    ws.write_batch(rows=[(_image_spec().replace_fields(replace=True), [_sha(1)], np.zeros((1, 4)))])
    assert len({first, second, ws.set_digest("s")}) == 3
    keys, data = ws.read_set("s")
    assert keys == [_sha(1), _sha(2), _sha(3)] and data[0].sum() == 0 and data[1].sum() == 4
    with pytest.raises(InputError):
        ws.set_digest("nope")


def test_runs_with_another_precision_or_device_are_recorded(tmp_path):
    import json

    ws = Workspace(tmp_path / "ws.h5")
    ws.write_batch(rows=[(_image_spec(precision="fp32", device="cpu"), [_sha(1)], np.ones((1, 4)))])
    ws.write_batch(rows=[(_image_spec(precision="fp32", device="cpu"), [_sha(2)], np.ones((1, 4)))])
    info = ws.resolve_set("image")
    assert "runs" not in info.attrs and json.loads(info.attrs["provenance"])["precision"] == "fp32"
    ws.write_batch(rows=[(_image_spec(precision="fp16", device="cuda"), [_sha(3), _sha(4)], np.ones((2, 4)))])
    runs = json.loads(ws.resolve_set("image").attrs["runs"])
    assert [(r["from_row"], r["precision"], r["device"]) for r in runs] == [(2, "fp16", "cuda")]
    assert "versions" in runs[0]


class _Unconvertible:
    def __array__(self, *args, **kwargs):
        raise RuntimeError("failed while writing")


def test_a_failed_clustering_replace_keeps_the_previous_one(tmp_path):
    ws = Workspace(tmp_path / "ws.h5")
    ws.save_clustering("c", keys=[_sha(1)], ids=np.array([0]), params={"k": 1})
    with pytest.raises(RuntimeError):
        ws.save_clustering("c", keys=[_sha(1), _sha(2)], ids=np.array([0, 1]), params={"k": 2},
                           extra={"bad": _Unconvertible()})
    c = ws.read_clustering("c")
    assert c["params"] == {"k": 1} and list(c["ids"]) == [0] and ws.list_clusterings() == ["c"]
    assert ws.clustering_params("c") == {"k": 1} and ws.clustering_params("other") is None
    with h5py.File(tmp_path / "ws.h5", "r") as f:
        assert list(f["clusterings"]) == ["c"]


def test_clusterings_saved_together_land_together_or_not_at_all(tmp_path):
    from clipclust.store import ClusteringRecord

    ws = Workspace(tmp_path / "ws.h5")
    ws.save_clusterings([ClusteringRecord("t.level1", [_sha(1)], np.array([0]), {"level": 1}),
                         ClusteringRecord("t.level2", [_sha(1)], np.array([0]), {"level": 2}),
                         ClusteringRecord("t", [_sha(1)], np.array([0]), {"level": 3})])
    with pytest.raises(RuntimeError):  # the second record fails: the first is not replaced, nothing removed
        ws.save_clusterings([ClusteringRecord("t.level1", [_sha(1)], np.array([1]), {"level": 1, "new": True}),
                             ClusteringRecord("t", [_sha(1)], np.array([0]), {}, extra={"bad": _Unconvertible()})],
                            remove=["t.level2"])
    assert ws.list_clusterings() == ["t", "t.level1", "t.level2"] and ws.clustering_params("t.level1") == {"level": 1}
    ws.save_clusterings([ClusteringRecord("t", [_sha(1)], np.array([0]), {"level": 2}),
                         ClusteringRecord("t.level1", [_sha(1)], np.array([0]), {"level": 1})], remove=["t.level2"])
    assert ws.list_clusterings() == ["t", "t.level1"]


def test_bad_lock_timeout_is_a_clear_input_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLUST_LOCK_TIMEOUT", "soon")
    with pytest.raises(InputError, match="CLIPCLUST_LOCK_TIMEOUT='soon' is not a number of seconds"):
        Workspace(tmp_path / "ws.h5")
    monkeypatch.setenv("CLIPCLUST_LOCK_TIMEOUT", "2.5")
    assert Workspace(tmp_path / "ws.h5").lock_timeout == 2.5


def test_a_format_1_call_store_is_read_then_upgraded_by_the_first_write(tmp_path):
    path = tmp_path / "ws.h5"
    string = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:  # as clipclust 0.x wrote it
        f.attrs.update({"format": "clipclust-workspace", "format_version": 1, "created": "2026-01-01T00:00:00+00:00"})
        g = f.create_group("calls")
        g.create_dataset("keys", data=np.array([_sha(1), "free text key"], dtype=object), dtype=string,
                         maxshape=(None,), chunks=(16,))
        g.create_dataset("values", data=np.array(["one", "two ü"], dtype=object), dtype=string, maxshape=(None,),
                         chunks=(16,))
    ws = Workspace(path)
    assert ws.get_many([_sha(1), "free text key", "x"]) == {_sha(1): "one", "free text key": "two ü"}
    ws.put_many({"new": "three"})
    assert ws.get_many([_sha(1), "free text key", "new"]) == {_sha(1): "one", "free text key": "two ü",
                                                              "new": "three"}
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 2 and "values" not in f["calls"] and f["calls/keys"].dtype == "S64"
    assert ws.count_calls() == 3


def test_answers_put_one_at_a_time_stay_small(tmp_path):
    ws = Workspace(tmp_path / "ws.h5")
    for i in range(200):
        ws.put_many({f"key {i}": f"answer number {i}"})
    assert ws.get_many(["key 7", "key 199"]) == {"key 7": "answer number 7", "key 199": "answer number 199"}
    # ~100 B per answer plus the first chunks of the three columns (~140 KB)
    assert (tmp_path / "ws.h5").stat().st_size / 200 < 1024



def test_item_counts_are_kept_through_adds_and_relabels(tmp_path):
    ws = Workspace(tmp_path / "ws.h5")
    ws.upsert_items([ItemRecord(_sha(i), f"/x/{i}.png", label="cat" if i % 2 else "dog", split="train")
                     for i in range(5)])
    assert ws.item_counts() == {("train", "cat"): 2, ("train", "dog"): 3}
    ws.upsert_items([ItemRecord(_sha(0), "/x/0.png", label="cat"), ItemRecord(_sha(9), "/x/9.png")])
    assert ws.item_counts() == {("train", "cat"): 3, ("train", "dog"): 2, ("", ""): 1}
    with h5py.File(tmp_path / "ws.h5", "a") as f:  # as an older clipclust left it: no kept counts
        del f["items"].attrs["counts"]
    assert ws.item_counts() == {("train", "cat"): 3, ("train", "dog"): 2, ("", ""): 1}  # from the columns
    ws.upsert_items([ItemRecord(_sha(10), "/x/10.png", label="cow", split="test")])
    with h5py.File(tmp_path / "ws.h5", "r") as f:
        assert "counts" in f["items"].attrs
    assert ws.item_counts()[("test", "cow")] == 1
    from clipclust.store.check import check_workspace

    assert check_workspace(tmp_path / "ws.h5").ok


def test_a_put_or_an_upsert_reads_only_new_key_rows_once_the_index_is_built(tmp_path, monkeypatch):
    from clipclust.store import rows

    ws = Workspace(tmp_path / "ws.h5")
    ws.put_many({f"key {i}": f"answer {i}" for i in range(3000)})
    ws.upsert_items([ItemRecord(_sha(i), f"/x/{i}.png") for i in range(3000)])
    ws = Workspace(tmp_path / "ws.h5")  # a new process: builds its index once
    ws.get_many(["key 1"])
    ws.upsert_items([ItemRecord(_sha(1), "/x/1.png")])
    decoded: list[int] = []
    real = rows.decode
    monkeypatch.setattr(rows, "decode", lambda values: decoded.append(len(values)) or real(values))
    for i in range(5):
        ws.put_many({f"new key {i}": "x"})
        assert ws.get_many([f"new key {i}"]) == {f"new key {i}": "x"}
        ws.upsert_items([ItemRecord(_sha(i), f"/moved/{i}.png"), ItemRecord(_sha(5000 + i), "/new.png")])
    assert decoded and max(decoded) <= 2, decoded  # the tail, never the 3000 stored keys
    assert ws.items().path[:2] == ["/moved/0.png", "/moved/1.png"]
