"""The clustering orchestration on synthetic workspaces: storage, reuse, methods, the fused workflow, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipclust.store import ItemRecord
from clipclust.commands.cluster import run_clustering
from clipclust.methods import METHODS, ClusterRequest
from clipclust.methods.inputs import slugify
from clipclust.errors import InputError
from clipclust.commands.evaluate import evaluate_clustering
from clipclust.core.metrics import cluster_accuracy
from clipclust.core.progress import SilentReporter

from ..workspaces import MODEL, TEMPLATE, blob_workspace, fused_workspace, spec

pytestmark = [pytest.mark.filterwarnings("ignore:Graph is not fully connected"), pytest.mark.usefixtures("single_thread")]

K_OF = {"kmeans": 4, "spectral": 4, "agglomerative": 4, "hdbscan": None}



@pytest.mark.parametrize("method", ["kmeans", "spectral", "agglomerative", "hdbscan"])
def test_each_method_recovers_blobs_and_stores_its_result(tmp_path, method):
    ws, keys, X, y = blob_workspace(tmp_path / "ws.h5")
    summary = run_clustering(ws, method=method, k=K_OF[method])
    assert summary.name == f"{method}-image" and not summary.reused and summary.n_items == 60
    stored = ws.read_clustering(summary.name)
    assert stored["keys"] == keys
    assert cluster_accuracy(y, stored["ids"]).accuracy == 1.0
    assert stored["centroids"].shape == (4, X.shape[1])
    np.testing.assert_allclose(stored["centroids"][stored["ids"][0]], X[stored["ids"] == stored["ids"][0]].mean(0),
                               atol=1e-5)
    params = stored["params"]
    assert params["method"] == method and params["sets"]["input"]["name"] == "image"
    assert params["request"]["set_id"] == params["sets"]["input"]["id"]


@pytest.mark.parametrize("method", ["kmeans", "spectral", "agglomerative", "hdbscan"])
def test_labels_are_never_read_while_clustering(tmp_path, method):
    """Same vectors, labels renamed or absent: the same clustering, id for id."""
    results = []
    for i, kwargs in enumerate([{}, {"label_names": ["z", "y", "x", "w"]}, {"labelled": False}]):
        ws, *_ = blob_workspace(tmp_path / f"ws{i}.h5", n_per_class=10, dim=6, **kwargs)
        run_clustering(ws, method=method, k=K_OF[method], seed=3)
        results.append(ws.read_clustering(f"{method}-image")["ids"])
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_head_pseudo_labels_do_not_depend_on_labels(tmp_path):
    outputs = []
    for i, kwargs in enumerate([{}, {"labelled": False}, {"label_names": ["d", "c", "b", "a"]}]):
        ws, *_ = blob_workspace(tmp_path / f"ws{i}.h5", n_per_class=10, **kwargs)
        run_clustering(ws, k=4, refine="head", epochs=20, device="cpu")
        outputs.append(ws.read_clustering("kmeans-head-image"))
    for other in outputs[1:]:
        for key in ("ids", "kmeans_ids", "pseudo_indices"):
            np.testing.assert_array_equal(outputs[0][key], other[key])


def test_same_request_is_reused_and_a_changed_one_recomputed(tmp_path):
    ws, keys, X, _ = blob_workspace(tmp_path / "ws.h5")
    first = run_clustering(ws, k=4, seed=1)
    created = ws.read_clustering("kmeans-image")["created"]
    again = run_clustering(ws, k=4, seed=1)
    assert again.reused and again.sizes == first.sizes
    assert ws.read_clustering("kmeans-image")["created"] == created  # not rewritten
    reporter = SilentReporter()
    other_seed = run_clustering(ws, k=4, seed=2, reporter=reporter)
    assert not other_seed.reused and other_seed.replaced and "replacing" in reporter.warnings[0]
    forced = run_clustering(ws, k=4, seed=2, force=True)
    assert not forced.reused
    # a new item changes the set's keys: the stored clustering no longer answers the request
    ws.write_batch(items=[ItemRecord(sha256="f" * 64, path="/new.png")],
                   rows=[(spec("image", "image"), ["f" * 64], X[:1])])
    grown = run_clustering(ws, k=4, seed=2)
    assert not grown.reused and grown.n_items == 61


def test_k_auto_chooses_by_silhouette_and_stores_the_table(tmp_path):
    ws, *_ = blob_workspace(tmp_path / "ws.h5")
    summary = run_clustering(ws, k="auto", k_range=(2, 7))
    assert summary.k == 4 and summary.n_clusters == 4
    assert [row["k"] for row in summary.k_table] == [2, 3, 4, 5, 6, 7]
    best = max(summary.k_table, key=lambda row: row["silhouette"])
    assert best["k"] == 4
    again = run_clustering(ws, k="auto", k_range=(2, 7))
    assert again.reused and again.k_table == summary.k_table


def test_k_auto_range_is_clamped_below_the_number_of_items(tmp_path):
    ws, *_ = blob_workspace(tmp_path / "ws.h5", n_per_class=2, n_classes=3)
    summary = run_clustering(ws, k="auto", k_range=(2, 50))
    assert max(row["k"] for row in summary.k_table) == 5


def test_head_refinement_is_seeded_and_stores_its_initialisation(tmp_path):
    ws, keys, X, y = blob_workspace(tmp_path / "ws.h5")
    one = run_clustering(ws, k=4, refine="head", ratio=0.3, epochs=30, device="cpu", name="a")
    two = run_clustering(ws, k=4, refine="head", ratio=0.3, epochs=30, device="cpu", name="b")
    a, b = ws.read_clustering("a"), ws.read_clustering("b")
    np.testing.assert_array_equal(a["ids"], b["ids"])
    assert cluster_accuracy(y, a["ids"]).accuracy == 1.0
    assert a["params"]["head"]["ratio"] == 0.3 and a["params"]["refine"] == "head"
    assert a["pseudo_indices"].shape[0] == 4 * int(0.3 * 15)
    assert one.name == "a" and two.n_clusters == 4


def test_split_restricts_the_items_and_names_the_clustering(tmp_path):
    ws, keys, X, _ = blob_workspace(tmp_path / "ws.h5", split="train")
    ws.upsert_items([ItemRecord(sha256=k, path="", split="test") for k in keys[:20]])
    summary = run_clustering(ws, k=3, split="train")
    assert summary.name == "kmeans-image-train" and summary.n_items == 40
    assert ws.read_clustering(summary.name)["keys"] == keys[20:]


def test_default_names_are_shell_friendly():
    assert slugify("fused-label:This is digit <> [map:even_odd]") == "fused-label-this-is-digit-map-even-odd"
    assert slugify("agnostic:builtin:generic-32") == "agnostic-builtin-generic-32"


def test_a_later_method_plugs_into_the_dispatch_table(tmp_path, monkeypatch):
    from clipclust.methods import MethodOutput, MethodSpec, PreparedInput, register_method

    ws, keys, X, _ = blob_workspace(tmp_path / "ws.h5")

    def prepare(workspace, req):
        return PreparedInput({"method": "halves", "n": len(keys)}, "halves", {"input": ws.resolve_set("image")},
                             keys, X)

    def compute(prepared, req, reporter):
        return MethodOutput(prepared.keys, (np.arange(len(prepared.keys)) >= 30).astype(int),
                            cluster_names=["first", "second"], details={"k": 2})

    monkeypatch.setitem(METHODS, "halves", None)  # so that the registration below is undone after the test
    register_method(MethodSpec("halves", "test method", prepare, compute))
    summary = run_clustering(ws, method="halves")
    assert summary.sizes == {"0": 30, "1": 30} and ws.read_clustering("halves")["names"] == ["first", "second"]
    assert run_clustering(ws, method="halves").reused


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"on": "nothing-like-this", "k": 2}, "no stored set matches 'nothing-like-this'"),
        ({"k": 61}, "k: 61 is larger than the 60 items of set 'image'; ask for 60 clusters or fewer"),
        ({"k": 1}, "at least 2 clusters"),
        ({"k": "many"}, "expected a whole number of clusters or 'auto'"),
        ({}, "k: the kmeans method needs the number of clusters"),
        ({"method": "hdbscan", "k": 3}, "hdbscan decides the number of clusters itself"),
        ({"method": "spectral", "k": 3, "options": {"linkage": "ward"}}, "linkage: applies to the agglomerative method, not spectral"),
        ({"method": "agglomerative", "k": 3, "options": {"linkage": "zigzag"}},
         "linkage: 'zigzag': expected one of ward, average, complete, single"),
        ({"method": "agglomerative", "k": 3, "linkage": "ward", "metric": "cosine"}, "Ward linkage works only with"),
        ({"method": "hdbscan", "options": {"min_cluster_size": 500}}, "min_cluster_size=500 is larger"),
        ({"method": "telepathy", "k": 2}, "method: 'telepathy' is not a method; expected one of"),
        ({"k": 3, "refine": "polish"}, "refine: 'polish': expected one of head"),
        ({"k": 3, "refine": "head", "ratio": 1.5}, "ratio: 1.5: expected a fraction"),
        ({"k": 3, "refine": "head", "epochs": 0}, "epochs: 0: expected a whole number of 1 or more"),
        ({"k": 3, "refine": "head", "lr": 0}, "lr: 0: expected a number above 0"),
        ({"k": 3, "epochs": 5}, "epochs: applies to refine head, not kmeans"),
        ({"k": 3, "device": "cpu"}, "device: applies to the esmc or ictc or text method or refine head, not kmeans"),
        ({"method": "spectral", "k": 3, "refine": "head"}, "starts from k-means"),
        ({"k": 3, "split": "validation"}, "no item of set 'image' is in split 'validation'"),
        ({"k": 3, "name": "a/b"}, "name: 'a/b'"),
        ({"k": "auto", "k_range": (12, 20)}, "k_range: auto: the range 12:20"),
    ],
)
def test_bad_requests_are_input_errors_that_say_what_to_do(tmp_path, kwargs, message):
    ws, *_ = blob_workspace(tmp_path / "ws.h5", split="train")
    if kwargs.get("k_range"):
        ws, *_ = blob_workspace(tmp_path / "small.h5", n_per_class=3)
    with pytest.raises(InputError) as info:
        run_clustering(ws, **kwargs)
    assert message in str(info.value)


def test_sets_with_a_vector_per_class_cannot_be_clustered_directly(tmp_path):
    world = fused_workspace(tmp_path / "ws.h5")
    with pytest.raises(InputError, match="one vector per class for each item.*fused-label:a photo of <>"):
        run_clustering(world["ws"], on=f"fused-all:{TEMPLATE}", k=3)


# ------------------------------------------------------------------------------------------- fused workflow
def test_fused_workflow_classifies_the_test_split(tmp_path):
    world = fused_workspace(tmp_path / "ws.h5")
    ws = world["ws"]
    summary = run_clustering(ws, method="fused")
    assert summary.name == "fused-a-photo-of" and summary.n_items == 100 and summary.n_test == 60
    assert summary.seed == 42 and summary.k == 10  # 2 x 5 prompts, the paper's default
    stored = ws.read_clustering(summary.name)
    assert stored["keys"] == world["train_keys"] and stored["test_keys"] == world["test_keys"]
    assert stored["predicted"] == [world["labels"][c] for c in world["test_y"]]
    # every cluster's name is its majority label, and each test item's cluster carries its predicted class
    for cid, name in enumerate(stored["names"]):
        members = world["train_y"][stored["ids"] == cid]
        assert name == str(np.bincount(members).argmax())
    assert [stored["names"][c] for c in stored["test_ids"]] == stored["predicted"]
    report = evaluate_clustering(ws, summary.name)
    assert report.accuracy == 1.0 and report.n_predicted_labelled == 60 and report.purity == 1.0
    assert run_clustering(ws, method="fused").reused


def test_fused_workflow_can_be_named_by_either_set_and_k(tmp_path):
    world = fused_workspace(tmp_path / "ws.h5")
    by_test_set = run_clustering(world["ws"], method="fused", on=f"fused-all:{TEMPLATE}", k=5, name="f5")
    assert by_test_set.k == 5 and by_test_set.n_clusters == 5
    assert evaluate_clustering(world["ws"], "f5").accuracy == 1.0


def test_image_only_baseline_is_the_same_workflow_on_image_vectors(tmp_path):
    world = fused_workspace(tmp_path / "ws.h5")
    summary = run_clustering(world["ws"], method="fused", on="image")
    assert summary.name == "fused-image" and summary.on == "image" and summary.test_on == "image"
    report = evaluate_clustering(world["ws"], "fused-image")
    assert report.accuracy == 1.0  # separated classes: the nearest labelled centroid is right


def test_fused_workflow_is_deterministic_under_its_seed(tmp_path):
    world = fused_workspace(tmp_path / "ws.h5", noise=0.6)
    run_clustering(world["ws"], method="fused", seed=5, name="a")
    run_clustering(world["ws"], method="fused", seed=5, name="b")
    a, b = world["ws"].read_clustering("a"), world["ws"].read_clustering("b")
    np.testing.assert_array_equal(a["ids"], b["ids"])
    assert a["predicted"] == b["predicted"]


def test_grouped_prompts_predict_groups_and_are_scored_against_groups(tmp_path):
    groups = {"0": "even", "1": "odd", "2": "even", "3": "odd", "4": "even"}
    world = fused_workspace(tmp_path / "ws.h5", class_map=groups)
    summary = run_clustering(world["ws"], method="fused", k=10)
    assert summary.name == "fused-a-photo-of-map-groups"
    stored = world["ws"].read_clustering(summary.name)
    assert set(stored["predicted"]) == {"even", "odd"} and set(stored["names"]) == {"even", "odd"}
    assert stored["params"]["prediction_space"] == "group"
    report = evaluate_clustering(world["ws"], summary.name)
    assert report.accuracy == 1.0 and report.n_classes == 2


def test_swapped_prompts_report_the_original_classes(tmp_path):
    swapped = {str(i): str((i + 1) % 5) for i in range(5)}  # images of 0 fused with the prompt of 1, ...
    world = fused_workspace(tmp_path / "ws.h5", class_map=swapped)
    run_clustering(world["ws"], method="fused", name="swapped")
    stored = world["ws"].read_clustering("swapped")
    assert stored["predicted"] == [world["labels"][c] for c in world["test_y"]]
    assert stored["params"]["prediction_space"] == "label"
    assert evaluate_clustering(world["ws"], "swapped").accuracy == 1.0


def test_fused_without_training_labels_is_a_clear_error(tmp_path):
    world = fused_workspace(tmp_path / "ws.h5", train_labels=False)
    with pytest.raises(InputError, match="needs a 'fused-label' set"):
        run_clustering(world["ws"], method="fused")
    with pytest.raises(InputError, match="needs labelled training items: no item of 'image' in split 'train'"):
        run_clustering(world["ws"], method="fused", on="image")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"test_split": "holdout"}, "no item of 'fused-all:a photo of <>' is in split 'holdout'"),
        ({"train_split": "other"}, "needs labelled training items"),
        ({"k": "auto"}, "not 'auto'"),
        ({"k": 101}, "k: 101 is larger than the 100 items of set 'fused-label:a photo of <>' (split 'train')"),
        ({"on": f"zeroshot:{TEMPLATE}"}, "is a zeroshot set"),
        ({"split": "train"}, "uses train_split and test_split, not split"),
        ({"refine": "head"}, "refine: the head starts from k-means"),
    ],
)
def test_fused_bad_requests(tmp_path, kwargs, message):
    world = fused_workspace(tmp_path / "ws.h5")
    with pytest.raises(InputError) as info:
        run_clustering(world["ws"], ClusterRequest.of(method="fused", **kwargs))
    assert message in str(info.value)


def test_fused_needs_the_test_sets_counterpart(tmp_path):
    world = fused_workspace(tmp_path / "ws.h5")
    ws = world["ws"]
    with ws.open_write() as f:  # drop the fused-all set as if the test split had never been embedded
        for set_id, group in list(f["sets"].items()):
            if group.attrs["kind"] == "fused-all":
                del f["sets"][set_id]
    with pytest.raises(InputError, match="needs 'fused-all:a photo of <>'.*split test, prompt .* and fuse all"):
        run_clustering(ws, method="fused")


def test_stored_params_are_json_with_provenance(tmp_path):
    world = fused_workspace(tmp_path / "ws.h5")
    run_clustering(world["ws"], method="fused")
    with world["ws"].open_read() as f:
        group = f["clusterings/fused-a-photo-of"]
        params = json.loads(group.attrs["params"])
        assert "versions" in json.loads(group.attrs["provenance"])
    assert params["sets"]["train"]["kind"] == "fused-label" and params["sets"]["test"]["kind"] == "fused-all"
    assert params["fused"]["n_neighbors"] == 10 and params["classes"] == world["classes"]


def test_a_second_models_set_gets_its_own_default_name(tmp_path):
    """Two models' 'image' sets: each k-means run is stored under its own name; neither replaces the other."""
    ws, keys, X, _ = blob_workspace(tmp_path / "ws.h5")
    other = spec("image", "image").replace_fields(id="b" * 16, model="synthetic:other@sha256:1111")
    ws.write_batch(rows=[(other, keys, X[:, ::-1].copy())])
    first = run_clustering(ws, k=4, model=MODEL)
    second = run_clustering(ws, k=4, model="synthetic:other@sha256:1111")
    assert first.name != second.name and not second.replaced
    assert first.name.startswith("kmeans-image-test-") and second.name.startswith("kmeans-image-other-")
    assert {first.name, second.name} <= set(ws.list_clusterings())


