"""Evaluation of stored clusterings, zero-shot sets and probes against hand-made answers and sklearn."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_digits

from clipclust.store import ItemRecord, SetSpec, Workspace
from clipclust.commands.cluster import run_clustering
from clipclust.errors import InputError
from clipclust.commands.evaluate import evaluate, evaluate_clustering, evaluate_zero_shot, probe_set
from clipclust.core.progress import SilentReporter

from ..workspaces import TEMPLATE, blob_workspace, fused_workspace, spec


pytestmark = pytest.mark.usefixtures("single_thread")


def stored_clustering(tmp_path, ids, labels, vectors=None, name="hand"):
    """A workspace with one hand-made clustering over items with the given labels ('' = unlabelled)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    ws = Workspace(tmp_path / "ws.h5")
    keys = [hashlib.sha256(f"k{i}".encode()).hexdigest() for i in range(len(ids))]
    vectors = np.random.default_rng(0).normal(size=(len(ids), 3)) if vectors is None else vectors
    image = spec("image", "image")
    ws.write_batch(items=[ItemRecord(sha256=k, path=f"/x/{i}", label=lab) for i, (k, lab) in enumerate(zip(keys, labels))],
                   rows=[(image, keys, vectors)])
    ws.save_clustering(name, keys=keys, ids=np.asarray(ids), params={
        "method": "hand", "sets": {"input": {"id": image.id, "name": "image"}}})
    return ws, keys, vectors


def test_hand_made_clustering_matches_hand_and_sklearn(tmp_path):
    labels = ["a", "a", "a", "b", "b", "c", "c", "c"]
    ids = [1, 1, 0, 0, 0, 2, 2, 2]  # cluster 1 -> a, 0 -> b, 2 -> c: 7 of 8 right
    ws, _, X = stored_clustering(tmp_path, ids, labels)
    report = evaluate_clustering(ws, "hand")
    assert report.acc == pytest.approx(7 / 8) and report.purity == pytest.approx(7 / 8)
    assert report.nmi == pytest.approx(skm.normalized_mutual_info_score(labels, ids))
    assert report.ami == pytest.approx(skm.adjusted_mutual_info_score(labels, ids))
    assert report.ari == pytest.approx(skm.adjusted_rand_score(labels, ids))
    assert report.rand_index == pytest.approx(skm.rand_score(labels, ids))
    assert report.silhouette == pytest.approx(skm.silhouette_score(X, ids))
    assert report.cluster_sizes == {"0": 3, "1": 2, "2": 3} and report.unmatched_classes == []
    assert report.mapping == {"0": "b", "1": "a", "2": "c"}
    assert report.accuracy is None  # no predictions stored


def test_acc_is_invariant_to_relabelling_and_handles_k_not_c(tmp_path):
    labels = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    renamed = evaluate_clustering(stored_clustering(tmp_path / "1", [7] * 4 + [3] * 4 + [5] * 4, labels)[0], "hand")
    assert renamed.acc == 1.0
    fewer = evaluate_clustering(stored_clustering(tmp_path / "2", [0] * 8 + [1] * 4, labels)[0], "hand")
    assert fewer.acc == pytest.approx(8 / 12) and len(fewer.unmatched_classes) == 1
    more = evaluate_clustering(stored_clustering(tmp_path / "3", [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5], labels)[0], "hand")
    assert more.acc == pytest.approx(6 / 12) and more.purity == 1.0 and more.n_clusters == 6


def test_external_metrics_use_labelled_items_and_silhouette_all(tmp_path):
    labels = ["a", "a", "", "b", "b", ""]
    ids = [0, 0, 0, 1, 1, 1]
    ws, _, X = stored_clustering(tmp_path, ids, labels)
    report = evaluate_clustering(ws, "hand")
    assert report.n_items == 6 and report.n_labelled == 4 and report.acc == 1.0
    assert report.silhouette == pytest.approx(skm.silhouette_score(X, ids))


def test_no_labels_is_an_input_error_when_named_and_a_warning_among_others(tmp_path):
    ws, keys, X = stored_clustering(tmp_path, [0, 0, 1, 1], ["", "", "", ""])
    with pytest.raises(InputError, match="no item of clustering 'hand' has a label"):
        evaluate(ws, ["hand"])
    with pytest.raises(InputError, match=r"no item of the clusterings \(hand\) has a label"):
        evaluate(ws)
    labelled_keys = [hashlib.sha256(f"other{i}".encode()).hexdigest() for i in range(4)]
    ws.upsert_items([ItemRecord(sha256=k, path="/y", label=lab) for k, lab in zip(labelled_keys, "aabb")])
    ws.save_clustering("other", keys=labelled_keys, ids=np.array([0, 0, 1, 1]), params={"method": "hand"})
    reporter = SilentReporter()
    result = evaluate(ws, reporter=reporter)
    assert result.reports["other"].acc == 1.0 and result.reports["hand"].acc is None
    assert any("'hand' has no labelled item" in w for w in reporter.warnings)
    assert any("no longer stored; silhouette left out" in w for w in reporter.warnings)  # 'other' has no set


