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

from clipclust.store import ItemRecord, Workspace
from clipclust.errors import ClipclustError, InputError

from ..conftest import write_digits

REPO = Path(__file__).resolve().parents[2]


def _spec(set_id: str = "s1", kind: str = "image") -> dict:
    return {"id": set_id, "name": kind, "kind": kind, "model": "m", "prompt": "", "keyed_by": "item", "provenance": {}}


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
        ws.write_batch(rows=[({**_spec(sid, kind), "name": name}, [_sha(0)], np.zeros((1, 2), np.float32))])
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
    garbage.write_text("not hdf5")
    with pytest.raises(ClipclustError, match="not a readable HDF5 file"):
        Workspace(garbage).items()


def test_readable_with_plain_h5py_without_clipclust(tmp_path, digits_dir, open_clip_encoder, tiny_open_clip):
    from clipclust.embedding import EmbedOptions, embed

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


def test_two_concurrent_writers_both_land(tmp_path, tiny_open_clip):
    cache = tmp_path / "ws.h5"
    a = write_digits(tmp_path / "a", 30)
    b = write_digits(tmp_path / "b", 30, offset=100)
    procs = [subprocess.Popen(_embed_cmd(cache, folder, tiny_open_clip, "-b", "4", "-p", "digit <>"), env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for folder in (a, b)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    ws = Workspace(cache)
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
