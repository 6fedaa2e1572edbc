"""`clipclust discover` end to end with the real SmolLM2 GGUF (one thread, a dozen descriptions): a stored,
printed table; the same request again answered from the workspace without loading any model; --json;
bad requests are one stderr line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipclust.store import Workspace

from ..models.conftest import smollm2_path
from .conftest import one_error_line

THINGS = [
    "A red sports car parked on a city street.", "A small black cat sleeping on a sofa.",
    "A white sailing boat on a calm blue lake.", "A brown dog running across a green park.",
    "A blue pickup truck driving on a dusty road.", "A grey kitten playing with a ball of wool.",
    "A large cargo ship in a busy harbour.", "A golden retriever dog sitting on the grass.",
    "A yellow taxi car waiting at a traffic light.", "An orange cat sitting on a windowsill.",
    "A fishing boat tied to a wooden pier.", "A black poodle dog on a leash in the street.",
]


@pytest.fixture(autouse=True)
def _private_hash_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPCLUST_HASH_MEMO", str(tmp_path / "hashes.json"))


@pytest.fixture()
def imported(cli, tmp_path: Path) -> Path:
    src = tmp_path / "things.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in THINGS))
    res = cli("describe", "--from", str(src))
    assert res.code == 0, res.err
    return tmp_path / "ws.h5"


def run(cli, *extra: str, llm: str | None = None):
    return cli("discover", "--llm", llm or str(smollm2_path()), "--threads", "1", "--n-ctx", "2048", "-n", "1",
               "--sample", "8", "--batch", "4", "--label-sample", "4", *extra)


def test_discover_with_smollm2_stores_prints_and_reuses_without_a_model(cli, imported: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    first = run(cli)
    assert first.code == 0, first.err
    assert "discover: stored" in first.out and "8 of 12 descriptions in 2 batches, 4 labelled per criterion" in first.out
    # SmolLM2-135M proposes criteria but can rarely label by one: the table shows each checked candidate, kept
    # ("criteria for ...") or dropped with the reason ("proposed, dropped"), and a short result is warned about.
    assert "criteria for 'description:import-things'" in first.out or "proposed, dropped" in first.out

    from clipclust.models.registry import Registry
    from clipclust.models.text_encoder import TextEncoder

    def no_loading(*args, **kwargs):
        raise AssertionError("a stored result loaded a model")

    monkeypatch.setattr(Registry, "open", no_loading)
    monkeypatch.setattr(TextEncoder, "_load", no_loading)
    again = run(cli, "--json")
    assert again.code == 0, again.err
    report = json.loads(again.out)
    assert report["reused"] and report["calls"] == {} and not report["model_loaded"]
    assert Workspace(imported).memo_get(report["key"])["criteria"] == report["criteria"]
    assert len(report["criteria"]) <= 1 and (report["criteria"] or report["dropped"])
    for row in report["criteria"]:  # what the table showed
        assert row["criterion"] in first.out and row["values"] and row["groups"] >= 1
    for row in report["dropped"]:
        assert row["criterion"] in first.out and row["reason"] in first.out
    if not report["criteria"]:
        assert "found 0 distinct criteria of the 1 asked" in first.err
    table = run(cli)
    assert table.code == 0 and "discover: reused" in table.out
    assert table.out.split("discover:")[0] == first.out.split("discover:")[0]  # the same table


@pytest.mark.parametrize("args, needle", [
    (("-n", "0"), "-n: the number of criteria must be a whole number of at least 1, got 0"),
    (("--sample", "1"), "--sample: the sample must be a whole number of at least 2"),
    (("--threads", "0"), "--threads must be at least 1"),
    (("--timeout", "0"), "--timeout must be a number of seconds above 0"),
])
def test_bad_numbers(cli, imported: Path, args: tuple[str, ...], needle: str) -> None:
    res = run(cli, *args)
    assert res.code == 2 and needle in one_error_line(res)


def test_no_llm_and_unreadable_models(cli, imported: Path, tmp_path: Path) -> None:
    res = cli("discover")
    assert res.code == 2 and "--llm: discovering criteria needs an LLM" in one_error_line(res)
    res = run(cli, llm=str(tmp_path / "missing.gguf"))
    assert res.code == 2 and "LLM file not found" in one_error_line(res)
    (tmp_path / "text.gguf").write_text("not a model")
    res = run(cli, llm=str(tmp_path / "text.gguf"))
    assert res.code == 2 and "is not a GGUF file" in one_error_line(res)
    (tmp_path / "cut.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    res = run(cli, llm=str(tmp_path / "cut.gguf"))
    assert res.code == 2 and "could not load" in one_error_line(res)


def test_no_description_set(cli, digits_ws: Path) -> None:
    res = cli("discover", "--llm", str(smollm2_path()))
    assert res.code == 2
    line = one_error_line(res)
    assert "needs descriptions and the workspace holds none" in line and "clipclust describe" in line
