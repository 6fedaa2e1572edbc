"""Tests of clipclust.core.plots: files are PNGs of the documented pixel size; projections behave."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import make_blobs

from clipclust.core.plots import (
    CONFUSION_FIGSIZE,
    SCATTER_FIGSIZE,
    confusion_plot,
    montage,
    montage_size,
    project_2d,
    scatter_2d,
)


pytestmark = pytest.mark.usefixtures("single_thread")  # OpenMP spinning on a busy 2-core box


def open_png(path) -> Image.Image:
    image = Image.open(path)
    assert image.format == "PNG"
    image.load()
    return image


def test_no_pyplot_figures_leak(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    scatter_2d(np.zeros((4, 2)), [0, 0, 1, 1], [0, 1, 1, 1], tmp_path / "a.png")
    confusion_plot([0, 1], [1, 0], tmp_path / "b.png")
    assert plt.get_fignums() == before


def test_importing_plots_selects_agg_in_a_fresh_interpreter():
    code = "import clipclust.core.plots, matplotlib; print(matplotlib.get_backend())"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               env={**os.environ, "MPLBACKEND": "svg"}, cwd=Path(__file__).resolve().parents[1])
    assert completed.stdout.strip().lower() == "agg"


def test_scatter_two_panels_size(tmp_path):
    coords, labels = make_blobs(300, centers=5, random_state=0)
    path = scatter_2d(coords, labels, (labels + 2) % 5, tmp_path / "sub" / "scatter.png", title="blobs")
    assert path.exists()
    assert open_png(path).size == (int(SCATTER_FIGSIZE[0] * 100), int(SCATTER_FIGSIZE[1] * 100)) == (1400, 600)


def test_scatter_without_labels_is_one_panel(tmp_path):
    coords, labels = make_blobs(50, centers=3, random_state=0)
    assert open_png(scatter_2d(coords, None, labels, tmp_path / "one.png")).size == (700, 600)


def test_scatter_many_classes_string_labels_and_noise(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array([f"class {i}" for i in rng.integers(0, 100, 2500)])
    clusters = rng.integers(-1, 80, 2500)
    image = open_png(scatter_2d(rng.normal(size=(2500, 2)), labels, clusters, tmp_path / "many.png"))
    assert image.size == (1400, 600)
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 50  # many distinct colours were drawn, not a blank canvas


def test_scatter_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="project_2d first"):
        scatter_2d(np.zeros((4, 3)), None, [0, 0, 1, 1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="one cluster id per point"):
        scatter_2d(np.zeros((4, 2)), None, [0, 1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="one label per point"):
        scatter_2d(np.zeros((4, 2)), [0, 1], [0, 0, 1, 1], tmp_path / "x.png")


@pytest.mark.parametrize("kind", ["tsne", "pca"])
def test_project_2d_keeps_blobs_apart_and_is_seeded(kind):
    X, y = make_blobs(120, n_features=20, centers=3, cluster_std=0.5, random_state=1)
    coords = project_2d(X, kind, seed=0)
    assert coords.shape == (120, 2)
    np.testing.assert_allclose(coords, project_2d(X, kind, seed=0))
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(5).fit(coords, y)
    assert knn.score(coords, y) == 1.0  # neighbours in 2-D share their blob


def test_project_2d_small_inputs_and_errors():
    X = np.random.default_rng(0).normal(size=(5, 4))
    assert project_2d(X, "tsne", seed=0).shape == (5, 2)  # perplexity clamped below N
    assert project_2d(np.arange(3.0).reshape(3, 1), "pca").shape == (3, 2)
    with pytest.raises(ValueError, match="N >= 2"):
        project_2d(np.ones((1, 4)), "pca")
    with pytest.raises(ValueError, match="'tsne' or 'pca'"):
        project_2d(X, "umap")


def test_confusion_plot_size(tmp_path):
    y_true = ["cat"] * 5 + ["dog"] * 5 + ["eel"] * 2
    y_pred = [2] * 5 + [0] * 4 + [1, 3, -1]
    image = open_png(confusion_plot(y_true, y_pred, tmp_path / "confusion.png"))
    assert image.size == (int(CONFUSION_FIGSIZE[0] * 100), int(CONFUSION_FIGSIZE[1] * 100)) == (900, 800)


def test_confusion_plot_large_table(tmp_path):
    rng = np.random.default_rng(0)
    image = open_png(confusion_plot(rng.integers(0, 100, 3000), rng.integers(0, 120, 3000), tmp_path / "big.png"))
    assert image.size == (900, 800)


def test_montage_exact_size_and_content(tmp_path):
    red = Image.new("RGB", (40, 20), (255, 0, 0))
    blue = Image.new("L", (10, 30), 0)
    groups = {"red things": [red] * 10, "dark": [blue, blue], "empty cluster": []}
    path = montage(groups, tmp_path / "montage.png", per_cluster=4, thumb=32)
    image = open_png(path).convert("RGB")
    assert image.size == montage_size(3, 4, 32) == (4 + 4 * 36, 4 + 3 * (16 + 32 + 4))
    pixels = np.asarray(image)
    first_thumb = pixels[4 + 16 : 4 + 16 + 32, 4 : 4 + 32]
    assert (first_thumb == [255, 0, 0]).all(axis=-1).sum() == 32 * 16  # 40x20 padded to 32x16, centred
    label_strip = pixels[4:4 + 16, 4:100]
    assert (label_strip.sum(axis=-1) < 200).any()  # the name is drawn in dark ink
    last_row = pixels[4 + 2 * 52 + 16 : 4 + 2 * 52 + 16 + 32]
    assert (last_row == 255).all()  # an empty cluster leaves blank cells


def test_montage_long_names_and_errors(tmp_path):
    image = Image.new("RGB", (8, 8), (0, 128, 0))
    path = montage({"x" * 500: [image]}, tmp_path / "long.png", per_cluster=2, thumb=16)
    assert open_png(path).size == montage_size(1, 2, 16)
    with pytest.raises(ValueError, match="at least one cluster"):
        montage({}, tmp_path / "none.png")
