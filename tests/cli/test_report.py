"""`clipclust report`: one summary line (or JSON), bad input as one line and exit 2 with nothing written, and
the hint that points `cluster` at it."""

from __future__ import annotations

import pytest

from ..workspaces import blob_workspace
from .conftest import one_error_line

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.filterwarnings("ignore:Graph is not fully")]


@pytest.fixture()
def clustered(cli, tmp_path):
    ws, *_ = blob_workspace(tmp_path / "ws.h5", n_per_class=6, n_classes=3, images=tmp_path / "images")
    assert cli("cluster", "-k", "3").code == 0
    return ws


def test_the_summary_line_and_a_second_run_that_reuses_everything(cli, tmp_path, clustered):
    out = tmp_path / "site" / "r.html"
    first = cli("report", "-o", str(out), "--layout", "pca")
    assert first.code == 0, first.err
    assert first.out.startswith(f"{out}: 1 clustering of 18 items, 3 cards, ")
    assert first.out.rstrip().endswith("; 18 thumbnails inline (18 made, 0 reused from the workspace); map pca of 'image'")
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    again = cli("--json", "report", "kmeans-image", "-o", str(out), "--layout", "pca", "--thumbnails", "folder")
    summary = again.json()
    assert summary["thumbnails_made"] == 0 and summary["thumbnails_reused"] == 18 and summary["map_cached"]
    assert summary["folder"] == str(tmp_path / "site" / "r_files") and summary["clusterings"] == ["kmeans-image"]
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == ["r.html", "r_files"]


def test_missing_images_are_counted_on_the_line_and_warned_about(cli, tmp_path, clustered):
    for path in sorted((tmp_path / "images").rglob("*.png"))[:2]:
        path.unlink()
    result = cli("report", "-o", str(tmp_path / "r.html"), "--layout", "pca")
    assert result.code == 0 and result.out.rstrip().endswith("; 2 image files missing (placeholders)")
    assert "warning: 2 image file(s) are missing or unreadable" in result.err


@pytest.mark.parametrize("args, needle", [
    (["nope"], "no clustering named 'nope' (known: kmeans-image)"),
    (["-c", "kmeans-image", "-c", "other"], "no clustering named 'other'"),
    (["--thumbnails", "some"], "--thumbnails: some: expected one of inline, folder, none"),
    (["--layout", "umap"], "--layout: umap: expected one of auto, tsne, pca"),
    (["--per-cluster", "0"], "--per-cluster must be at least 1 and --borderline at least 0"),
    (["--map-on", "nothing"], "no stored set matches 'nothing'"),
    (["-o", "FILE/r.html"], "--output: cannot write "),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(cli, tmp_path, clustered, args, needle):
    (tmp_path / "FILE").write_text("a file, not a folder")
    args = [a.replace("FILE", str(tmp_path / "FILE")) for a in args]
    result = cli("report", *args, *([] if "-o" in args else ["-o", str(tmp_path / "out" / "r.html")]))
    assert result.code == 2 and result.out == ""
    assert needle in one_error_line(result)
    assert not (tmp_path / "out").exists()


def test_an_empty_workspace_and_no_workspace(cli, tmp_path):
    missing = cli("report", "-o", str(tmp_path / "r.html"))
    assert missing.code == 2 and "no workspace at" in one_error_line(missing)
    blob_workspace(tmp_path / "ws.h5", n_per_class=3, n_classes=2)
    empty = cli("report", "-o", str(tmp_path / "r.html"))
    assert empty.code == 2 and one_error_line(empty) == (
        "clipclust: error: the workspace holds no clustering yet; run 'clipclust cluster' first")
    assert not (tmp_path / "r.html").exists()


def test_cluster_points_at_the_report(cli, tmp_path):
    blob_workspace(tmp_path / "ws.h5", n_per_class=3, n_classes=2)
    result = cli("cluster", "-k", "2", "--name", "two groups")
    assert result.code == 0 and "see it: clipclust report 'two groups' -o 'two groups.html'" in result.err
    assert "see it" not in result.out and "see it" not in cli("cluster", "-k", "2", "--quiet").err


def test_help_names_the_options(cli):
    shown = cli("report", "--help").out
    for flag in ("--output", "--thumbnails", "--layout", "--map-on", "--per-cluster", "--borderline", "--thumb"):
        assert flag in shown
