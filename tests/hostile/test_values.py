"""Hostile numbers: nan and inf in every float option, a learning rate that makes training diverge, NaN rows
in a workspace, seeds, cluster counts, batch sizes and thread counts out of range, and the defaults --help
must show.

Every case runs the CLI and holds it to the promise (tests/hostile/conftest.py): the exit code, the exact
stderr lines (no traceback), and a workspace that still passes `check` with nothing lost.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .cases import NAME, Hostile, poison, template, ws  # noqa: F401

FLOAT_FLAGS = [
    ("describe", "--temperature"), ("describe", "--timeout"),
    ("cluster", "--temperature"), ("cluster", "--top-p"), ("cluster", "--timeout"), ("cluster", "--ratio"),
    ("cluster", "--lr"),
    ("finetune", "--lr"), ("finetune", "--weight-decay"), ("finetune", "--alpha"), ("finetune", "--momentum"),
    ("evaluate", "--test-fraction"), ("evaluate", "--temperature"),
    ("visualize", "--perplexity"),
]
"""Every option that takes a real number (test_every_float_option_is_listed keeps this complete)."""

REQUIRED = {"finetune": ("-o", "OUT", "--classes", "a,b"), "describe": ("--vlm", "http://127.0.0.1:9/v1")}


@pytest.mark.parametrize("value", ["nan", "inf"])
@pytest.mark.parametrize("command,flag", FLOAT_FLAGS, ids=[f"{c}{f}" for c, f in FLOAT_FLAGS])
def test_a_float_option_refuses_what_is_not_a_finite_number(ws: Hostile, command: str, flag: str, value: str):
    before = ws.snapshot()
    required = [ws.tmp / "tuned" if a == "OUT" else a for a in REQUIRED.get(command, ())]
    ws.run(command, *required, f"{flag}={value}", code=2, match=f"Invalid value for '{flag}'")
    ws.intact(before, same=True)


def test_every_float_option_is_listed(ws: Hostile):
    found = set()
    for command in ("embed", "describe", "cluster", "finetune", "evaluate", "visualize", "export", "merge"):
        text = ws.run(command, "--help").out
        found |= {(command, flag) for flag in re.findall(r"(--[a-z-]+) (?:<float|SECONDS)", text)}
    assert found == set(FLOAT_FLAGS)


# -- training that diverges, vectors that are not numbers


@pytest.fixture()
def tiny_clip_copy(ws: Hostile, open_clip_encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """`finetune -m TINY` trains a copy of the session's loaded tiny CLIP instead of loading it again."""
    import copy

    import clipclust.commands.finetune.train as train

    real = train.load_clip
    monkeypatch.setattr(train, "load_clip", lambda model, *a, **k: copy.deepcopy(open_clip_encoder)
                        if model == str(ws.model) else real(model, *a, **k))


def test_finetune_stops_when_training_diverges_and_keeps_the_last_good_checkpoint(ws: Hostile, tmp_path: Path,
                                                                                  tiny_clip_copy: None):
    from clipclust.models.checkpoint import read_record

    out = tmp_path / "tuned"
    before = ws.snapshot()
    ws.run("finetune", "-o", out, "-m", ws.model, "--classes", "0,1,2,3,4,5,6,7,8,9", "--texts", "class", "--lr", "1e6",
           "--warmup", "0", "--steps", "4", "--batch-size", "4", "--save-every", "1", "--device", "cpu",
           "--workers", "0", "--quiet", code=1,
           match=r"training diverged at step 2 \(the (loss is nan|weights are no longer finite numbers)\); the last "
                 r"checkpoint in .* \(step 1\) is kept; start again in a new folder with a smaller --lr")
    assert read_record(out)["step"] == 1
    ws.intact(before, same=True)


@pytest.mark.parametrize("command", [("evaluate", "--zero-shot"), ("cluster", "-k", "3", "--on", "zeroshot"),
                                     ("cluster", "-k", "3", "--name", NAME, "--force"), ("visualize", NAME),
                                     ("export", "--set", "image")],
                         ids=["evaluate-zero-shot", "cluster-zeroshot", "cluster-image", "visualize", "export"])
def test_stored_nan_rows_are_refused_by_every_reader(ws: Hostile, command: tuple[str, ...], tmp_path: Path):
    poison(ws, "zeroshot")
    poison(ws, "image")
    out = ("-o", tmp_path / "out.png") if command[0] == "visualize" else ("-o", tmp_path / "out.csv") \
        if command[0] == "export" else ()
    ws.run(*command, *out, code=2, match=r"set '(image|zeroshot:.*)' holds 3 rows with NaN or inf .*'clipclust check "
                                         "--repair' copies the workspace without them")


