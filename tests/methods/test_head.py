"""Tests of the ESMC clustering head: label-free pseudo-labels, determinism, recovery of groups."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from clipclust.core.clustering import cluster
from clipclust.methods.head.training import esmc_head, select_pseudo_labels
from clipclust.core.metrics import cluster_accuracy
from clipclust.errors import InputError


def test_no_function_of_the_module_takes_labels():
    """The released demo leaked ground truth into pseudo-labelling; here labels cannot even be passed."""
    for function in (esmc_head, select_pseudo_labels):
        names = set(inspect.signature(function).parameters)
        assert not names & {"y", "y_true", "labels", "true_labels", "targets"}, function.__name__


def test_pseudo_label_selection_equals_the_nearest_fraction_by_hand():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(54, 3))
    ids = np.array([0] * 23 + [1] * 31)
    rng.shuffle(ids)
    centroids = np.stack([X[ids == c].mean(axis=0) for c in (0, 1)])
    expected = []
    for c, n_keep in ((0, 6), (1, 9)):  # floor(0.3 * 23), floor(0.3 * 31)
        members = np.flatnonzero(ids == c)
        distances = [float(np.sum((X[i] - centroids[c]) ** 2)) for i in members]
        expected += [members[j] for j in np.argsort(distances)[:n_keep]]
    selected = select_pseudo_labels(X, ids, centroids, ratio=0.3)
    assert selected.tolist() == sorted(expected)


def test_every_cluster_keeps_at_least_one_point():
    X = np.array([[0.0], [0.1], [0.2], [5.0]])
    selected = select_pseudo_labels(X, np.array([0, 0, 0, 1]), np.array([[0.1], [5.0]]), ratio=0.1)
    assert selected.tolist() == [1, 3]


def test_head_uses_its_own_kmeans_pseudo_labels(clip_like_blobs):
    X, _ = clip_like_blobs
    result = esmc_head(X, k=5, ratio=0.3, seed=0, epochs=5)
    kmeans = cluster(X, "kmeans", 5, seed=0)
    np.testing.assert_array_equal(result.kmeans_ids, kmeans.ids)
    np.testing.assert_array_equal(result.pseudo_indices, select_pseudo_labels(X, kmeans.ids, kmeans.centroids, 0.3))
    np.testing.assert_array_equal(result.pseudo_labels, kmeans.ids[result.pseudo_indices])
    assert len(result.pseudo_indices) == sum(int(0.3 * n) for n in np.bincount(kmeans.ids))


def test_head_recovers_blobs_and_its_loss_falls(clip_like_blobs):
    X, y = clip_like_blobs
    result = esmc_head(X, k=5, seed=0)
    assert result.ids.shape == (600,)
    assert cluster_accuracy(y, result.ids).accuracy > 0.99
    assert len(result.loss_curve) == 100
    assert result.loss_curve[-1] < 0.05 < np.log(5) * 0.9 < result.loss_curve[0]
    assert result.params["lr"] == 1e-3 and result.params["device"] == "cpu"


def test_head_is_deterministic_and_leaves_the_global_rng_alone(clip_like_blobs):
    X, _ = clip_like_blobs
    noisy = X + np.random.default_rng(1).normal(scale=0.1, size=X.shape)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = esmc_head(noisy, k=5, seed=4, epochs=10)
    assert torch.equal(torch.rand(1), expected_next)
    second = esmc_head(noisy, k=5, seed=4, epochs=10)
    np.testing.assert_array_equal(first.ids, second.ids)
    assert first.loss_curve == second.loss_curve
    third = esmc_head(noisy, k=5, seed=5, epochs=10)
    assert third.loss_curve != first.loss_curve


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio": 0.0}, "ratio must be in"),
        ({"ratio": 1.5}, "ratio must be in"),
        ({"epochs": 0}, "at least 1"),
        ({"lr": -1.0}, "lr must be"),
        ({"k": 1}, "at least 2"),
        ({"k": 1000}, "larger than the number of items"),
    ],
)
def test_bad_arguments_raise(clip_like_blobs, kwargs, message):
    X, _ = clip_like_blobs
    arguments = {"k": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        esmc_head(X[:100], epochs=arguments.pop("epochs", 1), **arguments)


def test_an_unknown_device_is_an_input_error_naming_the_setting(clip_like_blobs):
    X, _ = clip_like_blobs
    with pytest.raises(InputError, match="expected auto, cpu or cuda") as info:
        esmc_head(X[:50], k=2, epochs=1, device="tpu")
    assert info.value.option == "device"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is missing")
def test_cuda_without_a_gpu_is_a_clear_error(clip_like_blobs):
    X, _ = clip_like_blobs
    with pytest.raises(InputError, match="no CUDA device is available"):
        esmc_head(X[:50], k=2, epochs=1, device="cuda")
    assert esmc_head(X[:50], k=2, epochs=1, device="auto").params["device"] == "cpu"
