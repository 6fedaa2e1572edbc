"""`clipclust embed` as a user runs it: summaries, JSON, exit codes and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image


def test_embed_then_rerun_says_nothing_new(cli, digits_dir, tiny_open_clip):
    first = cli("embed", str(digits_dir), "-m", str(tiny_open_clip), "-p", "This is digit <>", "--device", "cpu")
    assert first.code == 0, first.err
    assert first.out.startswith("40 images: 40 new, 0 cached; 10 prompt texts encoded")
    again = cli("--json", "embed", str(digits_dir), "-m", str(tiny_open_clip), "-p", "This is digit <>")
    assert again.code == 0
    data = again.json()
    assert (data["new"], data["cached"], data["model_loaded"]) == (0, 40, False)
    plain = cli("embed", str(digits_dir), "-m", str(tiny_open_clip), "-p", "This is digit <>")
    assert "0 new, 40 cached" in plain.out


def test_skipped_files_are_warned_and_counted(cli, digits_dir, tiny_open_clip):
    (digits_dir / "1" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = cli("embed", str(digits_dir), "-m", str(tiny_open_clip))
    assert result.code == 0
    assert "1 skipped (see the warnings)" in result.out
    assert "warning: skipped" in result.err and "broken.jpg" in result.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["embed", "MISSING"], "no such file or folder: "),
        (["embed", "EMPTY"], "no images found in"),
        (["embed", "DIGITS", "--fuse", "sideways"], "--fuse sideways: expected one of"),
        (["embed", "DIGITS", "--agnostic", "builtin:nope"], "unknown built-in prompt set"),
        (["embed", "DIGITS", "--classes", "a,a", "-p", "x <>"], "duplicate class names: a"),
        (["embed", "DIGITS", "--labels", "NOCSV"], "labels file not found"),
        (["embed", "DIGITS", "--model", "NotAnArch/some-tag"], "unknown open_clip architecture"),
        (["embed", "DIGITS", "--model", "plainword"], "unknown model 'plainword'"),
        (["embed", "DIGITS", "--device", "cuda:3"], "no CUDA device"),
        (["embed", "DIGITS", "--precision", "fp16", "--device", "cpu"], "fp16 is not supported on CPU"),
        (["embed", "DIGITS", "--batch-size", "0"], "--batch-size"),
        (["embed", "DIGITS", "--no-such-option"], "No such option: --no-such-option"),
        (["info"], "no workspace at"),
        (["embed", "DIGITS", "--model", "ViT-B-32/laion2b_s34b_b79k"], "could not load model 'ViT-B-32/laion2b_s34b_b79k'"),
        (["embed", "DIGITS", "--model", "hf:openai/clip-vit-base-patch32"], "pass a local path instead: --model DIR"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path, digits_dir, tiny_open_clip, args, message):
    (tmp_path / "empty").mkdir()
    subs = {"MISSING": str(tmp_path / "missing"), "EMPTY": str(tmp_path / "empty"), "DIGITS": str(digits_dir),
            "NOCSV": str(tmp_path / "no.csv")}
    argv = [subs.get(a, a) for a in args]
    if "--model" not in argv and argv[0] == "embed":
        argv += ["--model", str(tiny_open_clip)]
    result = cli(*argv)
    assert result.code == 2
    lines = [ln for ln in result.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("clipclust: error: ") and message in lines[0], result.err


def test_only_unreadable_files_is_exit_2(cli, tmp_path, tiny_open_clip):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.png").write_text("text, not pixels")
    result = cli("--quiet", "embed", str(folder), "-m", str(tiny_open_clip))
    assert result.code == 2 and "could be decoded" in result.err


def test_workspace_that_is_not_hdf5_is_reported(cli, tmp_path, digits_dir, tiny_open_clip):
    bad = tmp_path / "bad.h5"
    bad.write_text("hello")
    result = cli("embed", str(digits_dir), "-m", str(tiny_open_clip), cache=bad)
    assert result.code == 2 and "not a workspace: " in result.err and "--repair" not in result.err
    assert bad.read_text() == "hello" and not (tmp_path / "bad.h5.lock").exists()


def test_every_command_help_has_an_example(cli):
    from clipclust.cli.app import app
    import typer

    names = [c.name for c in typer.main.get_command(app).commands.values()]
    assert {"embed", "info"} <= set(names)
    for name in names:
        result = cli(name, "--help")
        assert result.code == 0 and "Example" in result.out, name


def test_store_dtype_float16_and_a_bad_one(cli, digits_dir, tiny_open_clip, tmp_path):
    res = cli("--json", "embed", str(digits_dir), "-m", str(tiny_open_clip), "--store-dtype", "float16")
    assert res.code == 0 and res.json()["new"] == 40
    import h5py

    with h5py.File(tmp_path / "ws.h5", "r") as f:
        assert {g["data"].dtype.name for g in f["sets"].values()} == {"float16"}
    bad = cli("embed", str(digits_dir), "-m", str(tiny_open_clip), "--store-dtype", "int8")
    assert bad.code == 2 and bad.err.count("\n") == 1 and "store dtype 'int8'" in bad.err


def test_store_fused_keeps_fused_rows_in_the_file(cli, digits_dir, tiny_open_clip, tmp_path):
    for flag, derived in (([], True), (["--store-fused"], False)):
        cache = tmp_path / f"ws{len(flag)}.h5"
        result = cli("embed", str(digits_dir), "-m", str(tiny_open_clip), "-p", "This is digit <>", *flag, cache=cache)
        assert result.code == 0, result.err
        fused = [s for s in cli("--json", "info", cache=cache).json()["sets"] if s["kind"].startswith("fused-")]
        assert len(fused) == 2 and all(s["derived"] is derived and s["shape"] == [40, 32] for s in fused)
        assert all((s["bytes_not_stored"] > 0) is derived for s in fused)


def test_library_errors_name_this_commands_flags(cli, tmp_path, tiny_open_clip):
    """Errors the library raises with setting references read as embed's own flags (--prompt, --labels)."""
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    res = cli("embed", str(flat), "-m", str(tiny_open_clip), "-p", "x <>")
    assert res.code == 2
    assert "--prompt needs class names: pass --classes a,b,c or --classes-file, or use label folders" in res.err
    labels = tmp_path / "labels.csv"
    labels.write_text("elsewhere.png,x\n")
    res = cli("embed", str(flat), "-m", str(tiny_open_clip), "--labels", str(labels))
    assert res.code == 2 and f"--labels {labels}: none of its paths matches an input image" in res.err
    res = cli("embed", str(flat), "-m", str(tiny_open_clip), "-p", " ", "--classes", "a,b")
    assert res.code == 2 and "empty --prompt; give a template such as 'This is digit <>'" in res.err