def test_unknown_clustering_and_empty_workspace(tmp_path):
    ws, *_ = stored_clustering(tmp_path, [0, 1], ["a", "b"])
    with pytest.raises(InputError, match="no clustering named 'nope' \\(known: hand\\)"):
        evaluate(ws, ["nope"])
    with pytest.raises(InputError, match="no workspace at"):
        evaluate(Workspace(tmp_path / "missing.h5"))
    empty = Workspace(tmp_path / "empty.h5")
    blob_workspace(tmp_path / "empty.h5", n_per_class=2)
    with pytest.raises(InputError, match="holds no clustering yet"):
        evaluate(empty)


def test_fused_clustering_reports_classification_accuracy(tmp_path):
    world = fused_workspace(tmp_path / "ws.h5", noise=0.5)
    run_clustering(world["ws"], method="fused")
    report = evaluate(world["ws"]).reports["fused-a-photo-of"]
    stored = world["ws"].read_clustering("fused-a-photo-of")
    truth = [world["labels"][c] for c in world["test_y"]]
    expected = np.mean(np.array(stored["predicted"]) == np.array(truth))
    assert report.accuracy == pytest.approx(expected) and report.n_predicted == len(truth)
    assert report.predicted_on == f"fused-all:{TEMPLATE}"


def test_zero_shot_accuracy_from_the_stored_similarities(tmp_path):
    world = fused_workspace(tmp_path / "ws.h5", noise=0.8)
    ws = world["ws"]
    info = ws.resolve_set("zeroshot")
    keys, sims = ws.read_set(info.id)
    items = ws.items()
    label_of = dict(zip(items.sha256, items.label))
    rows = [i for i, k in enumerate(keys) if label_of[k]]
    expected = np.mean([world["classes"][int(np.argmax(sims[i]))] == label_of[keys[i]] for i in rows])
    report = evaluate_zero_shot(ws, info)
    assert report.accuracy == pytest.approx(expected) and report.n_labelled == len(rows)
    result = evaluate(ws, zero_shot=True)
    assert list(result.reports) == [f"zeroshot:{TEMPLATE}"]  # only what was asked for


def test_zero_shot_with_grouped_prompts_compares_groups(tmp_path):
    groups = {"0": "even", "1": "odd", "2": "even", "3": "odd", "4": "even"}
    world = fused_workspace(tmp_path / "ws.h5", class_map=groups)
    info = world["ws"].resolve_set("zeroshot")
    keys, sims = world["ws"].read_set(info.id)
    items = world["ws"].items()
    label_of = dict(zip(items.sha256, items.label))
    expected = np.mean([world["classes"][int(np.argmax(s))] == groups[label_of[k]] for k, s in zip(keys, sims)
                        if label_of[k]])
    report = evaluate_zero_shot(world["ws"], info)
    assert report.n_classes == 2 and report.accuracy == pytest.approx(expected)


class TestProbe:
    def test_separable_blobs_with_a_hold_out(self, tmp_path):
        ws, *_ = blob_workspace(tmp_path / "ws.h5", n_per_class=20)
        report = probe_set(ws, "image", "svm")
        assert report.accuracy == 1.0 and report.n_test == 16 and report.n_train == 64
        assert report.standardize is True and report.max_entropy == pytest.approx(np.log(8))

    def test_named_splits(self, tmp_path):
        ws, keys, *_ = blob_workspace(tmp_path / "ws.h5", n_per_class=10, split="train")
        ws.upsert_items([ItemRecord(sha256=k, path="", split="test") for k in keys[::5]])
        report = probe_set(ws, "image", "logreg", split=("train", "test"))
        assert (report.n_train, report.n_test) == (32, 8) and report.split == "splits train/test"
        with pytest.raises(InputError, match="no labelled item of 'image' is in split 'val'"):
            probe_set(ws, "image", split=("train", "val"))

    def test_logits_are_not_standardised_and_the_temperature_counts(self, tmp_path):
        world = fused_workspace(tmp_path / "ws.h5", noise=0.8)
        cold = probe_set(world["ws"], "zeroshot", "logreg", temperature=0.05)
        warm = probe_set(world["ws"], "zeroshot", "logreg")
        assert cold.standardize is False and cold.set_kind == "zeroshot"
        assert cold.mean_entropy < warm.mean_entropy <= warm.max_entropy

    def test_temperature_with_standardising_is_warned_about(self, tmp_path):
        ws, *_ = blob_workspace(tmp_path / "ws.h5")
        reporter = SilentReporter()
        probe_set(ws, "image", temperature=0.5, reporter=reporter)
        assert any("temperature changes only the entropy" in w for w in reporter.warnings)

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"kind": "forest"}, "probe forest: expected svm or logreg"),
            ({"temperature": 0.0}, "temperature 0.0"),
            ({"scale": "minmax"}, "scale minmax"),
            ({"on": "fused-all"}, "not one vector per item"),
            ({"on": "nope"}, "no stored set matches 'nope'"),
        ],
    )
    def test_bad_input(self, tmp_path, kwargs, message):
        world = fused_workspace(tmp_path / "ws.h5")
        with pytest.raises(InputError, match=message):
            probe_set(world["ws"], **{"on": "image", **kwargs})

    def test_unlabelled_set(self, tmp_path):
        ws, *_ = blob_workspace(tmp_path / "ws.h5", labelled=False)
        with pytest.raises(InputError, match="no item of 'image' has a label"):
            probe_set(ws, "image")


