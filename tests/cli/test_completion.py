"""The completion scripts in completions/ are current, and the CLI answers them."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipclust.cli.completion import SHELLS, completion_script

COMPLETIONS = Path(__file__).resolve().parents[2] / "completions"


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_committed_scripts_are_not_stale(shell):
    committed = (COMPLETIONS / SHELLS[shell]).read_text()
    assert committed == completion_script(shell).rstrip("\n") + "\n", (
        f"completions/{SHELLS[shell]} is stale: run python -m clipclust.cli.completion"
    )


def test_cli_answers_bash_completion(capsys, monkeypatch):
    from clipclust.cli.app import main

    monkeypatch.setenv("_CLIPCLUST_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "clipclust embed --fu")
    monkeypatch.setenv("COMP_CWORD", "2")
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.split() == ["--fuse"]


@pytest.mark.parametrize("words, expected", [("clipclust cluster --min-sa", ["--min-samples"]),
                                             ("clipclust cluster --thr", ["--threads"])])
def test_cli_completes_the_flags_generated_from_the_method_registry(capsys, monkeypatch, words, expected):
    from clipclust.cli.app import main

    monkeypatch.setenv("_CLIPCLUST_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", words)
    monkeypatch.setenv("COMP_CWORD", "2")
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.split() == expected