def test_check_reports_nan_rows_and_repair_drops_them(ws: Hostile):
    before = ws.snapshot()
    poison(ws, "image")
    verdict = ws.run("check", code=1, lines=0).out
    assert re.search(r"BROKEN: set \w+: 3 rows hold NaN or inf", verdict), verdict
    salvaged = ws.run("check", "--repair", code=1, lines=0).out
    assert "3 rows holding NaN or inf dropped" in salvaged
    repaired = ws.ws.with_name("ws.repaired.h5")
    after = ws.intact(ws.snapshot(repaired), cache=repaired)
    assert len(after.sets) == len(before.sets) and after.items == before.items


# -- whole numbers out of range


@pytest.mark.parametrize("k,code,match", [("13", 2, "larger than the 12 items"), ("12", 0, None),
                                          ("1", 2, "at least 2 clusters"), ("-3", 2, "-k"), ("2.5", 2, "-k")])
def test_k_against_the_number_of_items(ws: Hostile, k: str, code: int, match: str | None):
    before = ws.snapshot()
    ws.run("cluster", "-k", k, "--name", "k-test", code=code, match=match)
    ws.intact(before, same=code != 0)


SEEDED = {"cluster": ("-k", "3"), "describe": ("--vlm", "http://127.0.0.1:9/v1"), "evaluate": (),
          "finetune": ("-o", "OUT", "--classes", "a,b"), "visualize": (NAME, "-o", "OUT")}


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
@pytest.mark.parametrize("command", sorted(SEEDED))
def test_a_seed_outside_what_random_generators_take_is_refused(ws: Hostile, command: str, seed: str):
    before = ws.snapshot()
    args = [ws.tmp / "out.png" if a == "OUT" else a for a in SEEDED[command]]  # nothing lands in the cwd
    ws.run(command, *args, f"--seed={seed}", code=2, match=r"a seed is a whole number from 0 to 4294967295")
    ws.intact(before, same=True)


def test_a_huge_batch_size_is_just_one_batch(ws: Hostile):
    before = ws.snapshot()
    result = ws.run("embed", ws.images, "-m", ws.model, "--batch-size", str(10**9), "--json")
    assert result.json()["cached"] == 12
    ws.intact(before, same=True)


@pytest.mark.parametrize("args", [
    ("describe", "--vlm", "http://127.0.0.1:9/v1", "--threads", "0"),
    ("describe", "--vlm", "http://127.0.0.1:9/v1", "--concurrency", "0"),
    ("describe", "--vlm", "http://127.0.0.1:9/v1", "--max-tokens", "0"),
    ("cluster", "--method", "ictc", "-c", "x", "-k", "2", "--llm", "http://127.0.0.1:9/v1", "--threads", "0"),
    ("cluster", "--method", "ictc", "-c", "x", "-k", "2", "--llm", "http://127.0.0.1:9/v1", "--concurrency", "0"),
    ("embed", "IMAGES", "--workers", "0"),
    ("finetune", "-o", "OUT", "--classes", "a,b", "--batch-size", "1"),
], ids=["describe-threads", "describe-concurrency", "describe-max-tokens", "ictc-threads", "ictc-concurrency",
        "embed-workers", "finetune-batch-size"])
def test_a_count_below_its_minimum_is_refused(ws: Hostile, args: tuple[str, ...]):
    before = ws.snapshot()
    args = tuple({"IMAGES": str(ws.images), "OUT": str(ws.tmp / "tuned")}.get(a, a) for a in args)
    ws.run(*args, code=2, match=args[-2])
    ws.intact(before, same=True)


# -- help shows every default


HELP_DEFAULTS = [("cluster", "--linkage", "ward"), ("cluster", "--n-ctx", "4096"), ("cluster", "--n-gpu-layers", "0"),
                 ("cluster", "--threads", "auto"), ("cluster", "--concurrency", "4"), ("cluster", "--top-p", "1"),
                 ("cluster", "--timeout", "300"), ("describe", "--concurrency", "4"), ("describe", "--threads", "auto"),
                 ("describe", "--n-gpu-layers", "0"), ("describe", "--device", "auto"), ("describe", "--timeout", "300"),
                 ("finetune", "--workers", "auto"), ("finetune", "--model", "the image sets' model")]


@pytest.mark.parametrize("command,flag,default", HELP_DEFAULTS, ids=[f"{c}{f}" for c, f, _ in HELP_DEFAULTS])
def test_help_shows_the_default_of(ws: Hostile, command: str, flag: str, default: str):
    text = ws.run(command, "--help").out
    entry = re.search(rf"^  +(?:-\w, )?{flag} .*?(?=^  +-|\Z)", text, re.M | re.S)
    assert entry, text
    assert re.search(rf"\[default:\s+\(?{re.escape(default)}", " ".join(entry.group(0).split())), entry.group(0)
