"""The check use case: a verdict on a workspace file and, with repair, a salvaged copy beside it."""

from __future__ import annotations

import os

import numpy as np
import pytest

from clipclust.commands.check import CheckResult, check
from clipclust.errors import ClipclustError, InputError
from clipclust.store import ItemRecord, SetSpec, Workspace

from ..workspaces import sha


def _workspace(path) -> Workspace:
    ws = Workspace(path)
    keys = [sha(str(i)) for i in range(200)]
    for lo in range(0, 200, 50):
        block = keys[lo:lo + 50]
        ws.write_batch(items=[ItemRecord(k, f"/img/{k}.png", "a") for k in block],
                       rows=[(SetSpec(id="img", name="image", kind="image"), block, np.ones((50, 256)))])
    ws.save_clustering("c", keys=keys, ids=np.zeros(200, int), params={"k": 1})
    return ws


def test_a_sound_workspace(tmp_path):
    ws = _workspace(tmp_path / "ws.h5")
    result = check(ws)
    assert isinstance(result, CheckResult) and result.ok and result.repaired is None
    assert result.to_dict() == {"cache": str(ws.path), "ok": True, "problems": [], "items": 200, "sets": 1,
                                "clusterings": 1, "calls": 0, "repaired": None, "lost": [], "salvaged_from": None,
                                "lacks": []}
    assert check(str(ws.path)).to_dict() == result.to_dict()  # a path does as well as a Workspace


def test_a_file_cut_short_is_broken_and_repair_salvages_it(tmp_path):
    ws = _workspace(tmp_path / "ws.h5")
    os.truncate(ws.path, os.path.getsize(ws.path) * 9 // 10)
    result = check(ws)
    assert not result.ok and result.report.verdict().startswith(f"{ws.path}: BROKEN: the file does not open")
    repaired = check(ws, repair=True)
    assert repaired.repaired == str(tmp_path / "ws.repaired.h5") and any("cut short" in line for line in repaired.lost)
    assert check(Workspace(repaired.repaired)).ok


def test_a_broken_file_points_at_the_repair_in_each_caller_s_words(tmp_path):
    from clipclust.cli.common import describe_error

    ws = _workspace(tmp_path / "ws.h5")
    os.truncate(ws.path, os.path.getsize(ws.path) // 2)
    with pytest.raises(ClipclustError) as caught:
        Workspace(ws.path).items()
    assert str(caught.value).endswith("; run clipclust.check() to salvage what it holds")
    assert describe_error(caught.value).endswith("; run 'clipclust check --repair' to salvage what it holds")


def test_no_file_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="pass the file to check with cache"):
        check(tmp_path / "missing.h5")
