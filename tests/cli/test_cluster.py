"""`clipclust cluster` as a user runs it: methods, seeds, -k auto, reuse, the head, the fused workflow, errors."""

from __future__ import annotations

import json

import pytest

from ..workspaces import blob_workspace, fused_workspace
from .conftest import PROMPT, one_error_line

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.filterwarnings("ignore:Graph is not fully")]


def exported_ids(cli, name: str) -> list[int]:
    result = cli("export", name, "--format", "jsonl")
    assert result.code == 0, result.err
    return [json.loads(line)["cluster"] for line in result.out.splitlines()]


@pytest.mark.parametrize("method, k", [("kmeans", "5"), ("spectral", "5"), ("agglomerative", "5"), ("hdbscan", None)])
def test_each_method_is_deterministic_under_a_seed(cli, digits_ws, method, k):
    args = ["cluster", "--method", method, "--seed", "7"] + (["-k", k] if k else ["--min-cluster-size", "3"])
    first = cli(*args, "--name", "first")
    assert first.code == 0, first.err
    assert first.out.startswith(f"first: stored ({method} on 'image', 70 items, seed 7)")
    assert cli(*args, "--name", "second").code == 0
    assert exported_ids(cli, "first") == exported_ids(cli, "second")


def test_default_name_json_and_reuse(cli, digits_ws):
    first = cli("--json", "cluster", "-k", "4")
    assert first.code == 0, first.err
    data = first.json()
    assert data["name"] == "kmeans-image" and data["n_items"] == 70 and data["n_clusters"] == 4
    assert not data["reused"] and sum(data["sizes"].values()) == 70
    again = cli("cluster", "-k", "4")
    assert again.code == 0 and again.out.startswith("kmeans-image: reused (kmeans on 'image', 70 items, seed 0)")
    assert "pass --force to recompute" in again.out
    forced = cli("cluster", "-k", "4", "--force", "--json")
    assert forced.json()["reused"] is False
    changed = cli("cluster", "-k", "5")
    assert changed.code == 0 and "kmeans-image: replaced" in changed.out
    assert "exists with other inputs or parameters; replacing it" in changed.err


