"""`clipclust export`: CSV and JSON lines that csv/json parse back to the stored clustering."""

from __future__ import annotations

import csv
import io
import json

import pytest

from clipclust.store import Workspace
from clipclust.commands.export import COLUMNS

from ..workspaces import blob_workspace, fused_workspace
from .conftest import one_error_line

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.filterwarnings("ignore:Graph is not fully")]


def test_csv_and_jsonl_hold_the_stored_clustering(cli, tmp_path):
    ws, keys, X, y = blob_workspace(tmp_path / "ws.h5", split="train")
    assert cli("cluster", "-k", "4").code == 0
    stored = ws.read_clustering("kmeans-image")
    items = ws.items()
    path_of = dict(zip(items.sha256, items.path))

    result = cli("export")
    assert result.code == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 60
    assert [r["sha256"] for r in rows] == keys
    assert [int(r["cluster"]) for r in rows] == stored["ids"].tolist()
    assert [r["label"] for r in rows] == [f"c{c}" for c in y]
    assert all(r["split"] == "train" and r["path"] == path_of[r["sha256"]] and r["predicted"] == "" for r in rows)

    lines = cli("export", "kmeans-image", "--format", "jsonl").out.splitlines()
    records = [json.loads(line) for line in lines]
    assert records == [{**r, "cluster": int(r["cluster"])} for r in rows]
    assert cli("--json", "export").out.splitlines() == lines


def test_fused_export_has_the_test_items_with_their_predicted_class(cli, tmp_path):
    world = fused_workspace(tmp_path / "ws.h5")
    assert cli("cluster", "--method", "fused").code == 0
    rows = list(csv.DictReader(io.StringIO(cli("export", "--format", "csv").out)))
    train, test = rows[:100], rows[100:]
    assert [r["sha256"] for r in train] == world["train_keys"] and [r["sha256"] for r in test] == world["test_keys"]
    assert all(r["predicted"] == "" and r["cluster_name"] == r["label"] for r in train)  # separated: pure clusters
    assert all(r["predicted"] == r["label"] == r["cluster_name"] and int(r["cluster"]) >= 0 for r in test)
    assert {r["split"] for r in test} == {"test"}


def test_names_with_commas_and_quotes_survive_csv(cli, tmp_path):
    ws, keys, *_ = blob_workspace(tmp_path / "ws.h5", n_per_class=3, n_classes=2,
                                  label_names=['big, "red"', "small"])
    assert cli("cluster", "-k", "2").code == 0
    rows = list(csv.DictReader(io.StringIO(cli("export").out)))
    assert {r["label"] for r in rows} == {'big, "red"', "small"}


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("none", ["export"], "holds no clustering yet"),
        ("two", ["export"], "holds 2 clusterings (a, b); name one"),
        ("two", ["export", "c"], "no clustering named 'c' (known: a, b)"),
        ("two", ["export", "a", "--format", "xml"], "--format xml: expected one of csv, jsonl"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path, setup, args, message):
    blob_workspace(tmp_path / "ws.h5", n_per_class=4)
    if setup == "two":
        assert cli("cluster", "-k", "2", "--name", "a").code == 0
        assert cli("cluster", "-k", "3", "--name", "b").code == 0
    result = cli(*args)
    assert result.code == 2 and result.out == ""
    assert message in one_error_line(result)


def test_missing_workspace_is_exit_2(cli, tmp_path):
    result = cli("export", cache=tmp_path / "absent.h5")
    assert result.code == 2 and "no workspace at" in one_error_line(result)
    assert not Workspace(tmp_path / "absent.h5").exists()
