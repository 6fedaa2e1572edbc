"""The export use case: a clustering's rows, and a stored set streamed as CSV, JSON lines or .npy."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from clipclust.commands.export import SetExport, clustering_rows, export_set, write_rows
from clipclust.errors import InputError
from clipclust.store import Workspace

from ..workspaces import blob_workspace


def test_clustering_rows(tmp_path):
    ws, keys, _, y = blob_workspace(tmp_path / "ws.h5", n_per_class=2, n_classes=2, split="train")
    ws.save_clustering("hand", keys=keys, ids=y, params={"k": 2}, cluster_names=["zero", "one"])
    rows = clustering_rows(ws)
    assert rows[0] == {"path": "/nowhere/0.png", "sha256": keys[0], "label": "c0", "split": "train", "cluster": 0,
                       "cluster_name": "zero", "predicted": ""}
    out = io.StringIO()
    assert write_rows(rows, "csv", out) == 4
    assert [r["cluster_name"] for r in csv.DictReader(io.StringIO(out.getvalue()))] == ["zero", "zero", "one", "one"]


def test_a_set_as_jsonl_csv_and_npy(tmp_path):
    ws, keys, X, _ = blob_workspace(tmp_path / "ws.h5", n_per_class=3, n_classes=2, dim=4)
    out = io.StringIO()
    done = export_set(ws, "image", "jsonl", stream=out, chunk=2)  # blocks smaller than the set
    assert isinstance(done, SetExport) and done.rows == 6 and done.files == []
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["key"] for line in lines] == keys and np.allclose([line["vector"] for line in lines], X)
    out = io.StringIO()
    export_set(ws, "image", "csv", stream=out)
    assert out.getvalue().splitlines()[0] == "key,path,label,split,v0,v1,v2,v3"
    done = export_set(ws, "image", "npy", out=tmp_path / "vectors")
    assert done.files == [str(tmp_path / "vectors.npy"), str(tmp_path / "vectors.keys.csv")]
    np.testing.assert_array_equal(np.load(tmp_path / "vectors.npy"), X)
    assert done.to_dict() == {"set": {"id": done.set.id, "name": "image", "model": done.set.model, "shape": [6, 4]},
                              "rows": 6, "files": done.files}


def test_bad_input_speaks_python(tmp_path):
    with pytest.raises(InputError, match=r"no workspace at .*; run clipclust.embed\(\) first"):
        export_set(Workspace(tmp_path / "missing.h5"), "image", "csv", stream=io.StringIO())
    ws, *_ = blob_workspace(tmp_path / "ws.h5", n_per_class=1, n_classes=2)
    with pytest.raises(InputError, match=r"no stored set matches 'nope' \(known: image\); run clipclust.embed\(\) first"):
        export_set(ws, "nope", "csv", stream=io.StringIO())
    with pytest.raises(InputError, match="npy is binary"):
        export_set(ws, "image", "npy")