def test_k_auto_prints_the_silhouette_table(cli, tmp_path):
    blob_workspace(tmp_path / "ws.h5")
    result = cli("cluster", "-k", "auto", "--k-range", "2:6")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert "silhouette" in lines[0]
    rows = [line for line in lines if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["2", "3", "4", "5", "6"]
    assert "<- chosen" in next(row for row in rows if row.split("│")[1].strip() == "4")
    assert lines[-1].startswith("kmeans-image: stored") and "-> 4 clusters" in lines[-1]
    table = cli("--json", "cluster", "-k", "auto", "--k-range", "2:6").json()
    assert table["reused"] and [row["k"] for row in table["k_table"]] == [2, 3, 4, 5, 6] and table["k"] == 4


def test_refine_head_on_a_stored_set(cli, digits_ws):
    result = cli("cluster", "-k", "5", "--refine", "head", "--ratio", "0.4", "--epochs", "20", "--device", "cpu")
    assert result.code == 0, result.err
    assert result.out.startswith("kmeans-head-image: stored (kmeans + ESMC head on 'image', 70 items, seed 0)")
    params = cli("--json", "cluster", "-k", "5", "--refine", "head", "--ratio", "0.4", "--epochs", "20").json()
    assert params["reused"] and params["params"]["head"]["ratio"] == 0.4 and params["params"]["head"]["epochs"] == 20
    paper = cli("--json", "cluster", "-k", "5", "--refine", "head", "--epochs", "5", "--lr", "1e-4", "--batch-size",
                "1024").json()
    assert not paper["reused"] and paper["params"]["head"]["lr"] == 1e-4
    assert paper["params"]["head"]["batch_size"] == 1024


def test_clustering_another_set_and_one_split(cli, digits_ws):
    result = cli("--json", "cluster", "--method", "agglomerative", "--on", f"fused-label:{PROMPT}", "-k", "10",
                 "--linkage", "average")
    assert result.code == 0, result.err
    data = result.json()
    assert data["name"] == "agglomerative-fused-label-this-is-digit" and data["n_items"] == 40
    assert data["params"]["method_params"]["linkage"] == "average"
    test_only = cli("--json", "cluster", "--on", "zeroshot", "-k", "3", "--split", "test").json()
    assert test_only["name"] == "kmeans-zeroshot-this-is-digit-test" and test_only["n_items"] == 30


def test_fused_workflow_end_to_end(cli, tmp_path, tiny_open_clip):
    from ..conftest import write_digits

    train = write_digits(tmp_path / "train", 40)
    test = write_digits(tmp_path / "test", 20, offset=40)  # no 9 among them: the class list is given explicitly
    model = ["-m", str(tiny_open_clip), "-p", PROMPT, "--classes", ",".join(map(str, range(10)))]
    assert cli("embed", str(train), *model, "--split", "train", "--fuse", "label").code == 0
    assert cli("embed", str(test), *model, "--split", "test", "--fuse", "all").code == 0
    fused = cli("cluster", "--method", "fused")
    assert fused.code == 0, fused.err
    assert fused.out.startswith("fused-this-is-digit: stored (fused on 'fused-label:This is digit <>', 40 items, "
                                "seed 42) -> ")
    assert "20 test items of 'fused-all:This is digit <>' classified" in fused.out
    baseline = cli("cluster", "--method", "fused", "--on", "image", "-k", "10")
    assert baseline.code == 0 and baseline.out.startswith("fused-image: stored (fused on 'image', 40 items")
    table = cli("evaluate", "fused-this-is-digit", "fused-image")
    assert table.code == 0, table.err
    rows = {line.split("│")[1].strip(): line for line in table.out.splitlines() if line.startswith("│")}
    assert set(rows) == {"fused-this-is-digit", "fused-image"}
    data = cli("--json", "evaluate").json()
    for name in ("fused-this-is-digit", "fused-image"):
        assert 0.0 <= data[name]["accuracy"] <= 1.0 and data[name]["n_predicted_labelled"] == 20
        assert f"{data[name]['accuracy']:.3f} (20)" in rows[name]
    assert data["fused-this-is-digit"]["n_clusters"] == 20  # 2 x 10 prompts by default


@pytest.mark.parametrize(
    "args, message",
    [
        (["cluster", "--on", "nope", "-k", "3"], "no stored set matches 'nope' (known: "),
        (["cluster", "-k", "500"], "-k: 500 is larger than the 70 items of set 'image'; ask for 70 clusters or fewer"),
        (["cluster", "-k", "three"], "-k: 'three': expected a whole number of clusters or 'auto'"),
        (["cluster"], "-k: the kmeans method needs the number of clusters"),
        (["cluster", "-k", "auto", "--k-range", "2-9"], "--k-range: 2-9: expected MIN:MAX"),
        (["cluster", "--method", "voodoo", "-k", "3"], "--method: 'voodoo' is not a method; expected one of agglomerative, esmc, fused"),
        (["cluster", "--on", "fused-all", "-k", "3"], "one vector per class for each item"),
        (["cluster", "--method", "hdbscan", "-k", "3"], "hdbscan decides the number of clusters itself"),
        (["cluster", "--method", "fused", "--test-split", "val"], "is in split 'val'"),
        (["cluster", "-k", "3", "--linkage", "ward"], "--linkage: applies to the agglomerative method, not kmeans"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, digits_ws, args, message):
    result = cli(*args)
    assert result.code == 2 and result.out == ""
    assert message in one_error_line(result)


def test_fused_without_training_labels_is_exit_2(cli, tmp_path):
    fused_workspace(tmp_path / "ws.h5", train_labels=False)
    for args in (["cluster", "--method", "fused"], ["cluster", "--method", "fused", "--on", "image"]):
        result = cli(*args)
        assert result.code == 2
        line = one_error_line(result)
        assert "needs a 'fused-label' set" in line or "needs labelled training items" in line


def test_no_workspace_is_exit_2(cli, tmp_path):
    result = cli("cluster", "-k", "3", cache=tmp_path / "absent.h5")
    assert result.code == 2 and "no workspace at" in one_error_line(result)