def test_a_reused_request_does_not_read_the_sets_vectors(tmp_path, monkeypatch):
    ws, *_ = blob_workspace(tmp_path / "ws.h5")
    run_clustering(ws, k=4)

    def no_read(*args, **kwargs):
        raise AssertionError("read_set called for a reusable request")

    monkeypatch.setattr(ws, "read_set", no_read)
    assert run_clustering(ws, k=4).reused


def test_methods_declare_their_own_options(tmp_path, monkeypatch):
    """A plugged-in method gets its declared option (with its default) and the others' options are refused."""
    from clipclust.methods import MethodOutput, MethodSpec, Option, PreparedInput, register_method

    ws, keys, X, _ = blob_workspace(tmp_path / "ws.h5")
    seen = {}

    def prepare(workspace, req):
        seen["cut"] = req.option("cut")
        return PreparedInput({"method": "cut", "cut": req.option("cut")}, "cut", {"input": ws.resolve_set("image")},
                             keys, X)

    def compute(prepared, req, reporter):
        return MethodOutput(prepared.keys, (np.arange(len(prepared.keys)) >= req.option("cut")).astype(int))

    monkeypatch.setitem(METHODS, "cut", None)
    register_method(MethodSpec("cut", "test method", prepare, compute,
                               options=(Option("cut", type=int, default=30, check=lambda v: int(v)),)))
    assert run_clustering(ws, method="cut").sizes == {"0": 30, "1": 30} and seen["cut"] == 30
    assert run_clustering(ws, method="cut", cut="20", name="c20").sizes == {"0": 20, "1": 40}
    with pytest.raises(InputError) as info:
        run_clustering(ws, method="cut", n_neighbors=5)
    assert info.value.option == "n_neighbors" and "applies to the fused or spectral method, not cut" in str(info.value)
    with pytest.raises(InputError) as info:
        run_clustering(ws, method="kmeans", k=2, cut=3)
    assert "cut: applies to the cut method, not kmeans" in str(info.value)
