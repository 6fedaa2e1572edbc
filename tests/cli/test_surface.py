"""One command surface: global options before or after the command, clusterings named the same way everywhere."""

from __future__ import annotations

import csv
import io

import pytest
import typer.main

from clipclust.cli.app import app

from ..workspaces import blob_workspace
from .conftest import one_error_line

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.filterwarnings("ignore:Graph is not fully")]

COMMANDS = sorted(typer.main.get_command(app).commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_and_shows_the_global_options(cli, command):
    result = cli(command, "--help")
    assert result.code == 0, result.err
    for flag in ("--cache PATH", "--json", "-q, --quiet", "--debug"):
        assert flag in result.out, f"{command} --help lacks {flag}"


def test_global_options_work_after_the_command(cli, tmp_path):
    blob_workspace(tmp_path / "other.h5", n_per_class=5, n_classes=3)
    # --cache after the command wins over the one before it (the cli fixture passes --cache tmp/ws.h5 first)
    result = cli("cluster", "-k", "3", "--cache", str(tmp_path / "other.h5"), "--quiet")
    assert result.code == 0, result.err
    assert result.err == "" and not (tmp_path / "ws.h5").exists()
    info = cli("info", "--cache", str(tmp_path / "other.h5"), "--json")
    assert info.code == 0 and info.json()["clusterings"] == ["kmeans-image"]
    before = cli("--json", "--quiet", "--cache", str(tmp_path / "other.h5"), "info")
    assert before.json() == info.json()
    assert cli("info", "-q", "--cache", str(tmp_path / "other.h5")).out.startswith("workspace ")


def test_quiet_after_the_command_silences_warnings(cli, tmp_path):
    blob_workspace(tmp_path / "ws.h5", n_per_class=5, n_classes=3)
    assert cli("cluster", "-k", "3").code == 0
    loud = cli("cluster", "-k", "2")  # another K under the same name: a warning that it is replaced
    quiet = cli("cluster", "-k", "3", "--quiet")
    assert loud.code == quiet.code == 0
    assert "replacing it" in loud.err and quiet.err == ""


@pytest.fixture()
def two_clusterings(cli, tmp_path):
    blob_workspace(tmp_path / "ws.h5", n_per_class=6, n_classes=3, images=tmp_path / "images")
    assert cli("cluster", "-k", "3").code == 0
    assert cli("cluster", "-k", "2", "--name", "two").code == 0


def test_clusterings_are_named_positionally_or_with_dash_c(cli, tmp_path, two_clusterings):
    for args in (["two"], ["-c", "two"], ["--clustering", "two"], ["two", "-c", "two"]):
        rows = list(csv.DictReader(io.StringIO(cli("export", *args).out)))
        assert len(rows) == 18 and {r["cluster"] for r in rows} == {"0", "1"}, args
        evaluated = cli("evaluate", *args, "--json")
        assert evaluated.code == 0 and list(evaluated.json()) == ["two"], args
        drawn = cli("visualize", *args, "--kind", "pca", "-o", str(tmp_path / "two.png"), "--json")
        assert drawn.code == 0 and drawn.json()["clustering"] == "two", args
    both = cli("evaluate", "kmeans-image", "-c", "two", "--json")
    assert list(both.json()) == ["kmeans-image", "two"]


@pytest.mark.parametrize("command", ["export", "visualize"])
def test_two_different_names_for_one_clustering_are_refused(cli, two_clusterings, command):
    result = cli(command, "two", "-c", "kmeans-image")
    assert result.code == 2
    assert "NAME 'two' and --clustering 'kmeans-image' name different clusterings" in one_error_line(result)


@pytest.mark.parametrize("words, cword, expected", [
    ("clipclust info --qu", "2", "--quiet"),
    ("clipclust cluster --cac", "2", "--cache"),
    ("clipclust export --clus", "2", "--clustering"),
])
def test_completion_offers_the_global_options_after_the_command(capsys, monkeypatch, words, cword, expected):
    from clipclust.cli.app import main

    monkeypatch.setenv("_CLIPCLUST_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", words)
    monkeypatch.setenv("COMP_CWORD", cword)
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.split() == [expected]
