"""`clipclust visualize`: each kind writes a PNG of the expected size; t-SNE coordinates are kept."""

from __future__ import annotations

import pytest
from PIL import Image

from clipclust.store import Workspace
from clipclust.core.plots import montage_size

from ..workspaces import blob_workspace
from .conftest import one_error_line

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.filterwarnings("ignore:Graph is not fully")]


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@pytest.fixture()
def clustered(cli, tmp_path):
    ws, keys, X, y = blob_workspace(tmp_path / "ws.h5", n_per_class=12, images=tmp_path / "images")
    assert cli("cluster", "-k", "4").code == 0
    return ws


@pytest.mark.parametrize("kind, size", [("tsne", (1400, 600)), ("pca", (1400, 600)), ("confusion", (900, 800)),
                                        ("montage", montage_size(4, 8, 64))])
def test_each_kind_writes_a_png_of_the_expected_size(cli, tmp_path, clustered, kind, size):
    out = tmp_path / "figs" / f"{kind}.png"
    result = cli("visualize", "--kind", kind, "-o", str(out))
    assert result.code == 0, result.err
    assert png_size(out) == size
    assert result.out.startswith(f"{out}: {kind} of 'kmeans-image' (48 items), {size[0]}x{size[1]} px")


def test_projection_coordinates_are_stored_and_reused(cli, tmp_path, clustered):
    first = cli("--json", "visualize", "--kind", "tsne", "-o", str(tmp_path / "a.png"), "--perplexity", "5")
    assert first.code == 0 and first.json()["cached_coordinates"] is False
    second = cli("visualize", "--kind", "tsne", "-o", str(tmp_path / "b.png"), "--perplexity", "5")
    assert "coordinates reused from the workspace" in second.out
    other = cli("--json", "visualize", "--kind", "tsne", "-o", str(tmp_path / "c.png"), "--perplexity", "6")
    assert other.json()["cached_coordinates"] is False  # another perplexity is another layout
    kinds = [s for s in Workspace(tmp_path / "ws.h5").list_sets() if s.kind == "tsne"]
    assert len(kinds) == 2 and all(s.shape == (48, 2) and s.name == "tsne:image" for s in kinds)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_default_file_name_and_montage_options(cli, tmp_path, clustered, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("visualize", "--kind", "montage", "--per-cluster", "3", "--thumb", "32")
    assert result.code == 0, result.err
    assert png_size(tmp_path / "kmeans-image-montage.png") == montage_size(4, 3, 32)


def test_montage_skips_missing_files_with_a_note(cli, tmp_path, clustered):
    for path in sorted((tmp_path / "images").rglob("*.png"))[:5]:
        path.unlink()
    result = cli("visualize", "--kind", "montage", "-o", str(tmp_path / "m.png"), "--per-cluster", "12")
    assert result.code == 0, result.err
    assert "5 unreadable images left out" in result.out
    assert "warning: 5 image(s) were left out of the montage, e.g. " in result.err and "moved or deleted" in result.err
    assert png_size(tmp_path / "m.png") == montage_size(4, 12, 64)


def test_montage_of_real_digits_from_embed(cli, tmp_path, digits_ws):
    assert cli("cluster", "-k", "10").code == 0
    result = cli("visualize", "--kind", "montage", "-o", str(tmp_path / "digits.png"))
    assert result.code == 0, result.err
    assert png_size(tmp_path / "digits.png") == montage_size(10, 8, 64)


def test_unlabelled_items_get_one_panel_and_no_confusion(cli, tmp_path):
    blob_workspace(tmp_path / "ws.h5", labelled=False)
    assert cli("cluster", "-k", "4").code == 0
    scatter = cli("visualize", "--kind", "pca", "-o", str(tmp_path / "p.png"))
    assert scatter.code == 0 and png_size(tmp_path / "p.png") == (700, 600)
    confusion = cli("visualize", "--kind", "confusion", "-o", str(tmp_path / "c.png"))
    assert confusion.code == 2 and "no item of clustering 'kmeans-image' has a label" in one_error_line(confusion)
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["visualize", "--kind", "pie"], "--kind pie: expected one of tsne, pca, confusion, montage"),
        (["visualize", "--clustering", "nope"], "no clustering named 'nope'"),
        (["visualize", "--kind", "montage", "--per-cluster", "0"], "--per-cluster must be at least 1"),
        (["visualize", "--perplexity", "-1"], "--perplexity -1.0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, clustered, args, message):
    result = cli(*args)
    assert result.code == 2 and message in one_error_line(result)


def test_several_clusterings_need_a_name(cli, clustered):
    assert cli("cluster", "-k", "3", "--name", "three").code == 0
    result = cli("visualize", "--kind", "pca")
    assert result.code == 2 and "holds 2 clusterings (kmeans-image, three); name one" in one_error_line(result)
