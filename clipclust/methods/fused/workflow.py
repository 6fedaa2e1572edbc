"""Prompt-guided fused embeddings (the fused-embedding paper, methods.md section 1), on arrays.

The paper's workflow: fuse each image embedding with a prompt's text embedding (their mean); on the
training split, fuse every image with the prompt of its own class, cluster the fused vectors with
spectral clustering, label each cluster by majority vote and take the mean vector of each cluster
as its centroid. A test image is fused with *every* prompt; for each prompt p, its distance is the
distance from fused(image, p) to the nearest centroid whose label is p's class (the filter), and the
image gets the class of the prompt with the smallest distance.

Labels are used only after clustering (majority vote), never by the clustering itself; the
training vectors do carry label information, through the prompt each image was fused with.

A property worth knowing: under the filter, image and centroid carry the same prompt text, so with
label-pure clusters the text cancels at test time and the rule is "nearest centroid of the image
part". Prompts help through training: they pull the labels apart, so the clusters (and their
centroids) follow the labels more closely than image-only clusters do.

Two bugs of the released code are not reproduced:
- Grouped prompts: the code indexes clusters by *unique* prompt but loops over all prompts. Here
  every prompt carries its own class (``prompt_classes[p]``), and filtering compares cluster labels
  with that class, so any number of prompts per class or group works.
- Image-only baseline: the code loops over the scalars of a single vector. Here the baseline is the
  same workflow on image vectors, each test image compared once per class (:func:`classify_image_only`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist

from clipclust.core.clustering import cluster

__all__ = [
    "FusedResult",
    "classify_fused",
    "classify_image_only",
    "classify_with_centroids",
    "fuse",
    "majority_labels",
]


@dataclass(frozen=True)
class FusedResult:
    """Output of the fused-embedding workflow.

    ``train_ids``: spectral cluster of each training vector. ``cluster_labels[c]``: majority label of
    cluster c. ``centroids[c]``: mean training vector of cluster c. ``predictions``: predicted class of
    each test image. ``distances[i, p]``: distance from test image i under prompt p to the nearest
    centroid labelled ``prompt_classes[p]`` (inf when no cluster carries that label).
    ``prompt_classes``: the class of each prompt column. ``params``: settings used.
    """

    train_ids: np.ndarray
    cluster_labels: np.ndarray
    centroids: np.ndarray
    predictions: np.ndarray
    distances: np.ndarray
    prompt_classes: np.ndarray
    params: dict[str, Any]


def fuse(image_vecs: np.ndarray, text_vecs: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Fused embedding = mean of the image and text vectors, broadcasting over leading axes.

    With ``normalize`` (the default) both parts are L2-normalised first, so that neither modality
    dominates by norm (CLIP compares by cosine); ``normalize=False`` averages the raw features, as the
    released code does. Shapes broadcast: (N, D) with (D,) or (N, D), or (N, 1, D) with (P, D) to get
    the (N, P, D) test tensor of every image fused with every prompt.
    """
    image_vecs = np.asarray(image_vecs, dtype=np.float64)
    text_vecs = np.asarray(text_vecs, dtype=np.float64)
    if image_vecs.shape[-1] != text_vecs.shape[-1]:
        raise ValueError(
            f"Image and text vectors must have the same dimension; got {image_vecs.shape[-1]} and "
            f"{text_vecs.shape[-1]} (use the same CLIP model for both)."
        )
    if normalize:
        image_vecs = image_vecs / _norms(image_vecs, "image")
        text_vecs = text_vecs / _norms(text_vecs, "text")
    return (image_vecs + text_vecs) / 2.0


def _norms(vectors: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"A {name} vector is all zeros and cannot be normalised; re-embed it.")
    return norms


