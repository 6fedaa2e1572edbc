"""Tests of clipclust.core.clustering: each method recovers blobs, is seeded, and rejects bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs, make_moons

from clipclust.core.clustering import METHODS, centroids_of, choose_k, cluster
from clipclust.core.metrics import cluster_accuracy

K_METHODS = ("kmeans", "spectral", "agglomerative")

# Separated blobs give a disconnected k-NN graph; sklearn warns, and the clustering is still right.
pytestmark = pytest.mark.filterwarnings("ignore:Graph is not fully connected")


@pytest.mark.parametrize("method", K_METHODS)
def test_recovers_separated_blobs(blobs, method):
    X, y = blobs
    result = cluster(X, method, k=4, seed=0)
    assert result.ids.shape == (240,)
    assert set(result.ids.tolist()) == {0, 1, 2, 3}
    assert cluster_accuracy(y, result.ids).accuracy == 1.0
    assert result.params["method"] == method and result.params["k"] == 4 and result.params["seed"] == 0


def test_hdbscan_finds_the_groups_and_keeps_noise_as_minus_one(blobs):
    X, y = blobs
    outliers = np.full((3, X.shape[1]), 60.0) + np.arange(3)[:, None] * 25.0  # far from everything, apart
    result = cluster(np.vstack([X, outliers]), "hdbscan", k=None, seed=0, min_cluster_size=10)
    assert result.params["k"] is None
    assert result.ids[-3:].tolist() == [-1, -1, -1]
    assert result.n_clusters == 4
    core = result.ids[:240]
    assert cluster_accuracy(y[core != -1], core[core != -1]).accuracy == 1.0
    assert (core == -1).mean() < 0.1
    np.testing.assert_allclose(result.centroids, centroids_of(X[core != -1], core[core != -1]))


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_under_a_seed(clip_like_blobs, method):
    X, _ = clip_like_blobs
    X = X + np.random.default_rng(0).normal(scale=0.08, size=X.shape)  # overlap, so seeds could matter
    first = cluster(X, method, k=5, seed=11)
    second = cluster(X, method, k=5, seed=11)
    np.testing.assert_array_equal(first.ids, second.ids)
    np.testing.assert_array_equal(first.centroids, second.centroids)


def test_kmeans_seed_changes_the_result_on_ambiguous_data():
    X = np.random.default_rng(0).normal(size=(200, 8))  # no structure: the optimum depends on the start
    runs = {tuple(cluster(X, "kmeans", 6, seed=s, n_init=1).ids.tolist()) for s in range(4)}
    assert len(runs) > 1


def test_centroids_are_member_means(blobs):
    X, _ = blobs
    result = cluster(X, "spectral", k=4, seed=0)
    for cluster_id in range(4):
        np.testing.assert_allclose(result.centroids[cluster_id], X[result.ids == cluster_id].mean(axis=0))


def test_centroids_of_handles_empty_ids_and_noise():
    X = np.array([[0.0, 0.0], [2.0, 2.0], [10.0, 10.0], [4.0, 0.0]])
    centroids = centroids_of(X, np.array([0, 0, -1, 2]))
    np.testing.assert_allclose(centroids[0], [1.0, 1.0])
    assert np.isnan(centroids[1]).all()
    np.testing.assert_allclose(centroids[2], [4.0, 0.0])


def test_spectral_separates_moons_where_kmeans_cannot():
    X, y = make_moons(300, noise=0.05, random_state=0)
    assert cluster_accuracy(y, cluster(X, "spectral", 2, seed=0).ids).accuracy > 0.98
    assert cluster_accuracy(y, cluster(X, "kmeans", 2, seed=0).ids).accuracy < 0.9


def test_spectral_clamps_neighbours_for_tiny_inputs():
    X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    result = cluster(X, "spectral", k=2, seed=0)
    assert result.params["n_neighbors"] == 3
    assert cluster_accuracy([0, 0, 1, 1], result.ids).accuracy == 1.0


def test_agglomerative_linkage_parameter(blobs):
    X, y = blobs
    result = cluster(X, "agglomerative", 4, linkage="average", metric="cosine")
    assert result.params["linkage"] == "average"
    assert cluster_accuracy(y, result.ids).accuracy == 1.0
    with pytest.raises(ValueError, match="Ward linkage works only"):
        cluster(X, "agglomerative", 4, metric="cosine")


@pytest.mark.parametrize(
    ("X", "k", "message"),
    [
        (np.zeros((0, 3)), 2, "X is empty"),
        (np.zeros(5), 2, "2-D array"),
        (np.ones((5, 2)), 6, "larger than the number of items"),
        (np.ones((5, 2)), 1, "at least 2"),
        (np.ones((5, 2)), None, "Pass the number of clusters"),
        (np.array([[np.nan, 1.0], [0.0, 1.0]]), 2, "NaN"),
    ],
)
def test_bad_input_raises_a_clear_value_error(X, k, message):
    with pytest.raises(ValueError, match=message):
        cluster(X, "kmeans", k)


def test_unknown_method_and_parameter_raise(blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match="Unknown clustering method 'dbscan'"):
        cluster(X, "dbscan", 3)
    with pytest.raises(ValueError, match="Unknown parameter"):
        cluster(X, "kmeans", 3, n_neighbours=5)
    with pytest.raises(ValueError, match="min_cluster_size"):
        cluster(X, "hdbscan", min_cluster_size=1000)


@pytest.mark.parametrize("method", K_METHODS)
def test_choose_k_finds_the_number_of_blobs(method):
    X, _ = make_blobs(300, n_features=10, centers=5, cluster_std=0.8, random_state=2)
    best_k, table = choose_k(X, method, range(2, 9), seed=0)
    assert best_k == 5
    assert [row["k"] for row in table] == list(range(2, 9))
    best_row = max(table, key=lambda row: row["silhouette"])
    assert best_row["k"] == 5


def test_choose_k_rejects_impossible_ranges(blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match="larger than the number of items"):
        choose_k(X[:5], "kmeans", range(2, 8))
    with pytest.raises(ValueError, match="k_range is empty"):
        choose_k(X, "kmeans", [])
    with pytest.raises(ValueError, match="HDBSCAN chooses"):
        choose_k(X, "hdbscan", range(2, 4))
