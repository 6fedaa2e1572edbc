"""Tests of clipclust.core.metrics: hand-made cases, brute force and scikit-learn as references."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_digits, make_blobs

from clipclust.core.clustering import cluster
from clipclust.core.metrics import (
    classification_accuracy,
    cluster_accuracy,
    cluster_sizes,
    clustering_report,
    contingency_table,
    linear_probe,
    logit_entropy,
    purity,
    silhouette,
    stratified_holdout,
)


pytestmark = pytest.mark.usefixtures("single_thread")  # OpenMP spinning on a busy 2-core box


def brute_force_acc(y_true, y_pred) -> float:
    """Best accuracy over every one-to-one assignment of clusters to classes (small inputs only)."""
    classes = sorted(set(y_true))
    clusters = sorted(set(y_pred))
    best = 0
    if len(clusters) <= len(classes):
        assignments = (dict(zip(clusters, perm)) for perm in itertools.permutations(classes, len(clusters)))
    else:
        assignments = (dict(zip(perm, classes)) for perm in itertools.permutations(clusters, len(classes)))
    for mapping in assignments:
        best = max(best, sum(mapping.get(p) == t for t, p in zip(y_true, y_pred)))
    return best / len(y_true)


class TestClusterAccuracy:
    def test_perfect_clustering_under_any_relabelling(self):
        y_true = [0, 0, 1, 1, 2, 2]
        result = cluster_accuracy(y_true, [2, 2, 0, 0, 1, 1])
        assert result.accuracy == 1.0
        assert result.mapping == {2: 0, 0: 1, 1: 2}

    def test_invariant_to_renaming_cluster_ids(self):
        rng = np.random.default_rng(0)
        y_true = rng.integers(0, 5, 200)
        y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 5, 200))
        renamed = np.array([7, 3, 9, 0, 4])[y_pred]
        assert cluster_accuracy(y_true, y_pred).accuracy == cluster_accuracy(y_true, renamed).accuracy

    def test_hand_case(self):
        assert cluster_accuracy([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]).accuracy == pytest.approx(5 / 6)

    def test_more_clusters_than_classes_leaves_clusters_unmatched(self):
        # Clusters 0 and 1 both hold class 0; only one can be matched, so one item counts as wrong.
        result = cluster_accuracy([0, 0, 1, 1], [0, 1, 2, 2])
        assert result.accuracy == pytest.approx(3 / 4)
        assert len(result.mapping) == 2
        assert result.mapping[2] == 1

    def test_fewer_clusters_than_classes_leaves_classes_unmatched(self):
        result = cluster_accuracy([0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 1, 1])
        assert result.accuracy == pytest.approx(4 / 6)
        assert result.mapping[1] == 2
        assert result.mapping[0] in (0, 1)

    def test_matches_brute_force_on_random_rectangular_cases(self):
        rng = np.random.default_rng(1)
        for _ in range(40):
            n_classes, n_clusters = rng.integers(1, 5, size=2)
            y_true = rng.integers(0, n_classes, 25).tolist()
            y_pred = rng.integers(0, n_clusters, 25).tolist()
            assert cluster_accuracy(y_true, y_pred).accuracy == pytest.approx(brute_force_acc(y_true, y_pred))

    def test_empty_cluster_id_is_harmless(self):
        # k=4 was asked for but cluster 2 got no items: ids 0, 1, 3.
        result = cluster_accuracy([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 3, 3])
        assert result.accuracy == 1.0
        assert result.mapping == {0: 0, 1: 1, 3: 2}

    def test_string_labels_on_both_sides(self):
        y_true = ["cat", "cat", "dog", "dog", "eel"]
        y_pred = ["furry", "furry", "barks", "furry", "wet"]
        result = cluster_accuracy(y_true, y_pred)
        assert result.accuracy == pytest.approx(4 / 5)
        assert result.mapping == {"furry": "cat", "barks": "dog", "wet": "eel"}
        encoded = cluster_accuracy([0, 0, 1, 1, 2], [0, 0, 1, 0, 2]).accuracy
        assert result.accuracy == encoded

    def test_noise_points_are_never_credited(self):
        assert cluster_accuracy([0, 0, 1, 1], [0, -1, 1, 1]).accuracy == pytest.approx(3 / 4)
        assert cluster_accuracy([0, 0, 1, 1], [-1, -1, -1, -1]).accuracy == 0.0

    def test_length_mismatch_and_empty_input_raise(self):
        with pytest.raises(ValueError, match="one of each per item"):
            cluster_accuracy([0, 1], [0])
        with pytest.raises(ValueError, match="empty"):
            cluster_accuracy([], [])


def test_contingency_table_rows_are_clusters():
    table, clusters, classes = contingency_table(["a", "a", "b"], [5, 7, 7])
    assert clusters.tolist() == [5, 7]
    assert classes.tolist() == ["a", "b"]
    assert table.tolist() == [[1, 0], [1, 1]]


def test_purity_counts_majorities_and_rewards_extra_clusters():
    assert purity([0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 1, 1]) == pytest.approx(4 / 6)
    # Over-clustering: purity is 1 while ACC is not.
    assert purity([0, 0, 1, 1], [0, 1, 2, 2]) == 1.0
    assert purity([0, 0, 1, 1], [0, -1, 1, 1]) == pytest.approx(3 / 4)


def test_cluster_sizes():
    assert cluster_sizes([2, 0, 2, -1, 2]) == {-1: 1, 0: 1, 2: 3}


class TestSilhouette:
    def test_equals_sklearn_and_none_when_undefined(self):
        X, y = make_blobs(300, centers=3, random_state=0)
        assert silhouette(X, y, metric="euclidean") == pytest.approx(skm.silhouette_score(X, y))
        assert silhouette(X, y, metric="cosine") == pytest.approx(skm.silhouette_score(X, y, metric="cosine"))
        assert silhouette(X, np.zeros(300, dtype=int)) is None
        assert silhouette(X[:3], [0, 1, 2]) is None

    def test_noise_points_are_left_out(self):
        X, y = make_blobs(200, centers=3, random_state=0)
        with_noise = y.copy()
        with_noise[:10] = -1
        expected = skm.silhouette_score(X[10:], y[10:])
        assert silhouette(X, with_noise, metric="euclidean") == pytest.approx(expected)

    def test_sampling_is_seeded_and_close_to_the_exact_value(self):
        X, y = make_blobs(1000, centers=4, random_state=0)
        exact = silhouette(X, y, metric="euclidean")
        sampled = silhouette(X, y, metric="euclidean", max_points=300, seed=3)
        assert sampled == silhouette(X, y, metric="euclidean", max_points=300, seed=3)
        assert sampled != exact
        assert abs(sampled - exact) < 0.05

    def test_bad_metric_raises(self):
        with pytest.raises(ValueError, match="cosine' or 'euclidean"):
            silhouette(np.zeros((4, 2)), [0, 0, 1, 1], metric="manhattan")


class TestClusteringReport:
    def test_agrees_with_sklearn_and_is_json_serialisable(self):
        rng = np.random.default_rng(0)
        X, y_true = make_blobs(400, centers=4, random_state=1)
        y_pred = np.where(rng.random(400) < 0.8, y_true, rng.integers(0, 5, 400))
        report = clustering_report(y_true, y_pred, X, metric="euclidean")
        assert report["nmi"] == pytest.approx(skm.normalized_mutual_info_score(y_true, y_pred))
        assert report["ami"] == pytest.approx(skm.adjusted_mutual_info_score(y_true, y_pred))
        assert report["ari"] == pytest.approx(skm.adjusted_rand_score(y_true, y_pred))
        assert report["rand_index"] == pytest.approx(skm.rand_score(y_true, y_pred))
        assert report["silhouette"] == pytest.approx(skm.silhouette_score(X, y_pred))
        assert report["acc"] == pytest.approx(brute_force_acc(y_true.tolist(), y_pred.tolist()))
        assert report["n_items"] == 400 and report["n_classes"] == 4 and report["n_clusters"] == 5
        assert sum(report["cluster_sizes"].values()) == 400
        assert json.loads(json.dumps(report)) == report

    def test_string_labels_and_unmatched_classes(self):
        y_true = ["cat", "cat", "dog", "dog", "eel", "eel"]
        y_pred = [1, 1, 1, 1, 0, 0]
        report = clustering_report(y_true, y_pred)
        assert report["acc"] == pytest.approx(4 / 6)
        assert report["mapping"]["0"] == "eel"
        assert len(report["unmatched_classes"]) == 1
        assert report["unmatched_classes"][0] in ("cat", "dog")
        assert report["silhouette"] is None
        json.dumps(report)

    def test_noise_is_reported(self):
        report = clustering_report([0, 0, 1, 1, 1], [0, 0, 1, 1, -1])
        assert report["n_noise"] == 1 and report["n_clusters"] == 2
        assert report["cluster_sizes"] == {"-1": 1, "0": 2, "1": 2}
        assert report["acc"] == pytest.approx(4 / 5)

    def test_without_ground_truth_only_internal_metrics(self):
        X, y = make_blobs(100, centers=2, random_state=0)
        report = clustering_report(None, y, X)
        assert report["acc"] is None and report["nmi"] is None
        assert report["silhouette"] is not None and report["silhouette"] > 0.5

    def test_kmeans_on_digits_reaches_the_known_scores(self):
        """k-means (k=10, seed 0) on raw digit pixels is a standard baseline: ACC ~0.79, NMI ~0.74."""
        X, y = load_digits(return_X_y=True)
        report = clustering_report(y, cluster(X, "kmeans", 10, seed=0).ids)
        assert report["acc"] > 0.75
        assert report["nmi"] > 0.70
        assert report["acc"] < 0.85 and report["nmi"] < 0.80  # far above would mean a leak of labels


def test_classification_accuracy():
    assert classification_accuracy(["a", "b", "b", "a"], ["a", "b", "a", "a"]) == 0.75
    assert classification_accuracy([1, 2], [2, 1]) == 0.0  # no matching, unlike ACC
    with pytest.raises(ValueError):
        classification_accuracy([1, 2, 3], [1, 2])


class TestLogitEntropy:
    def test_hand_computed_values(self):
        logits = np.array([[0.0, math.log(3.0)], [5.0, 5.0]])
        expected_first = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
        np.testing.assert_allclose(logit_entropy(logits), [expected_first, math.log(2)])

    def test_lower_temperature_sharpens(self):
        logits = np.random.default_rng(0).normal(0.25, 0.02, size=(50, 32))
        flat = logit_entropy(logits).mean()
        sharp = logit_entropy(logits, temperature=0.02).mean()
        assert math.log(32) - flat < 0.01  # cosine-like logits are nearly uniform, as in the thesis
        assert sharp < flat - 0.1


class TestLinearProbe:
    def test_separable_blobs_are_probed_perfectly(self):
        X, y = make_blobs(300, centers=3, n_features=8, random_state=0, cluster_std=0.5)
        for kind in ("svm", "logreg"):
            result = linear_probe(X[:200], y[:200], X[200:], y[200:], kind=kind)
            assert result.accuracy == 1.0
            assert result.kind == kind
            assert result.max_entropy == pytest.approx(math.log(8))

    def test_digits_accuracy(self):
        X, y = load_digits(return_X_y=True)
        train, test = stratified_holdout(y, 0.3, seed=0)
        result = linear_probe(X[train], y[train], X[test], y[test], kind="logreg")
        assert 0.93 < result.accuracy <= 1.0

    def test_constant_logits_have_maximal_entropy(self):
        X = np.zeros((20, 5))
        X[:10, 0] = 1e-9  # two classes differing by a hair, so the probe can fit
        y = np.array([0] * 10 + [1] * 10)
        result = linear_probe(X, y, X, y, standardize=False)
        assert result.mean_entropy == pytest.approx(math.log(5))

    def test_temperature_matters_only_without_the_scaler(self):
        # Cosine-like logits: a shared image-level offset swamps tiny class differences. On the raw
        # scale a C=1 SVM is so regularised that it cannot cancel the offset; dividing by a small
        # temperature frees it (the thesis's temperature effect).
        rng = np.random.default_rng(0)
        y = np.repeat([0, 1, 2], 100)
        shared = 0.02 * rng.normal(size=(300, 1))
        logits = 0.25 + shared + 0.0005 * rng.normal(size=(300, 6))
        logits[np.arange(300), y] += 0.002
        train, test = stratified_holdout(y, 0.5, seed=0)
        args = (logits[train], y[train], logits[test], y[test])
        raw = linear_probe(*args, standardize=False)
        sharpened = linear_probe(*args, temperature=0.01, standardize=False)
        assert raw.accuracy < 0.5
        assert sharpened.accuracy > 0.95
        assert sharpened.mean_entropy < raw.mean_entropy
        with pytest.warns(UserWarning, match="standardize=False"):
            scaled_sharp = linear_probe(*args, temperature=0.01)
        assert scaled_sharp.accuracy == linear_probe(*args).accuracy

    def test_bad_inputs_raise(self):
        X = np.zeros((4, 3))
        with pytest.raises(ValueError, match="svm' or 'logreg"):
            linear_probe(X, [0, 1, 0, 1], X, [0, 1, 0, 1], kind="tree")
        with pytest.raises(ValueError, match="temperature"):
            linear_probe(X, [0, 1, 0, 1], X, [0, 1, 0, 1], temperature=0)
        with pytest.raises(ValueError, match="single class"):
            linear_probe(X, [0, 0, 0, 0], X, [0, 0, 0, 0])
        with pytest.raises(ValueError, match="same D"):
            linear_probe(X, [0, 1, 0, 1], np.zeros((4, 2)), [0, 1, 0, 1])


class TestStratifiedHoldout:
    def test_keeps_proportions_and_partitions(self):
        labels = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
        train, test = stratified_holdout(labels, 0.2, seed=0)
        assert sorted(np.concatenate([train, test]).tolist()) == list(range(100))
        assert {label: int((labels[test] == label).sum()) for label in "abc"} == {"a": 10, "b": 6, "c": 4}

    def test_seeded_and_every_class_trains(self):
        labels = np.array([0, 0, 0, 1, 2, 2])
        first = stratified_holdout(labels, 0.5, seed=1)
        assert all(np.array_equal(a, b) for a, b in zip(first, stratified_holdout(labels, 0.5, seed=1)))
        assert set(labels[first[0]]) == {0, 1, 2}  # the singleton class stays in training
        differs = [not np.array_equal(first[1], stratified_holdout(labels, 0.5, seed=s)[1]) for s in range(2, 8)]
        assert any(differs)

    def test_bad_fraction_raises(self):
        with pytest.raises(ValueError, match="test_fraction"):
            stratified_holdout([0, 1, 0, 1], 1.0, seed=0)
