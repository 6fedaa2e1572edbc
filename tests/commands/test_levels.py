"""A method's coarser levels stored as linked clusterings: names, links, nesting, reuse, re-runs with fewer levels;
then evaluate, export and the report reading them back.  A scripted method returns the levels (no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipclust.commands.cluster import run_clustering
from clipclust.errors import ClipclustError

from ..workspaces import blob_workspace

LABELS = ["cat", "dog", "cow", "pig", "car", "bus", "ship", "jet"]  # 2 x 2 x 2: animal/vehicle, pets/farm ...


@pytest.fixture()
def tiered(tmp_path, monkeypatch):
    """A workspace of 8 labelled blobs and a method 'tiered' whose levels halve the classes: depth 3 gives
    2 > 4 > 8 clusters; ``broken`` returns a coarse level a fine cluster straddles."""
    from clipclust.methods.registry import (METHODS, LevelOutput, MethodOutput, MethodSpec, Option, PreparedInput,
                                            register_method)

    ws, keys, X, y = blob_workspace(tmp_path / "ws.h5", n_per_class=5, n_classes=8, label_names=LABELS)
    calls = []

    def prepare(workspace, req):
        identity = {"method": "tiered", "depth": req.option("depth"), "broken": req.option("broken")}
        return PreparedInput(identity, "tiered", {"input": workspace.resolve_set("image")}, keys, X)

    def compute(prepared, req, reporter):
        calls.append(req.option("depth"))
        depth = req.option("depth")
        levels = [LevelOutput(y // 4, ["animal", "vehicle"], {"criterion": "kind"}),
                  LevelOutput(y // 2, ["pet", "farm", "road", "sea/air"])][3 - depth:]
        if req.option("broken"):
            levels = [LevelOutput(np.arange(len(y)) % 2)]
        return MethodOutput(prepared.keys, y.copy(), cluster_names=LABELS, details={"k": 8}, levels=levels)

    monkeypatch.setitem(METHODS, "tiered", None)  # undone after the test
    register_method(MethodSpec("tiered", "test method with levels", prepare, compute, options=(
        Option("depth", type=int, default=3), Option("broken", type=bool, default=False))))
    return {"ws": ws, "y": y, "keys": keys, "calls": calls}


def test_levels_are_stored_linked_reused_together_and_replaced_whole(tiered) -> None:
    ws, y, calls = tiered["ws"], tiered["y"], tiered["calls"]
    summary = run_clustering(ws, method="tiered")
    assert summary.name == "tiered" and summary.n_clusters == 8
    assert ws.list_clusterings() == ["tiered", "tiered.level1", "tiered.level2"]
    fine, mid, top = (ws.read_clustering(n) for n in ("tiered", "tiered.level2", "tiered.level1"))
    assert fine["params"]["levels"] == ["tiered.level1", "tiered.level2", "tiered"]
    assert (top["params"]["level"], mid["params"]["level"], fine["params"]["level"]) == (1, 2, 3)
    assert "parent" not in top["params"] and mid["params"]["parent"] == "tiered.level1"
    assert fine["params"]["parent"] == "tiered.level2" and fine["params"]["parents"] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert mid["params"]["parents"] == [0, 0, 1, 1] and top["params"]["children_of"] == [[0, 1], [2, 3]]
    assert list(top["names"]) == ["animal", "vehicle"] and top["params"]["criterion"] == "kind"
    assert top["params"]["k"] == 2 and mid["params"]["k"] == 4
    np.testing.assert_array_equal(top["ids"], y // 4)
    assert top["params"]["request"] == fine["params"]["request"]

    assert run_clustering(ws, method="tiered").reused and calls == [3]  # every level reused, nothing computed
    assert run_clustering(ws, method="tiered", force=True).replaced and calls == [3, 3]

    two = run_clustering(ws, method="tiered", depth=2)  # fewer levels: the old middle one goes in the same save
    assert two.replaced and ws.list_clusterings() == ["tiered", "tiered.level1"]
    assert ws.read_clustering("tiered")["params"]["parent"] == "tiered.level1"
    assert list(ws.read_clustering("tiered.level1")["names"]) == ["pet", "farm", "road", "sea/air"]

    flat = run_clustering(ws, method="tiered", depth=1)
    assert ws.list_clusterings() == ["tiered"] and "levels" not in flat.params and "level" not in flat.params


def test_a_level_a_fine_cluster_straddles_is_an_internal_error_and_nothing_is_stored(tiered) -> None:
    ws = tiered["ws"]
    run_clustering(ws, method="tiered", depth=2)
    with pytest.raises(ClipclustError, match="fine cluster 0 lies in coarse clusters 0, 1") as caught:
        run_clustering(ws, method="tiered", broken=True)
    assert caught.value.exit_code == 1
    assert ws.list_clusterings() == ["tiered", "tiered.level1"]  # the earlier taxonomy, untouched
    assert ws.read_clustering("tiered")["params"]["request"]["broken"] is False


def test_a_clustering_under_a_level_name_that_belongs_elsewhere_is_replaced_with_a_warning(tiered) -> None:
    from clipclust.core.progress import SilentReporter

    ws = tiered["ws"]
    run_clustering(ws, k=2, name="tiered.level1")
    reporter = SilentReporter()
    run_clustering(ws, method="tiered", depth=2, reporter=reporter)
    assert any("'tiered.level1' exists and is not a level of 'tiered'" in w for w in reporter.warnings)
    assert ws.read_clustering("tiered.level1")["params"]["level"] == 1


def test_evaluate_reports_every_level_and_scores_coarse_levels_against_mapped_labels(tiered, tmp_path) -> None:
    from clipclust.commands.evaluate import evaluate
    from clipclust.commands.levels import read_label_map

    ws = tiered["ws"]
    run_clustering(ws, method="tiered")
    (tmp_path / "map.csv").write_text("label,coarse\ncat,animal\ndog,animal\ncow,animal\npig,animal\n"
                                      "car,vehicle\nbus,vehicle\nship,vehicle\njet,vehicle\n")
    mapping = read_label_map(str(tmp_path / "map.csv"))
    result = evaluate(ws, ["tiered.level2"], label_map=mapping)  # one level named: the taxonomy comes with it
    assert list(result.reports) == ["tiered.level1", "tiered.level2", "tiered"]
    top, mid, fine = result.reports.values()
    assert (top.n_clusters, mid.n_clusters, fine.n_clusters) == (2, 4, 8)
    assert (top.level, mid.parent, fine.parent) == (1, "tiered.level1", "tiered.level2")
    assert fine.acc == 1.0 and top.acc == pytest.approx(0.25)  # 2 clusters against 8 raw labels
    assert top.mapped["acc"] == 1.0 and top.mapped["nmi"] == pytest.approx(1.0) and top.mapped["n_classes"] == 2
    assert fine.mapped["n_classes"] == 2 and top.to_dict()["mapped"]["mapping"] == {"0": "animal", "1": "vehicle"}
    assert evaluate(ws).reports["tiered.level1"].mapped is None  # without a map: the raw labels only


@pytest.mark.parametrize(("text", "message"), [
    ("cat\n", "line 1: expected LABEL,COARSE"), ("label,coarse\n", "maps no label"), ("{not json", "not valid JSON"),
])
def test_a_bad_label_map_is_one_input_error_naming_it(tmp_path, text, message) -> None:
    from clipclust.commands.levels import read_label_map
    from clipclust.errors import InputError

    (tmp_path / "map.csv").write_text(text)
    with pytest.raises(InputError, match=message) as caught:
        read_label_map(str(tmp_path / "map.csv"))
    assert caught.value.option == "label_map"
    (tmp_path / "map.json").write_text(json.dumps({"cat": "animal"}))
    assert read_label_map(str(tmp_path / "map.json")) == {"cat": "animal"}


def test_export_writes_each_levels_cluster_and_name_and_the_parent(tiered) -> None:
    from clipclust.commands.export import clustering_rows, columns_of

    ws, y, keys = tiered["ws"], tiered["y"], tiered["keys"]
    run_clustering(ws, method="tiered")
    rows = clustering_rows(ws, "tiered")
    assert list(columns_of(rows))[7:] == ["level1", "level1_name", "level2", "level2_name", "level3", "level3_name",
                                          "parent"]
    row = rows[keys.index(keys[-1])]
    assert (row["cluster"], row["cluster_name"], row["level2"], row["level2_name"]) == (7, "jet", 3, "sea/air")
    assert (row["level1"], row["level1_name"], row["parent"]) == (1, "vehicle", 3)
    coarse = clustering_rows(ws, "tiered.level1")  # a coarse level: its own cluster, the levels beside it
    assert coarse[0]["cluster_name"] == "animal" and coarse[0]["level3_name"] == "cat" and coarse[0]["parent"] == -1
    run_clustering(ws, k=2, name="flat")
    assert list(columns_of(clustering_rows(ws, "flat"))) == ["path", "sha256", "label", "split", "cluster",
                                                             "cluster_name", "predicted"]


def test_the_report_shows_the_taxonomy_and_brings_every_level(tiered, tmp_path) -> None:
    from clipclust.commands.report import report

    from ..browser import need_chromium, open_page
    from .test_report import payload

    ws = tiered["ws"]
    run_clustering(ws, method="tiered")
    run_clustering(ws, k=2, name="flat")
    summary = report(ws, ["tiered"], out=tmp_path / "r.html", thumbnails="none")
    assert summary.clusterings == ["tiered.level1", "tiered.level2", "tiered"]
    data = payload(tmp_path / "r.html")
    tree = data["clusterings"][0]["taxonomy"]
    assert tree["levels"] == ["tiered.level1", "tiered.level2", "tiered"]
    animal = tree["clusters"][0]
    assert (animal["name"], animal["size"], [c["name"] for c in animal["children"]]) == ("animal", 20, ["pet", "farm"])
    assert [c["name"] for c in animal["children"][1]["children"]] == ["cow", "pig"]
    assert report(ws, ["flat"], out=tmp_path / "f.html", thumbnails="none").clusterings == ["flat"]
    assert payload(tmp_path / "f.html")["clusterings"][0]["taxonomy"] is None

    need_chromium()
    page = open_page(tmp_path / "r.html", "clustering=tiered.level2")
    assert page.console == [] and page.body["clustering"] == "tiered.level2", page.console
    assert page.elements["taxonomy-box"].get("hidden") is None
    assert "levels, coarse to fine: tiered.level1 &gt; tiered.level2 &gt; tiered" in page.dom or \
        "tiered.level1 > tiered.level2 > tiered" in page.dom
    assert all(name in page.dom for name in ("vehicle", "sea/air", "jet"))