def test_kmeans_on_digit_pixels_through_the_workspace_reaches_the_known_scores(tmp_path):
    """k-means (k=10, seed 0) on sklearn's raw digit pixels is a standard baseline: ACC ~0.79, NMI ~0.74."""
    X, y = load_digits(return_X_y=True)
    ws = Workspace(tmp_path / "digits.h5")
    keys = [hashlib.sha256(f"digit-{i}".encode()).hexdigest() for i in range(len(y))]
    ws.write_batch(items=[ItemRecord(sha256=k, path=f"digits/{i}", label=str(t)) for i, (k, t) in enumerate(zip(keys, y))],
                   rows=[(SetSpec(id="pixels", name="pixels", kind="pixels"), keys, X)])
    summary = run_clustering(ws, on="pixels", k=10, seed=0)
    assert summary.name == "kmeans-pixels"
    report = evaluate(ws).reports["kmeans-pixels"]
    assert 0.75 < report.acc < 0.85 and 0.70 < report.nmi < 0.80  # far above would mean a label leak
    assert report.n_items == 1797 and report.n_classes == 10 and report.silhouette > 0.1


def test_reports_are_dataclasses_whose_dicts_keep_the_json_shape(tmp_path):
    """`evaluate --json` prints ``EvaluationResult.to_dict()``: one object per report, keys in this order."""
    from clipclust.commands.evaluate import ClassificationReport, ClusteringReport, ProbeReport

    world = fused_workspace(tmp_path / "ws.h5")
    run_clustering(world["ws"], k=5, on="image")
    result = evaluate(world["ws"], ["kmeans-image"], zero_shot=True, probe="svm")
    clustering, zero_shot, probe = result.reports.values()
    assert isinstance(clustering, ClusteringReport) and isinstance(zero_shot, ClassificationReport)
    assert isinstance(probe, ProbeReport) and probe.kind == "probe"
    scores = ["kind", "name", "method", "on", "n_labelled", "n_items", "n_clusters", "n_noise", "cluster_sizes",
              "silhouette", "n_classes", "acc", "nmi", "ami", "ari", "rand_index", "purity", "mapping",
              "unmatched_classes", "silhouette_metric", "accuracy", "n_predicted", "n_predicted_labelled",
              "predicted_on"]
    as_json = result.to_dict()
    assert list(as_json) == ["kmeans-image", f"zeroshot:{TEMPLATE}", "probe:svm:image"]
    assert list(as_json["kmeans-image"]) == scores + ["cluster_names", "level", "levels", "parent", "mapped"]
    assert list(as_json[f"zeroshot:{TEMPLATE}"]) == scores + ["n_outside_classes"]
    assert list(as_json["probe:svm:image"]) == ["kind", "name", "probe", "on", "set_kind", "split", "n_train", "n_test",
                                                "n_classes", "accuracy", "temperature", "standardize", "mean_entropy",
                                                "max_entropy"]
    assert as_json["kmeans-image"]["acc"] == clustering.acc == 1.0


def test_errors_name_settings_and_steps_in_python_words(tmp_path):
    ws, *_ = blob_workspace(tmp_path / "ws.h5", n_per_class=2)
    with pytest.raises(InputError, match=r"holds no clustering yet; run clipclust.cluster\(\) first \(or ask for "
                                         r"zero_shot or probe\)"):
        evaluate(ws)
    with pytest.raises(InputError, match=r"no zero-shot set is stored; run clipclust.embed\(\) first"):
        evaluate(ws, zero_shot=True)
    with pytest.raises(InputError, match="metric manhattan: expected euclidean or cosine"):
        evaluate(ws, metric="manhattan")  # type: ignore[arg-type]
