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
