"""`clipclust finetune`: a run from the command line, its output folder used by embed and evaluate, progress
on stderr, an interrupted run resumed with --resume, and the one-line errors."""

from __future__ import annotations

import json

import pytest

from ..conftest import write_digits
from .conftest import one_error_line
from .test_cluster import help_sections

pytestmark = pytest.mark.usefixtures("single_thread")

TRAIN = ["--classes", ",".join(str(d) for d in range(10)), "--class-template", "a photo of the digit <>.",
         "--template", "a photo of the digit <>.", "--texts", "class", "--device", "cpu", "--workers", "0",
         "--batch-size", "8", "--lr", "1e-4"]


def test_finetune_then_embed_and_evaluate_with_the_prototypes(cli, tiny_open_clip, tmp_path):
    digits = write_digits(tmp_path / "digits", 24)
    assert cli("embed", str(digits), "--model", str(tiny_open_clip), "--device", "cpu").code == 0
    out = tmp_path / "tuned"
    result = cli("finetune", "--model", str(tiny_open_clip), "--out", str(out), "--epochs", "2", *TRAIN)
    assert result.code == 0, result.err
    assert "latteclip on 24 items: 2 epochs, 6 steps" in result.out and f"-> {out}" in result.out
    epoch_lines = [line for line in result.err.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and "pseudo-label agreement" in epoch_lines[0] and "images/s" in epoch_lines[0]
    record = json.loads((out / "finetune.json").read_text())
    assert record["params"]["method"] == "latteclip" and record["params"]["batch_size"] == 8

    assert cli("embed", str(digits), "--model", str(out), "--device", "cpu").code == 0
    data = cli("evaluate", "--zero-shot", "--json").json()
    report = data["prototypes:tuned"]
    assert report["method"] == "latteclip prototypes" and report["n_labelled"] == 24
    assert 0.0 <= report["accuracy"] <= 1.0

    again = cli("finetune", "--model", str(tiny_open_clip), "--out", str(out), "--epochs", "2", *TRAIN, "--resume")
    assert again.code == 0 and "nothing to do" in again.out
    summary = cli("--json", "finetune", "--model", str(tiny_open_clip), "--out", str(out), "--epochs", "2", *TRAIN,
                  "--resume").json()
    assert summary["step"] == summary["total_steps"] == 6 and summary["model_loaded"] is False


def test_interrupted_run_keeps_its_checkpoint_and_resumes(cli, tiny_open_clip, tmp_path, monkeypatch):
    from clipclust.commands.finetune import trainer
    digits = write_digits(tmp_path / "digits", 16)
    assert cli("embed", str(digits), "--model", str(tiny_open_clip), "--device", "cpu").code == 0
    out = tmp_path / "tuned"
    step = trainer.Trainer.step
    calls = []

    def flaky(self, *args):
        calls.append(1)
        if len(calls) == 3:  # first step of the second epoch
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(trainer.Trainer, "step", flaky)
    args = ["finetune", "--model", str(tiny_open_clip), "--out", str(out), "--epochs", "2", *TRAIN]
    result = cli(*args)
    last = result.err.strip().splitlines()[-1]  # after the epoch-1 line
    assert result.code == 130 and last.startswith("clipclust: error: interrupted") and "--resume" in last
    assert json.loads((out / "finetune.json").read_text())["step"] == 2
    assert cli(*args).code == 2  # not over an existing checkpoint without --resume
    resumed = cli(*args, "--resume")
    assert resumed.code == 0, resumed.err
    assert "2 epochs, 4 steps, resumed at step 2" in resumed.out


def test_bad_input_is_one_line_exit_2(cli, tiny_open_clip, tmp_path):
    digits = write_digits(tmp_path / "digits", 8)
    assert cli("embed", str(digits), "--model", str(tiny_open_clip), "--device", "cpu").code == 0
    base = ["finetune", "--model", str(tiny_open_clip), "--out", str(tmp_path / "o")]
    assert "--classes" in one_error_line(cli(*base))
    missing = cli(*base, "--classes", "a,b")
    line = one_error_line(missing)
    assert missing.code == 2 and "clipclust describe" in line and line.endswith("(--texts class)")
    bad = cli(*base, "--classes", "a,b", "--method", "reclip")
    assert bad.code == 2 and one_error_line(bad).endswith("--method: unknown fine-tuning method 'reclip': expected "
                                                          "latteclip or flyp")
    other = cli(*base, "--classes", "a,b", "--method", "flyp", "--alpha", "0.5")
    assert other.code == 2 and one_error_line(other).endswith("--alpha: applies to the latteclip method, not flyp")
    for flag in ("--class-template", "--template"):
        empty = cli(*base, "--classes", "a,b", flag, "")
        assert empty.code == 2 and one_error_line(empty) == (
            f"clipclust: error: empty {flag}; give a template such as 'This is digit <>'")
    wrong = cli(*base, "--classes", "a,b", "--texts", "class,caption")
    assert wrong.code == 2 and "--texts: unknown text kind 'caption'" in one_error_line(wrong)
    assert cli(*base, "--classes", "a,b", "--texts", "class", "--resume").code == 2


def test_interrupted_before_the_first_checkpoint_says_to_run_again(cli, tiny_open_clip, tmp_path, monkeypatch):
    from clipclust.commands.finetune import trainer
    def interrupted(self, *args):
        raise KeyboardInterrupt

    digits = write_digits(tmp_path / "digits", 8)
    assert cli("embed", str(digits), "--model", str(tiny_open_clip), "--device", "cpu").code == 0
    monkeypatch.setattr(trainer.Trainer, "zero_shot", interrupted)
    result = cli("finetune", "--model", str(tiny_open_clip), "--out", str(tmp_path / "o"), *TRAIN)
    assert result.code == 130 and "before the first checkpoint" in one_error_line(result)


def test_help_lists_each_methods_options_from_the_registry(cli):
    result = cli("finetune", "--help")
    assert result.code == 0
    text = " ".join(result.out.split())
    assert "LatteCLIP (class, image and group descriptions mixed into class prototypes" in text
    assert "--method <str> latteclip or flyp." in text
    for flag in ("--texts", "--image-descriptions", "--group-descriptions", "--alpha", "--momentum"):
        assert f"{flag} <" in text
    assert "--texts <str> Texts to mix: class, image and/or group (class always). [default: class,image,group]" in text
    assert "--momentum <float> Prototype momentum. [default: 0.99]" in text


def test_help_shows_the_common_options_then_one_section_per_method(cli):
    """The generator cluster's help uses: the common options, then each method under its name, flyp too."""
    result = cli("finetune", "--help")
    assert result.code == 0, result.err
    section = help_sections(result.out)
    assert list(section) == ["Options", "latteclip", "flyp"]
    assert section["Options"][:3] == ["--out", "--method", "--classes"] and "--template" in section["Options"]
    assert not {"--texts", "--alpha"} & set(section["Options"])
    assert section["latteclip"] == ["--texts", "--image-descriptions", "--group-descriptions", "--alpha", "--momentum"]
    assert section["flyp"] == []
    assert 'flyp:\n  FLYP + pseudo-labels: contrastive on "a photo of a {c}."' in result.out


def test_a_toy_methods_option_is_a_flag_under_its_heading_and_reaches_the_run(cli, monkeypatch):
    """A fine-tuning method brings its flag, its help section and its value without an edit in cli/."""
    from clipclust.errors import InputError
    from clipclust.methods.finetuning import FINETUNE_METHODS, FinetuneMethod, finetune_methods
    from clipclust.methods.registry import Option

    finetune_methods()
    monkeypatch.setitem(FINETUNE_METHODS, "toy", FinetuneMethod(
        "toy", "Toy", "for tests", objective=lambda options: None,
        options=(Option("weight", type=float, default=1.0, flag="toy-weight", short="W", help="how much"),)))
    shown = cli("finetune", "--help").out
    assert "toy:\n  Toy: for tests\n  -W, --toy-weight <float>  how much  [default: 1.0]" in shown
    other = cli("finetune", "--out", "o", "--classes", "a,b", "--method", "flyp", "-W", "2")
    assert other.code == 2 and one_error_line(other) == (
        "clipclust: error: --toy-weight: applies to the toy method, not flyp")
    seen = []

    def finetune(workspace, out, options, **kwargs):
        seen.append(options)
        raise InputError("seen")

    monkeypatch.setattr("clipclust.commands.finetune.finetune", finetune)
    result = cli("finetune", "--out", "o", "--classes", "a,b", "--method", "toy", "--toy-weight", "0.5")
    assert result.code == 2 and one_error_line(result) == "clipclust: error: seen"
    assert seen[0].method == "toy" and seen[0].options == {"weight": 0.5}