def majority_labels(cluster_ids: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Most frequent label in each cluster 0..n_clusters-1 (ties: the smallest label in sorted order).

    Empty clusters get no label (``None``), so no test image can be filtered onto them.
    """
    labels = np.asarray(labels)
    result = np.empty(n_clusters, dtype=object)
    for cluster_id in range(n_clusters):
        members = labels[cluster_ids == cluster_id]
        if members.shape[0] == 0:
            result[cluster_id] = None
            continue
        values, counts = np.unique(members, return_counts=True)
        best = values[int(np.argmax(counts))]
        result[cluster_id] = best.item() if isinstance(best, np.generic) else best
    return result


def classify_with_centroids(
    test_vectors: np.ndarray,
    prompt_classes: Sequence[Hashable] | np.ndarray,
    centroids: np.ndarray,
    cluster_labels: Sequence[Hashable | None] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's test-time rule with prompt filtering, given labelled centroids.

    ``distances[i, p]`` is the Euclidean distance from ``test_vectors[i, p]`` (image i fused with
    prompt p) to the nearest centroid whose label equals ``prompt_classes[p]``, or inf when no
    centroid has that label; the prediction is ``prompt_classes[argmin_p distances[i, p]]``. Public
    so that stored centroids can classify new images without re-clustering.
    Returns ``(predictions, distances)``.
    """
    test_vectors = np.asarray(test_vectors, dtype=np.float64)
    prompt_classes = np.asarray(prompt_classes)
    centroids = np.asarray(centroids, dtype=np.float64)
    cluster_labels = list(cluster_labels)
    if test_vectors.ndim != 3 or test_vectors.shape[1] != prompt_classes.shape[0]:
        raise ValueError(
            f"test_vectors must be (N_test, P={prompt_classes.shape[0]}, D); got shape {test_vectors.shape}."
        )
    if centroids.ndim != 2 or centroids.shape[0] != len(cluster_labels) or centroids.shape[1] != test_vectors.shape[2]:
        raise ValueError(
            f"centroids must be (n_clusters, D={test_vectors.shape[2]}) with one label each; got "
            f"{centroids.shape} and {len(cluster_labels)} labels."
        )
    n_test, n_prompts, _ = test_vectors.shape
    distances = np.full((n_test, n_prompts), np.inf)
    for p in range(n_prompts):
        allowed = np.array([label is not None and label == prompt_classes[p] for label in cluster_labels], dtype=bool)
        if allowed.any():
            distances[:, p] = cdist(test_vectors[:, p, :], centroids[allowed]).min(axis=1)
    if n_test and np.isinf(distances).all(axis=1).any():
        raise ValueError("No centroid is labelled with any prompt's class; check prompt_classes against the labels.")
    predictions = prompt_classes[np.argmin(distances, axis=1)] if n_test else prompt_classes[:0]
    return predictions, distances


def classify_fused(
    train_vectors: np.ndarray,
    train_labels: Sequence[Hashable] | np.ndarray,
    prompt_classes: Sequence[Hashable] | np.ndarray,
    test_vectors: np.ndarray,
    n_clusters: int | None = None,
    seed: int = 42,
    n_neighbors: int = 10,
) -> FusedResult:
    """Cluster fused training vectors and classify test images by filtered nearest centroid.

    Args:
        train_vectors: (N_train, D) fused vectors, each image fused with the prompt of its own class.
        train_labels: (N_train,) the class each training image was paired with; it must be one of
            ``prompt_classes`` (for grouped prompts, the group, e.g. "even").
        prompt_classes: (P,) the class each prompt column of ``test_vectors`` stands for. Several
            prompts may share a class (grouped prompts, several templates); for swapped prompts give
            the class whose images were fused with that prompt in training.
        test_vectors: (N_test, P, D) every test image fused with every prompt.
        n_clusters: spectral clusters; default 2 x the number of distinct prompt classes (the paper's
            2 x distinct prompts when each prompt names one class or group), at most N_train.
            Raise it for hard sets, or when the classes within a group lie far apart.
        seed: SpectralClustering random_state (42 in the paper).
        n_neighbors: neighbours of the spectral affinity graph (10 in the paper).

    Distances are Euclidean. A test image's class is ``prompt_classes[argmin_p distances[i, p]]``.
    """
    train_vectors = np.asarray(train_vectors, dtype=np.float64)
    train_labels = np.asarray(train_labels)
    prompt_classes = np.asarray(prompt_classes)
    test_vectors = np.asarray(test_vectors, dtype=np.float64)
    if train_vectors.ndim != 2:
        raise ValueError(f"train_vectors must be (N_train, D); got shape {train_vectors.shape}.")
    if train_labels.shape != (train_vectors.shape[0],):
        raise ValueError(
            f"Pass one training label per training vector: {train_labels.shape[0] if train_labels.ndim else 0} "
            f"labels for {train_vectors.shape[0]} vectors."
        )
    if prompt_classes.ndim != 1 or prompt_classes.shape[0] == 0:
        raise ValueError("prompt_classes must list the class of each prompt (at least one).")
    if test_vectors.ndim != 3 or test_vectors.shape[1:] != (prompt_classes.shape[0], train_vectors.shape[1]):
        raise ValueError(
            f"test_vectors must be (N_test, P={prompt_classes.shape[0]}, D={train_vectors.shape[1]}): every "
            f"test image fused with every prompt; got shape {test_vectors.shape}."
        )
    distinct_classes = set(prompt_classes.tolist())
    unknown = sorted({str(label) for label in train_labels.tolist() if label not in distinct_classes})
    if unknown:
        raise ValueError(
            f"Training labels {', '.join(unknown[:5])} match no prompt class; every training image must be "
            "paired with a prompt (map classes to groups before calling for grouped prompts)."
        )
    if n_clusters is None:
        n_clusters = 2 * len(distinct_classes)
        n_clusters = min(n_clusters, train_vectors.shape[0])
    clustering = cluster(train_vectors, "spectral", n_clusters, seed, n_neighbors=n_neighbors)
    centroids = clustering.centroids
    cluster_labels = majority_labels(clustering.ids, train_labels, centroids.shape[0])
    predictions, distances = classify_with_centroids(test_vectors, prompt_classes, centroids, cluster_labels)
    return FusedResult(
        train_ids=clustering.ids,
        cluster_labels=cluster_labels,
        centroids=centroids,
        predictions=predictions,
        distances=distances,
        prompt_classes=prompt_classes,
        params={
            "method": "fused",
            "n_clusters": int(n_clusters),
            "seed": seed,
            "n_neighbors": clustering.params["n_neighbors"],
            "distance": "euclidean",
        },
    )


def classify_image_only(
    train_vectors: np.ndarray,
    train_labels: Sequence[Hashable] | np.ndarray,
    test_vectors: np.ndarray,
    classes: Sequence[Hashable] | np.ndarray | None = None,
    n_clusters: int | None = None,
    seed: int = 42,
    n_neighbors: int = 10,
) -> FusedResult:
    """The paper's image-only baseline: the same workflow on plain image vectors.

    Training clusters the (N_train, D) image vectors; each test image, with no text to fuse, is the
    same vector for every class, so its distance for class c is the distance to the nearest centroid
    labelled c and the prediction is the class of the nearest labelled centroid. ``classes`` defaults
    to the sorted distinct training labels; ``n_clusters`` to 2 x the number of classes.
    """
    train_vectors = np.asarray(train_vectors, dtype=np.float64)
    test_vectors = np.asarray(test_vectors, dtype=np.float64)
    if test_vectors.ndim != 2:
        raise ValueError(f"test_vectors must be (N_test, D) image vectors; got shape {test_vectors.shape}.")
    class_array = np.unique(np.asarray(train_labels)) if classes is None else np.asarray(classes)
    # A read-only broadcast view: the same image vector under every class, without copying it P times.
    repeated = np.broadcast_to(
        test_vectors[:, None, :], (test_vectors.shape[0], class_array.shape[0], test_vectors.shape[1])
    )
    result = classify_fused(
        train_vectors, train_labels, class_array, repeated, n_clusters=n_clusters, seed=seed, n_neighbors=n_neighbors
    )
    return replace(result, params={**result.params, "method": "image-only"})
