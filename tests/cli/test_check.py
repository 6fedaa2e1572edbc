"""`clipclust check [--repair]`: a one-line verdict and exit 0/1, and salvage of a broken file."""

from __future__ import annotations

import hashlib
import os

import h5py
import numpy as np

from clipclust.store import ItemRecord, SetSpec, Workspace


def _workspace(path, n: int = 300) -> list[str]:
    ws = Workspace(path)
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    for lo in range(0, n, 50):
        block = shas[lo : lo + 50]
        ws.write_batch(items=[ItemRecord(s, f"/img/{s}.png", "a") for s in block],
                       rows=[(SetSpec(id="img", name="image", kind="image"), block, np.ones((len(block), 256)))])
    ws.put_many({f"call {i}": f"answer {i}" for i in range(20)})
    ws.save_clustering("c", keys=shas, ids=np.zeros(n, int), params={"k": 1})
    return shas


def test_sound_workspace_is_ok(cli, tmp_path):
    _workspace(tmp_path / "ws.h5")
    res = cli("check")
    assert res.code == 0 and res.out.count("\n") == 1
    assert "ok (300 items, 1 sets, 1 clusterings, 20 cached calls)" in res.out
    assert cli("check", "--json").json()["ok"] is True


def test_duplicate_keys_are_reported_and_repair_drops_them(cli, tmp_path):
    path = tmp_path / "ws.h5"
    _workspace(path, 60)
    with h5py.File(path, "a") as f:  # another program appends a row whose key is already there
        for name in ("keys", "data"):
            ds = f[f"sets/img/{name}"]
            ds.resize(61, axis=0)
            ds[60] = ds[0]
    res = cli("check")
    assert res.code == 1 and "BROKEN: set img: 1 duplicate keys" in res.out and "--repair" in res.out
    res = cli("check", "--repair")
    repaired = tmp_path / "ws.repaired.h5"
    assert res.code == 1 and f"salvaged into {repaired}" in res.out and "1 duplicate or blank keys dropped" in res.out
    assert cli("check", cache=repaired).code == 0
    assert len(Workspace(repaired).set_keys("img")) == 60


def test_a_file_cut_short_is_broken_and_repair_keeps_what_reads(cli, tmp_path):
    path = tmp_path / "ws.h5"
    shas = _workspace(path)
    os.truncate(path, os.path.getsize(path) * 9 // 10)
    res = cli("check")
    assert res.code == 1 and "BROKEN: the file does not open" in res.out
    assert cli("info").code == 1  # every other command refuses it with one line
    res = cli("check", "--repair")
    assert "cut short" in res.out
    repaired = tmp_path / "ws.repaired.h5"
    assert cli("check", cache=repaired).code == 0
    ws = Workspace(repaired)
    assert set(ws.items().sha256) <= set(shas) and len(ws.items()) > 0
    assert cli("check", "--repair").code == 2  # the salvage is never overwritten


def test_no_workspace_is_bad_input(cli, tmp_path):
    res = cli("check")
    assert res.code == 2 and "no workspace" in res.err
