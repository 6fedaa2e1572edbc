"""`clipclust cluster --method text` end to end on a synthetic described workspace with tiny self-built
sentence-transformers models: the summary, -k auto's table, what became of --criterion, and bad requests as one
stderr line with exit code 2."""

from __future__ import annotations

from pathlib import Path

from ..text_models import tiny_text_models  # noqa: F401  (a fixture)
from ..workspaces import blob_workspace, described_workspace
from .conftest import one_error_line

TEXTS = ["red red cat", "red cat red", "a red cat", "red cat", "blue truck blue", "blue blue truck", "a blue truck",
         "truck blue"]


def test_text_method_stores_then_reuses(cli, tmp_path: Path, tiny_text_models) -> None:
    described_workspace(tmp_path / "ws.h5", TEXTS)
    model = str(tiny_text_models["plain"])
    first = cli("cluster", "--method", "text", "-k", "2", "--text-model", model)
    assert first.code == 0, first.err
    assert "text-description-synthetic: stored (text on 'text:st on description:synthetic', 8 items" in first.out
    assert "8 embedded now" in first.out
    again = cli("cluster", "--method", "text", "-k", "2", "--text-model", model, "--force", "--json")
    assert again.code == 0, again.err
    assert again.json()["params"]["n_encoded"] == 0 and again.json()["n_clusters"] == 2
    auto = cli("cluster", "--method", "text", "-k", "auto", "--k-range", "2:4", "--text-model", model)
    assert auto.code == 0, auto.err
    assert "-k auto: silhouette of each candidate" in auto.out and "<- chosen" in auto.out
    assert "all read from the workspace, no model loaded" in auto.out


def test_criterion_is_an_instruction_or_said_unused(cli, tmp_path: Path, tiny_text_models) -> None:
    described_workspace(tmp_path / "ws.h5", TEXTS)
    plain = cli("cluster", "--method", "text", "-k", "2", "-c", "color", "--text-model",
                str(tiny_text_models["plain"]))
    assert plain.code == 0, plain.err
    assert "criterion 'color' not used" in plain.out and "takes no instruction" in plain.out
    prompted = cli("cluster", "--method", "text", "-k", "2", "-c", "color", "--text-model",
                   str(tiny_text_models["prompted"]), "--name", "instructed")
    assert prompted.code == 0, prompted.err
    assert "as the instruction 'Instruct: cluster by color\\nQuery: '" in prompted.out


def test_bad_requests_are_one_line_exit_2(cli, tmp_path: Path, tiny_text_models) -> None:
    blob_workspace(tmp_path / "blobs.h5", n_per_class=3, n_classes=2)
    none = cli("cluster", "--method", "text", "-k", "2", cache=tmp_path / "blobs.h5")
    assert none.code == 2 and "needs descriptions" in one_error_line(none)
    described_workspace(tmp_path / "ws.h5", TEXTS)
    missing = cli("cluster", "--method", "text", "-k", "2", "--text-model", str(tmp_path / "nowhere"))
    assert missing.code == 2 and one_error_line(missing).startswith("clipclust: error: --text-model: ")
    too_many = cli("cluster", "--method", "text", "-k", "9", "--text-model", str(tiny_text_models["plain"]))
    assert too_many.code == 2 and "-k: 9 is larger than the 8 items" in one_error_line(too_many)
    wrong = cli("cluster", "--method", "text", "-k", "2", "--n-init", "3")
    assert wrong.code == 2 and "--n-init" in one_error_line(wrong)
