"""`clipclust evaluate`: the metrics table, JSON keyed by name, zero-shot, probes and the errors."""

from __future__ import annotations

import pytest

from ..workspaces import blob_workspace, fused_workspace
from .conftest import one_error_line

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.filterwarnings("ignore:Graph is not fully")]


def table_rows(out: str) -> dict[str, list[str]]:
    """Data rows of a rich table keyed by their first cell."""
    rows = {}
    for line in out.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = cells
    return rows


def test_table_and_json_on_a_known_answer(cli, tmp_path):
    blob_workspace(tmp_path / "ws.h5")
    assert cli("cluster", "-k", "4").code == 0
    assert cli("cluster", "-k", "6", "--name", "six").code == 0
    result = cli("evaluate")
    assert result.code == 0, result.err
    header = next(line for line in result.out.splitlines() if "ACC" in line)
    columns = [c.strip() for c in header.strip("┃").split("┃")]
    rows = table_rows(result.out)
    assert set(rows) == {"kmeans-image", "six"}
    four = dict(zip(columns, rows["kmeans-image"]))
    assert (four["ACC"], four["NMI"], four["purity"], four["K"], four["C"]) == ("1.000", "1.000", "1.000", "4", "4")
    assert four["sizes"] == "15-15" and four["classes without cluster"] == "none" and four["accuracy (n)"] == "-"
    six = dict(zip(columns, rows["six"]))
    assert float(six["ACC"]) < 1.0 and six["purity"] == "1.000"  # K > C: split classes cost ACC, not purity
    data = cli("evaluate", "six", "--json").json()
    assert list(data) == ["six"] and data["six"]["n_clusters"] == 6 and data["six"]["n_classes"] == 4
    assert data["six"]["unmatched_classes"] == [] and data["six"]["purity"] == 1.0
    assert cli("--json", "evaluate", "kmeans-image").json()["kmeans-image"]["acc"] == 1.0


def test_zero_shot_and_probe(cli, tmp_path):
    fused_workspace(tmp_path / "ws.h5")
    result = cli("evaluate", "--zero-shot", "--probe", "svm", "--split", "train,test")
    assert result.code == 0, result.err
    assert "zeroshot:a photo of <>" in table_rows(result.out)
    probe = table_rows(result.out)["image"]
    assert probe[1:5] == ["svm", "splits train/test", "100", "60"] and probe[6] == "1.000"
    data = cli("--json", "evaluate", "--probe", "logreg", "--on", "zeroshot", "--temperature", "0.05").json()
    report = data["probe:logreg:zeroshot:a photo of <>"]
    assert report["standardize"] is False and report["temperature"] == 0.05
    assert report["mean_entropy"] < report["max_entropy"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "nope"], "no clustering named 'nope' (known: kmeans-image)"),
        (["evaluate", "kmeans-image"], "no item of clustering 'kmeans-image' has a label"),
        (["evaluate"], "no item of the clusterings (kmeans-image) has a label"),
        (["evaluate", "--probe", "svm"], "no item of 'image' has a label"),
        (["evaluate", "--probe", "svm", "--split", "train"], "--split train: expected TRAIN,TEST"),
        (["evaluate", "--zero-shot"], "no zero-shot set is stored"),
        (["evaluate", "--metric", "manhattan"], "--metric manhattan: expected euclidean or cosine"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path, args, message):
    blob_workspace(tmp_path / "ws.h5", labelled=False)
    assert cli("cluster", "-k", "4").code == 0
    result = cli(*args)
    assert result.code == 2 and result.out == ""
    assert message in one_error_line(result)


def test_nothing_to_evaluate(cli, tmp_path):
    blob_workspace(tmp_path / "ws.h5")
    result = cli("evaluate")
    assert result.code == 2 and "holds no clustering yet; run 'clipclust cluster' first" in one_error_line(result)
