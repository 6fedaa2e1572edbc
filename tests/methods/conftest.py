"""Synthetic embeddings for the method tests: well-separated groups whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs


@pytest.fixture(autouse=True)
def _one_thread_for_method_tests(single_thread):
    """Every method test runs with one thread: on a busy 2-core machine OpenMP workers that spin for each
    other make these small fits ten times slower; one thread is as fast when idle."""
    yield


def unit_rows(X: np.ndarray) -> np.ndarray:
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """240 points in 16 dimensions around 4 well-separated centres (ids 0-3)."""
    X, y = make_blobs(n_samples=240, n_features=16, centers=4, cluster_std=1.0, random_state=7)
    return X, y


@pytest.fixture(scope="session")
def clip_like_blobs() -> tuple[np.ndarray, np.ndarray]:
    """600 unit vectors in 64 dimensions, 5 groups: the geometry of CLIP image embeddings."""
    X, y = make_blobs(n_samples=600, n_features=64, centers=5, cluster_std=3.0, center_box=(-10, 10), random_state=3)
    return unit_rows(X), y
