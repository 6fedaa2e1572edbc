"""Tests of the fused-embedding workflow (Oliveira et al.) on synthetic embeddings with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from clipclust.methods.fused.workflow import (
    classify_fused,
    classify_image_only,
    classify_with_centroids,
    fuse,
    majority_labels,
)
from clipclust.core.metrics import classification_accuracy

pytestmark = pytest.mark.filterwarnings("ignore:Graph is not fully connected")

DIM = 32
N_CLASSES = 6


def unit(X: np.ndarray) -> np.ndarray:
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def world():
    """Image embeddings of 6 classes (separated, 30 train + 20 test each) and one text vector per name."""
    rng = np.random.default_rng(0)
    class_centres = unit(rng.normal(size=(N_CLASSES, DIM)))
    def images(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(N_CLASSES), per_class)
        return unit(class_centres[labels] + 0.15 * rng.normal(size=(labels.shape[0], DIM))), labels
    train_images, train_labels = images(30)
    test_images, test_labels = images(20)
    texts = {name: unit(rng.normal(size=DIM)) for name in [*map(str, range(N_CLASSES)), "even", "odd"]}
    return train_images, train_labels, test_images, test_labels, texts


def test_fuse_is_the_mean_of_normalised_parts_and_broadcasts():
    image = np.array([[3.0, 0.0], [0.0, 2.0]])
    text = np.array([0.0, 5.0])
    np.testing.assert_allclose(fuse(image, text), [[0.5, 0.5], [0.0, 1.0]])
    np.testing.assert_allclose(fuse(image, text, normalize=False), [[1.5, 2.5], [0.0, 3.5]])
    texts = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert fuse(image[:, None, :], texts).shape == (2, 3, 2)
    with pytest.raises(ValueError, match="same dimension"):
        fuse(image, np.ones(3))
    with pytest.raises(ValueError, match="all zeros"):
        fuse(np.zeros((1, 2)), text)


def test_majority_labels_ties_and_empty_clusters():
    labels = majority_labels(np.array([0, 0, 0, 2, 2]), np.array(["b", "a", "b", "b", "a"]), 3)
    assert labels.tolist() == ["b", None, "a"]  # cluster 2 ties 1-1: the smaller label in sorted order


def test_the_filter_by_hand():
    centroids = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = ["a", "b", "a"]
    # Under prompt "a" the image lands at (9, 0): nearest centroid overall is b's, but only a's count (9).
    # Under prompt "b" it lands at (10, 2): distance 2 to b's centroid, so "b" wins.
    test = np.array([[[9.0, 0.0], [10.0, 2.0]]])
    predictions, distances = classify_with_centroids(test, ["a", "b"], centroids, labels)
    np.testing.assert_allclose(distances, [[9.0, 2.0]])
    assert predictions.tolist() == ["b"]
    predictions, distances = classify_with_centroids(test, ["a", "c"], centroids, labels)
    assert np.isinf(distances[0, 1]) and predictions.tolist() == ["a"]  # no cluster is labelled "c"


def test_task_specific_prompts_classify_perfectly(world):
    train_images, train_labels, test_images, test_labels, texts = world
    prompt_texts = np.stack([texts[str(c)] for c in range(N_CLASSES)])
    result = classify_fused(
        fuse(train_images, prompt_texts[train_labels]),
        train_labels,
        np.arange(N_CLASSES),
        fuse(test_images[:, None, :], prompt_texts),
    )
    assert result.params["n_clusters"] == 2 * N_CLASSES
    assert result.centroids.shape == (2 * N_CLASSES, DIM)
    assert result.distances.shape == (test_images.shape[0], N_CLASSES)
    assert set(result.cluster_labels.tolist()) == set(range(N_CLASSES))
    assert classification_accuracy(test_labels, result.predictions) == 1.0
    np.testing.assert_array_equal(result.predictions, np.argmin(result.distances, axis=1))


def test_distances_follow_the_definition(world):
    train_images, train_labels, test_images, _, texts = world
    prompt_texts = np.stack([texts[str(c)] for c in range(N_CLASSES)])
    test = fuse(test_images[:12, None, :], prompt_texts)
    result = classify_fused(fuse(train_images, prompt_texts[train_labels]), train_labels, np.arange(N_CLASSES), test)
    for i in range(12):
        for p in range(N_CLASSES):
            members = [c for c, label in enumerate(result.cluster_labels) if label == p]
            expected = min(np.linalg.norm(test[i, p] - result.centroids[c]) for c in members)
            assert result.distances[i, p] == pytest.approx(expected)


def test_cluster_labels_are_majority_votes_and_centroids_member_means(world):
    train_images, train_labels, _, _, texts = world
    prompt_texts = np.stack([texts[str(c)] for c in range(N_CLASSES)])
    train = fuse(train_images, prompt_texts[train_labels])
    result = classify_fused(train, train_labels, np.arange(N_CLASSES), np.zeros((0, N_CLASSES, DIM)), n_clusters=8)
    assert result.predictions.shape == (0,)
    for c in range(8):
        members = result.train_ids == c
        np.testing.assert_allclose(result.centroids[c], train[members].mean(axis=0))
        assert result.cluster_labels[c] == np.bincount(train_labels[members]).argmax()


@pytest.fixture(scope="module")
def grouped_world():
    """Vehicles/animals-like data: 6 classes in 2 groups; classes of a group overlap, groups do not."""
    rng = np.random.default_rng(5)
    group_centres = unit(rng.normal(size=(2, DIM)))
    group_of_class = np.arange(N_CLASSES) % 2
    class_centres = unit(group_centres[group_of_class] + 0.1 * rng.normal(size=(N_CLASSES, DIM)))
    def images(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(N_CLASSES), per_class)
        return unit(class_centres[labels] + 0.1 * rng.normal(size=(labels.shape[0], DIM))), labels
    train_images, train_labels = images(30)
    test_images, test_labels = images(20)
    texts = {"even": unit(rng.normal(size=DIM)), "odd": unit(rng.normal(size=DIM))}
    return train_images, train_labels, test_images, test_labels, texts


@pytest.mark.parametrize("prompt_layout", ["one per group", "one per class"])
def test_grouped_prompts(grouped_world, prompt_layout):
    """Even/odd: each class maps to a group and the prompt names the group.

    "one per class" is the layout that broke the released code: 6 prompt columns, only 2 distinct.
    """
    train_images, train_labels, test_images, test_labels, texts = grouped_world
    group_of = np.array(["even", "odd"])[np.arange(N_CLASSES) % 2]
    train = fuse(train_images, np.stack([texts[g] for g in group_of[train_labels]]))
    prompt_classes = np.array(["even", "odd"]) if prompt_layout == "one per group" else group_of
    test = fuse(test_images[:, None, :], np.stack([texts[g] for g in prompt_classes]))
    result = classify_fused(train, group_of[train_labels], prompt_classes, test)
    assert result.params["n_clusters"] == 4  # 2 x two distinct groups
    assert result.distances.shape == (test_images.shape[0], prompt_classes.shape[0])
    assert classification_accuracy(group_of[test_labels], result.predictions) == 1.0
    assert set(result.predictions.tolist()) == {"even", "odd"}


def test_grouped_prompts_need_enough_clusters_when_classes_separate(world):
    """With 6 well-separated classes, raising n_clusters (as the paper does for hard sets) to the number of
    classes classifies the groups perfectly."""
    train_images, train_labels, test_images, test_labels, texts = world
    group_of = np.array(["even", "odd"])[np.arange(N_CLASSES) % 2]
    train = fuse(train_images, np.stack([texts[g] for g in group_of[train_labels]]))
    test = fuse(test_images[:, None, :], np.stack([texts["even"], texts["odd"]]))
    few = classify_fused(train, group_of[train_labels], ["even", "odd"], test)
    enough = classify_fused(train, group_of[train_labels], ["even", "odd"], test, n_clusters=N_CLASSES)
    # 4 clusters for 6 classes: some cluster must hold several classes, which can only cost accuracy (how much
    # depends on the spectral solver's version; scikit-learn 1.9 happens to keep the groups apart).
    assert few.params["n_clusters"] == 4 and enough.params["n_clusters"] == N_CLASSES
    few_acc = classification_accuracy(group_of[test_labels], few.predictions)
    assert classification_accuracy(group_of[test_labels], enough.predictions) == 1.0 >= few_acc


def test_swapped_prompts_still_classify(world):
    """Class i is paired with the text of class i+1; prompt_classes records that pairing."""
    train_images, train_labels, test_images, test_labels, texts = world
    swapped = np.stack([texts[str((c + 1) % N_CLASSES)] for c in range(N_CLASSES)])
    result = classify_fused(
        fuse(train_images, swapped[train_labels]),
        train_labels,
        np.arange(N_CLASSES),
        fuse(test_images[:, None, :], swapped),
    )
    assert classification_accuracy(test_labels, result.predictions) == 1.0


def test_string_class_names(world):
    train_images, train_labels, test_images, test_labels, texts = world
    names = np.array(["zero", "one", "two", "three", "four", "five"])
    prompt_texts = np.stack([texts[str(c)] for c in range(N_CLASSES)])
    result = classify_fused(
        fuse(train_images, prompt_texts[train_labels]),
        names[train_labels],
        names,
        fuse(test_images[:, None, :], prompt_texts),
    )
    assert result.predictions.tolist() == names[test_labels].tolist()


def test_image_only_baseline_is_nearest_labelled_centroid(world):
    train_images, train_labels, test_images, test_labels, _ = world
    result = classify_image_only(train_images, train_labels, test_images)
    assert result.params["method"] == "image-only"
    assert result.distances.shape == (test_images.shape[0], N_CLASSES)
    # Separated classes: the baseline is right (the released code's loop over 512 scalars gave ~10%).
    assert classification_accuracy(test_labels, result.predictions) == 1.0
    all_distances = np.linalg.norm(test_images[:, None, :] - result.centroids[None], axis=2)
    nearest_cluster_labels = np.array(result.cluster_labels.tolist())[all_distances.argmin(axis=1)]
    np.testing.assert_array_equal(result.predictions, nearest_cluster_labels)


def test_prompts_help_when_images_overlap():
    """The paper's claim, on synthetic data: fused training clusters beat image-only ones.

    Under the filter the prompt's text cancels at test time (image and centroid carry the same text),
    so the gain comes from training: the text pulls each label's images apart, clusters come out
    label-pure, and their centroids are better class prototypes than image-only clusters give.
    """
    rng = np.random.default_rng(1)
    centres = unit(rng.normal(size=(4, DIM)))
    labels = np.repeat(np.arange(4), 60)
    images = unit(centres[labels] + 0.5 * rng.normal(size=(240, DIM)))
    texts = unit(rng.normal(size=(4, DIM)))
    train, test = np.arange(240) % 4 != 0, np.arange(240) % 4 == 0
    fused = classify_fused(
        fuse(images[train], texts[labels[train]]), labels[train], np.arange(4), fuse(images[test][:, None, :], texts)
    )
    image_only = classify_image_only(images[train], labels[train], images[test])
    fused_acc = classification_accuracy(labels[test], fused.predictions)
    image_acc = classification_accuracy(labels[test], image_only.predictions)
    assert image_acc < 0.65
    assert fused_acc > image_acc + 0.1


def test_deterministic_under_the_seed(world):
    train_images, train_labels, test_images, _, _ = world
    noisy = train_images + np.random.default_rng(2).normal(scale=0.2, size=train_images.shape)
    first = classify_image_only(noisy, train_labels, test_images, seed=42)
    second = classify_image_only(noisy, train_labels, test_images, seed=42)
    np.testing.assert_array_equal(first.train_ids, second.train_ids)
    np.testing.assert_array_equal(first.distances, second.distances)


def test_bad_inputs_raise_clear_errors(world):
    train_images, train_labels, test_images, _, _ = world
    test = np.repeat(test_images[:, None, :], N_CLASSES, axis=1)
    with pytest.raises(ValueError, match="match no prompt class"):
        classify_fused(train_images, train_labels + 100, np.arange(N_CLASSES), test)
    with pytest.raises(ValueError, match="every test image fused with every prompt"):
        classify_fused(train_images, train_labels, np.arange(N_CLASSES), test[:, :3])
    with pytest.raises(ValueError, match="one training label per training vector"):
        classify_fused(train_images, train_labels[:5], np.arange(N_CLASSES), test)
    with pytest.raises(ValueError, match="larger than the number of items"):
        classify_fused(train_images[:10], train_labels[:10], np.arange(N_CLASSES), test, n_clusters=50)
