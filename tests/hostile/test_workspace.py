"""Hostile workspace and output paths: --cache at the wrong thing, read-only places, full disks, odd names.

Read-only paths use a read-only bind mount where this machine allows one and otherwise inject EROFS into
the calls that write (tests/hostile/conftest.py: ``read_only``); full disks use a small tmpfs, or
RLIMIT_FSIZE where nothing can be mounted (``small_disk``).  Each test records the mode it used as the
``mode`` user property.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import pytest

from ..conftest import write_digits
from .conftest import N_IMAGES, Hostile, can_mount, read_only, small_disk, write_images

pytestmark = pytest.mark.usefixtures("single_thread", "shared_encoder")

NOT_A_WORKSPACE = "not a workspace: "


def command(name: str, h: Hostile) -> tuple:
    """The arguments of one command that opens the workspace (reading or writing)."""
    images = h.images or write_images(h.tmp / "images", 3)
    return {
        "info": ("info",),
        "check": ("check",),
        "embed": ("embed", images, "-m", h.model),
        "cluster": ("cluster", "-k", "2"),
        "export": ("export",),
        "visualize": ("visualize", "-o", h.tmp / "out" / "plot.png"),
    }[name]


COMMANDS = ("info", "check", "embed", "cluster", "export", "visualize")


def make_target(kind: str, tmp: Path) -> Path:
    """Something that is not a workspace, passed as --cache."""
    if kind == "folder":
        (tmp / "a-folder").mkdir()
        (tmp / "a-folder" / "keep.txt").write_text("mine")
        return tmp / "a-folder"
    if kind == "text":
        (tmp / "notes.h5").write_text("my notes, not a workspace\n")
        return tmp / "notes.h5"
    if kind == "empty":
        (tmp / "empty.h5").touch()
        return tmp / "empty.h5"
    if kind == "foreign-hdf5":
        with h5py.File(tmp / "other.h5", "w") as f:
            f["x"] = [1, 2, 3]
        return tmp / "other.h5"
    raise ValueError(kind)


def contents(path: Path) -> object:
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else path.read_bytes()


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("kind", ["folder", "text", "empty", "foreign-hdf5"])
def test_cache_pointing_at_something_that_is_not_a_workspace(hostile, tiny_open_clip, kind, name):
    h = hostile
    h.model = tiny_open_clip
    target = make_target(kind, h.tmp)
    before = contents(target)
    result = h.run(*command(name, h), cache=target, code=2, match=NOT_A_WORKSPACE)
    assert "--repair" not in result.err and "pass a workspace file" in result.err
    assert contents(target) == before
    assert not target.with_name(target.name + ".lock").exists()  # nothing left beside it


@pytest.mark.parametrize("name", ["info", "embed"])
def test_cache_pointing_at_a_named_pipe(hostile, tiny_open_clip, name):
    h = hostile
    h.model = tiny_open_clip
    os.mkfifo(h.tmp / "pipe.h5")
    h.spawn(*command(name, h), cache=h.tmp / "pipe.h5", code=2, timeout=60, match="not a regular file")
    assert not (h.tmp / "pipe.h5.lock").exists()


@pytest.mark.parametrize("args", [("info",), ("embed", "IMAGES"), ("cluster", "-k", "2"), ("check",),
                                  ("info", "--cache", "")], ids=["info", "embed", "cluster", "check", "after"])
def test_an_empty_cache_is_refused(embedded, args):
    h = embedded
    before = h.snapshot()
    cwd = os.getcwd()
    os.chdir(h.tmp)  # where ./clipclust.h5 would be made
    try:
        args = tuple(h.images if a == "IMAGES" else a for a in args)
        h.run(*args, cache="", code=2, match=r"--cache '' is empty")
    finally:
        os.chdir(cwd)
    assert not (h.tmp / "clipclust.h5").exists() and not (h.tmp / "clipclust.h5.lock").exists()
    h.intact(before, same=True)


@pytest.mark.parametrize("name", ["info", "check", "cluster", "export", "visualize"])
def test_a_missing_workspace_leaves_no_lock_file(hostile, name):
    h = hostile
    h.run(*command(name, h), code=2, match="no workspace")
    assert not h.ws.exists() and not Path(str(h.ws) + ".lock").exists()


def test_a_workspace_in_a_missing_folder(embedded):
    h = embedded
    h.run("embed", h.images, "-m", h.model, cache=h.tmp / "nope" / "ws.h5", code=2, match="does not exist")
    assert not (h.tmp / "nope").exists()


def test_clipclust_cache_set_to_a_folder(hostile, monkeypatch):
    h = hostile
    (h.tmp / "dir").mkdir()
    monkeypatch.setenv("CLIPCLUST_CACHE", str(h.tmp / "dir"))
    from clipclust.cli.app import main

    h.capsys.readouterr()
    code = main(["info"])
    err = h.capsys.readouterr().err.decode()
    assert code == 2 and err.startswith("clipclust: error: not a workspace: ") and len(err.splitlines()) == 1


def test_a_lock_file_that_is_a_folder(clustered):
    h = clustered
    before = h.snapshot()
    lock = Path(str(h.ws) + ".lock")
    lock.unlink(missing_ok=True)
    lock.mkdir()
    h.run("info", code=2, match="ws.h5.lock is a folder, so workspace .* cannot be locked; remove that folder")
    lock.rmdir()
    h.intact(before, same=True)


# -- read-only workspaces


def move_workspace(h: Hostile, folder: Path, keep_lock: bool = True) -> None:
    """Put the workspace (and its lock file) into ``folder``, alone there, for a mount of that folder."""
    folder.mkdir()
    shutil.move(str(h.ws), folder / "ws.h5")
    lock = Path(str(h.ws) + ".lock")
    if lock.exists():
        if keep_lock:
            shutil.move(str(lock), folder / "ws.h5.lock")
        else:
            lock.unlink()
    h.ws = folder / "ws.h5"


def new_image(h: Hostile) -> None:
    from PIL import Image

    Image.new("RGB", (20, 20), (17, 99, 201)).save(h.images / "3" / "new.png")


def _embed_new(h: Hostile) -> tuple:
    new_image(h)  # (the image folder is not the read-only one)
    return ("embed", h.images, "-m", h.model)


READ_ONLY_CASES = [
    ("embed new images", _embed_new, 2),
    ("cluster", lambda h: ("cluster", "-k", "2", "--name", "km2"), 2),
    ("tsne coordinates", lambda h: ("visualize", "km", "-o", h.tmp / "t.png"), 2),
    ("embed cached", lambda h: ("embed", h.images, "-m", h.model, "-p", "a photo of the digit <>", "--fuse", "label"),
     0),
    ("info", lambda h: ("info",), 0),
    ("check", lambda h: ("check",), 0),
    ("export", lambda h: ("export", "km"), 0),
    ("export a set", lambda h: ("export", "--set", "image", "-o", h.tmp / "image.csv"), 0),
    ("montage", lambda h: ("visualize", "km", "--kind", "montage", "-o", h.tmp / "m.png"), 0),
    ("evaluate", lambda h: ("evaluate", "km"), 0),
]


@pytest.mark.parametrize("what, args, code", READ_ONLY_CASES, ids=[c[0] for c in READ_ONLY_CASES])
def test_a_read_only_workspace_folder(clustered, monkeypatch, record_property, what, args, code):
    h = clustered
    move_workspace(h, h.tmp / "wsdir")
    before = h.snapshot()
    with read_only(h.tmp / "wsdir", monkeypatch) as mode:
        record_property("mode", mode)
        result = h.run(*args(h), code=code, match="is read-only here" if code else None)
        if code:
            assert "make it writable or pass another --cache" in result.err
    h.intact(before, same=True)


@pytest.mark.parametrize("keep_lock", [True, False], ids=["lock-file-there", "no-lock-file"])
def test_reading_a_read_only_workspace_with_or_without_its_lock_file(clustered, monkeypatch, record_property,
                                                                     keep_lock):
    h = clustered
    move_workspace(h, h.tmp / "wsdir", keep_lock=keep_lock)
    before = h.snapshot()
    with read_only(h.tmp / "wsdir", monkeypatch) as mode:
        record_property("mode", mode)
        assert "12 items" in h.run("info").out
    h.intact(before, same=True)


@pytest.mark.parametrize("what, code", [("embed", 2), ("cluster", 2), ("info", 0)])
def test_a_read_only_workspace_file_in_a_writable_folder(clustered, monkeypatch, record_property, what, code):
    h = clustered
    new_image(h)
    before = h.snapshot()
    args = {"embed": ("embed", h.images, "-m", h.model), "cluster": ("cluster", "-k", "2", "--name", "km2"),
            "info": ("info",)}[what]
    with read_only(h.ws, monkeypatch) as mode:
        record_property("mode", mode)
        h.run(*args, code=code, match="is read-only here" if code else None)
    h.intact(before, same=True)


# -- where results are written


OUTPUTS = {
    "visualize": lambda h, out: ("visualize", "km", "-o", out),
    "montage": lambda h, out: ("visualize", "km", "--kind", "montage", "-o", out),
    "export": lambda h, out: ("export", "km", "-o", out),
    "export-npy": lambda h, out: ("export", "--set", "image", "--format", "npy", "-o", out),
}


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_output_into_a_read_only_folder(clustered, monkeypatch, record_property, name):
    h = clustered
    (h.tmp / "shelf").mkdir()
    out = h.tmp / "shelf" / ("result.npy" if name == "export-npy" else "result.png")
    h.run("visualize", "km", "-o", h.tmp / "warm.png")  # coordinates stored before: only the PNG is refused
    before = h.snapshot()
    with read_only(h.tmp / "shelf", monkeypatch) as mode:
        record_property("mode", mode)
        h.run(*OUTPUTS[name](h, out), code=2, match=r"cannot write .*result.*Read-only file system; pass another "
                                                     r"--output")
    assert list((h.tmp / "shelf").iterdir()) == []
    h.intact(before, same=True)


@pytest.mark.parametrize("name", ["visualize", "export"])
def test_output_into_a_missing_folder_is_made(clustered, name):
    h = clustered
    before = h.snapshot()
    out = h.tmp / "new" / "deeper" / "result.csv"
    h.run(*OUTPUTS[name](h, out))
    assert out.is_file() and sorted(p.name for p in out.parent.iterdir()) == ["result.csv"]
    h.intact(before)


@pytest.mark.parametrize("name", ["visualize", "export"])
def test_output_under_a_file(clustered, name):
    h = clustered
    before = h.snapshot()
    (h.tmp / "plain").write_text("a file")
    h.run(*OUTPUTS[name](h, h.tmp / "plain" / "result.png"), code=2, match="plain is a file, not a folder")
    assert (h.tmp / "plain").read_text() == "a file"
    h.intact(before)


@pytest.mark.parametrize("name", ["visualize", "export"])
def test_output_that_is_a_folder(clustered, name):
    h = clustered
    before = h.snapshot()
    (h.tmp / "folder.png").mkdir()
    h.run(*OUTPUTS[name](h, h.tmp / "folder.png"), code=2, match="it is a folder; name a file with --output")
    assert list((h.tmp / "folder.png").iterdir()) == []
    h.intact(before)


@pytest.mark.parametrize("name", ["montage", "export", "export-npy"])
def test_output_on_a_full_disk_leaves_no_partial_file(clustered, record_property, name):
    h = clustered
    h.run("visualize", "km", "-o", h.tmp / "warm.png")
    before = h.snapshot()
    disk = h.tmp / "disk"
    mode = "tmpfs" if can_mount() else "rlimit"
    with small_disk(disk, 64 * 1024 if mode == "tmpfs" else 1024, mode=mode) as used:
        record_property("mode", used)
        if used == "tmpfs":
            (disk / "filler").write_bytes(b"\0" * (62 * 1024))
        out = disk / ("result.npy" if name == "export-npy" else "result.png")
        args = OUTPUTS[name](h, out)
        if name == "montage":  # a sheet bigger than what is left
            args = (*args, "--thumb", "128")
        h.run(*args, code=1, match="cannot write .*(No space left on device|File too large); nothing was left there")
        assert sorted(p.name for p in disk.iterdir()) == (["filler"] if used == "tmpfs" else [])
    h.intact(before, same=True)


# -- merge


@pytest.mark.parametrize("kind", ["foreign-hdf5", "text", "empty"])
def test_merging_a_file_that_is_not_a_workspace(clustered, kind):
    h = clustered
    before = h.snapshot()
    bad = make_target(kind, h.tmp)
    out = h.tmp / "merged.h5"
    result = h.run("merge", h.ws, bad, "-o", out, code=2, match=f"{bad.name}.* not a clipclust workspace|"
                                                               f"not a workspace: .*{bad.name}")
    assert "--cache" not in result.err and "leave it out" in result.err
    assert not out.exists() and not bad.with_name(bad.name + ".lock").exists()
    h.intact(before, same=True)


def test_merging_into_a_text_file(clustered):
    h = clustered
    before = h.snapshot()
    (h.tmp / "notes.h5").write_text("mine")
    result = h.run("merge", h.ws, "-o", h.tmp / "notes.h5", code=2, match="not a workspace: .*notes.h5")
    assert "--output" in result.err and "--cache" not in result.err
    assert (h.tmp / "notes.h5").read_text() == "mine"
    h.intact(before, same=True)


def test_merging_a_folder(clustered):
    h = clustered
    before = h.snapshot()
    (h.tmp / "d").mkdir()
    h.run("merge", h.ws, h.tmp / "d", "-o", h.tmp / "m.h5", code=2, match="no workspace file")
    h.intact(before, same=True)


# -- a damaged workspace and its repair


def test_a_truncated_workspace_is_repaired_and_says_what_it_lacks(clustered):
    h = clustered
    size = h.ws.stat().st_size
    os.truncate(h.ws, size * 2 // 3)
    broken = h.run("check", code=1, lines=0)
    assert "BROKEN" in broken.out and "--repair" in broken.out
    repair = h.run("check", "--repair", code=1, lines=0)
    assert "salvaged into" in repair.out and "not recovered" in repair.out
    repaired = h.ws.with_name("ws.repaired.h5")
    verdict = h.run("check", cache=repaired)
    assert ": ok (" in verdict.out and "it lacks what could not be recovered then: " in verdict.out
    assert verdict.out.count("\n") == 1
    assert h.run("--json", "check", cache=repaired).json()["lacks"]


# -- full disks under the workspace


@pytest.mark.parametrize("mode", ["tmpfs", "rlimit"])
def test_the_disk_fills_during_embed(embedded, record_property, mode):
    h = embedded
    if mode == "tmpfs" and not can_mount():
        pytest.skip("no tmpfs can be mounted here; the rlimit case covers a full disk")
    write_digits(h.tmp / "more", 40, offset=N_IMAGES)
    disk = h.tmp / "disk"
    size = h.ws.stat().st_size
    with small_disk(disk, size + 4 * 2**20 if mode == "tmpfs" else size + 1024, mode=mode) as used:
        record_property("mode", used)
        shutil.copy(h.ws, disk / "ws.h5")
        h.ws = disk / "ws.h5"
        before = h.snapshot()
        if used == "tmpfs":
            (disk / "filler").write_bytes(b"\0" * max(0, shutil.disk_usage(disk).free - 8192))
        result = h.run("embed", h.tmp / "more", "-m", h.model, "--batch-size", "8", code=1,
                       match=r"(No space left on device|File too large); the batch being written was undone")
        assert "free some space and run the same command again" in result.err
        if used == "tmpfs":
            (disk / "filler").unlink()
            h.intact(before)
            assert "40 images" in h.run("embed", h.tmp / "more", "-m", h.model).out  # resumed
    if used == "rlimit":
        h.intact(before)
        assert "40 images" in h.run("embed", h.tmp / "more", "-m", h.model).out  # resumed


@pytest.mark.parametrize("mode", ["tmpfs", "rlimit"])
def test_the_disk_fills_during_cluster(clustered, record_property, mode):
    h = clustered
    if mode == "tmpfs" and not can_mount():
        pytest.skip("no tmpfs can be mounted here; the rlimit case covers a full disk")
    disk = h.tmp / "disk"
    size = h.ws.stat().st_size
    with small_disk(disk, size + 4 * 2**20 if mode == "tmpfs" else size, mode=mode) as used:
        record_property("mode", used)
        shutil.copy(h.ws, disk / "ws.h5")
        h.ws = disk / "ws.h5"
        before = h.snapshot()
        if used == "tmpfs":
            (disk / "filler").write_bytes(b"\0" * max(0, shutil.disk_usage(disk).free - 4096))
        h.run("cluster", "-k", "4", "--name", "km4", code=1, match="(No space left on device|File too large)")
        if used == "tmpfs":
            (disk / "filler").unlink()
            h.intact(before, same=True)
            h.run("cluster", "-k", "4", "--name", "km4")
    if used == "rlimit":
        h.intact(before, same=True)
        h.run("cluster", "-k", "4", "--name", "km4")


# -- odd but valid workspace paths


ODD_CASES = ["embed", "cluster", "info", "export", "visualize", "check"]


@pytest.mark.parametrize("name", ODD_CASES)
def test_a_workspace_on_a_path_with_spaces_and_unicode(clustered, name):
    h = clustered
    odd = h.tmp / "my wörk spåce ✓" / "données 2024 (copy).h5"
    odd.parent.mkdir()
    shutil.move(str(h.ws), odd)
    h.ws = odd
    before = h.snapshot()
    new_image(h)
    args = {"embed": ("embed", h.images, "-m", h.model), "cluster": ("cluster", "-k", "2", "--name", "km2"),
            "info": ("info",), "export": ("export", "km", "-o", odd.parent / "ré sult.csv"),
            "visualize": ("visualize", "km", "-o", odd.parent / "plot ✓.png"), "check": ("check",)}[name]
    h.run(*args)
    h.intact(before)


def test_a_workspace_name_that_is_not_utf8(clustered):
    h = clustered
    odd = Path(os.fsdecode(os.path.join(os.fsencode(h.tmp), b"w\xe9rk.h5")))
    shutil.move(str(h.ws), odd)
    h.ws = odd
    before = h.snapshot()
    new_image(h)
    h.run("embed", h.images, "-m", h.model)
    h.run("cluster", "-k", "2", "--name", "km2")
    h.intact(before)


def test_a_workspace_reached_through_a_link(clustered):
    h = clustered
    before = h.snapshot()
    link = h.tmp / "link.h5"
    link.symlink_to(h.ws)
    new_image(h)
    h.run("embed", h.images, "-m", h.model, cache=link)
    h.run("info", cache=link)
    assert link.is_symlink()
    h.intact(before)
