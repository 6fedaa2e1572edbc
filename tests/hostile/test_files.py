"""Hostile image folders, driven through `clipclust embed`: what a real photo folder holds.

Each case: the exit code, the exact number of stderr lines (one warning per file skipped or copy kept
apart, one error line for a refusal), no traceback, and the workspace still checks with nothing lost.
Cases where a hang is the point (link loops, named pipes) run in a subprocess that is killed and failed
after a timeout; a cached re-run loads no model, so they cost a second each.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import Hostile, inject_oserror, write_images

pytestmark = pytest.mark.usefixtures("single_thread", "shared_encoder")


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (20, 14), colour: tuple[int, ...] = (200, 30, 30),
                mode: str = "RGB", **kw) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour if mode != "L" else colour[0]).save(buf, fmt, **kw)
    return buf.getvalue()


def add(folder: Path, name: str | bytes, data: bytes) -> Path:
    """Write ``data`` as folder/name (a bytes name may be any bytes the file system takes)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(name))))
    path.write_bytes(data)
    return path


def embed(h: Hostile, *inputs, code: int = 0, lines: int | None = None, match: str | None = None, extra=(),
          spawn: bool = False, **kw):
    args = ("embed", *(inputs or (h.images,)), "-m", h.model, *extra)
    return (h.spawn if spawn else h.run)(*args, code=code, lines=lines, match=match, **kw)


def counts(result) -> tuple[int, int]:
    """(new, cached) from the summary line."""
    import re

    m = re.search(r"(\d+) new, (\d+) cached", result.out)
    assert m, result.out
    return int(m.group(1)), int(m.group(2))


# -- 1. no hang: links that loop, named pipes and other files that are not regular


def test_two_symlink_loops_are_walked_once(embedded):
    h = embedded
    before = h.snapshot()
    (h.images / "1" / "loop").symlink_to("..")  # two links back to the root: 2^40 paths before ELOOP stops one
    (h.images / "2" / "back").symlink_to(h.images)
    result = embed(h, spawn=True, timeout=60)
    assert counts(result) == (0, 12)
    h.intact(before, same=True)


def test_link_to_the_parent_of_the_folder(embedded):
    h = embedded
    before = h.snapshot()
    (h.images / "3" / "up").symlink_to(h.images.parent)
    assert counts(embed(h, spawn=True, timeout=60)) == (0, 12)
    h.intact(before, same=True)


def test_two_links_to_one_folder_find_its_files_once(embedded):
    h = embedded
    before = h.snapshot()
    (h.images / "alias-a").symlink_to(h.images / "5")
    (h.images / "alias-b").symlink_to(h.images / "5")
    assert counts(embed(h)) == (0, 12)
    h.intact(before, same=True)


def test_a_named_pipe_is_skipped_unopened(embedded):
    h = embedded
    before = h.snapshot()
    os.mkfifo(h.images / "0" / "pipe.png")
    result = embed(h, spawn=True, timeout=60, lines=1, match=r"pipe\.png: not a regular file \(a named pipe\)")
    assert counts(result) == (0, 12) and "1 skipped" in result.out
    h.intact(before, same=True)


def test_a_named_pipe_named_on_the_command_line(embedded):
    h = embedded
    before = h.snapshot()
    os.mkfifo(h.tmp / "pipe.png")
    embed(h, h.tmp / "pipe.png", h.images, spawn=True, timeout=60, lines=1, match="pipe.png: not a regular file")
    h.intact(before, same=True)


def test_a_named_pipe_among_paths_read_from_stdin(embedded):
    h = embedded
    before = h.snapshot()
    os.mkfifo(h.tmp / "pipe.png")
    embed(h, "-", spawn=True, timeout=60, lines=1, match="pipe.png: not a regular file",
          stdin=f"{h.tmp / 'pipe.png'}\n{h.images}\n")
    h.intact(before, same=True)


def test_a_folder_holding_only_a_named_pipe(embedded):
    h = embedded
    before = h.snapshot()
    (h.tmp / "pipes").mkdir()
    os.mkfifo(h.tmp / "pipes" / "p.png")
    embed(h, h.tmp / "pipes", spawn=True, timeout=60, code=2, match="no images found in .*1 skipped, .*named pipe")
    h.intact(before, same=True)


def test_a_socket_is_skipped_unopened(embedded):
    h = embedded
    before = h.snapshot()
    sock = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    os.chdir(h.images / "4")  # a socket path is limited to ~100 bytes: bind by a relative name
    try:
        sock.bind("sock.png")
        embed(h, lines=1, match=r"sock\.png: not a regular file \(a socket\)")
    finally:
        os.chdir(cwd)
        sock.close()
    h.intact(before, same=True)


def test_a_link_to_a_device_is_skipped_unopened(embedded):
    h = embedded
    before = h.snapshot()
    (h.images / "6" / "null.png").symlink_to("/dev/null")
    embed(h, lines=1, match=r"null\.png: not a regular file \(a character device\)")
    h.intact(before, same=True)


def test_a_broken_link_is_skipped(embedded):
    h = embedded
    before = h.snapshot()
    (h.images / "7" / "gone.png").symlink_to(h.tmp / "nowhere.png")
    embed(h, lines=1, match=r"gone\.png: a broken link")
    h.intact(before, same=True)


def test_a_broken_link_named_on_the_command_line(embedded):
    h = embedded
    before = h.snapshot()
    (h.tmp / "gone.png").symlink_to(h.tmp / "nowhere.png")
    embed(h, h.tmp / "gone.png", code=2, match="no such file or folder")
    h.intact(before, same=True)


def test_a_link_to_an_image_outside_the_folder(embedded):
    h = embedded
    before = h.snapshot()
    outside = add(h.tmp / "elsewhere", "red.png", image_bytes())
    (h.images / "8" / "link.png").symlink_to(outside)
    assert counts(embed(h)) == (1, 12)
    h.intact(before)


# -- folder shapes


def test_a_folder_named_like_an_image(embedded):
    h = embedded
    before = h.snapshot()
    add(h.images / "9" / "x.png", "inside.png", image_bytes(colour=(1, 2, 250)))
    assert counts(embed(h)) == (1, 12)
    h.intact(before)


def test_nesting_deeper_than_the_recursion_limit(embedded):
    h = embedded
    before = h.snapshot()
    levels = [os.path.join(h.images, "2", *["d"] * n) for n in range(1, 1101)]
    for level in levels:  # one by one: os.makedirs, pathlib and shutil.rmtree recurse per level
        os.mkdir(level)
    deep_png = os.path.join(levels[-1], "deep.png")
    with open(deep_png, "wb") as fh:
        fh.write(image_bytes(colour=(9, 200, 9)))
    try:
        assert counts(embed(h)) == (1, 12)
        h.intact(before)
    finally:
        os.unlink(deep_png)
        for level in reversed(levels):
            os.rmdir(level)


def test_ten_thousand_tiny_files(embedded):
    h = embedded
    before = h.snapshot()
    data = (h.images / "0" / "0000.png").read_bytes()
    many = h.images / "0" / "many"
    many.mkdir()
    for i in range(10_000):
        (many / f"{i:05d}.png").write_bytes(data)
    result = embed(h, guard=120)
    assert counts(result) == (0, 12) and "10000 duplicate files stored once" in result.out
    h.intact(before, same=True)


def test_an_empty_folder(embedded):
    h = embedded
    before = h.snapshot()
    (h.tmp / "empty").mkdir()
    embed(h, h.tmp / "empty", code=2, match="no images found in")
    h.intact(before, same=True)


def test_a_folder_of_only_non_images(embedded):
    h = embedded
    before = h.snapshot()
    for name in ("notes.txt", "data.csv", "movie.mp4", "README", ".DS_Store", "Thumbs.db"):
        add(h.tmp / "docs", name, b"hello")
    embed(h, h.tmp / "docs", code=2, match="no images found in")
    h.intact(before, same=True)


def test_a_folder_of_only_hidden_images(embedded):
    h = embedded
    before = h.snapshot()
    add(h.tmp / "hidden", ".a.png", image_bytes())
    add(h.tmp / "hidden" / ".cache", "b.png", image_bytes())
    embed(h, h.tmp / "hidden", code=2, match="no images found in")
    h.intact(before, same=True)


def test_a_missing_path(embedded):
    h = embedded
    before = h.snapshot()
    embed(h, h.tmp / "no-such-folder", code=2, match="no such file or folder")
    h.intact(before, same=True)


def test_a_folder_with_spaces_and_unicode_in_its_name(embedded):
    h = embedded
    before = h.snapshot()
    folder = h.tmp / "my phötos ✓ 2024" / "Straße café"
    add(folder, "Ünïcode  spaced.png", image_bytes(colour=(10, 10, 240)))
    add(folder, "new\nline.png", image_bytes(colour=(240, 240, 10)))
    assert counts(embed(h, folder.parent)) == (2, 0)
    h.intact(before)


def test_a_file_name_that_is_not_utf8(embedded):
    h = embedded
    before = h.snapshot()
    add(h.images / "3", b"caf\xe9 \xff.png", image_bytes(colour=(30, 130, 230)))
    assert counts(embed(h)) == (1, 12)
    assert counts(embed(h)) == (0, 13)  # re-runs work: the stored path is the file's own name
    after = h.intact(before)
    (new,) = set(after.items) - set(before.items)
    assert os.path.exists(after.items[new][0])
    out = h.tmp / "out.csv"
    h.run("export", "--set", "image", "-o", out)
    assert b"caf\xe9 \xff.png" in out.read_bytes()


def test_a_class_folder_name_that_is_not_utf8(embedded):
    h = embedded
    before = h.snapshot()
    add(Path(os.fsdecode(os.path.join(os.fsencode(h.images), b"\xe9t\xe9"))), "sun.png", image_bytes(colour=(250, 200, 0)))
    assert counts(embed(h)) == (1, 12)
    after = h.intact(before)
    (new,) = set(after.items) - set(before.items)
    assert after.items[new][1] == "\\xe9t\\xe9"  # a readable, distinct label


def test_a_permission_denied_subfolder(embedded, monkeypatch):
    """Root reads any folder: the EACCES a user would meet is injected into os.scandir for that folder."""
    h = embedded
    before = h.snapshot()
    locked = h.images / "5" / "private"
    add(locked, "secret.png", image_bytes(colour=(50, 50, 50)))
    inject_oserror(monkeypatch, os, "scandir", locked)
    embed(h, lines=1, match=r"private: folder not readable \(Permission denied\)")
    h.intact(before, same=True)


def test_a_permission_denied_image_folder(embedded, monkeypatch):
    h = embedded
    before = h.snapshot()
    inject_oserror(monkeypatch, os, "scandir", h.images)
    embed(h, code=2, match="cannot read folder .*Permission denied")
    h.intact(before, same=True)


def test_a_permission_denied_file(embedded, monkeypatch):
    """The EACCES is injected into os.open for that file (root opens anything)."""
    h = embedded
    before = h.snapshot()
    locked = add(h.images / "6", "locked.png", image_bytes(colour=(70, 20, 70)))
    inject_oserror(monkeypatch, os, "open", locked)
    embed(h, lines=1, match=r"locked\.png: Permission denied")
    h.intact(before, same=True)


# -- files that are not what their name says


@pytest.mark.parametrize("name, data, match", [
    ("zero.png", b"", r"zero\.png: an empty file \(0 bytes\)"),
    ("text.png", b"just some text, no pixels", r"text\.png: not an image PIL can read"),
    ("page.jpg", b"<!DOCTYPE html><html><body>404</body></html>", r"page\.jpg: not an image PIL can read"),
    ("cut.png", image_bytes(size=(64, 64))[:60], r"cut\.png: "),
    ("cut.jpg", image_bytes("JPEG", size=(64, 64))[:200], r"cut\.jpg: "),
], ids=["zero-byte", "text", "html", "truncated-png", "truncated-jpeg"])
def test_a_file_that_is_not_a_readable_image(embedded, name, data, match):
    h = embedded
    before = h.snapshot()
    add(h.images / "1", name, data)
    result = embed(h, lines=1, match=match)
    assert "BytesIO" not in result.err and "1 skipped" in result.out
    embed(h, lines=1, match=match)  # remembered: the re-run skips it unread, and says so again
    h.intact(before, same=True)


ODD_IMAGES = [
    ("really-a-png.jpg", image_bytes("PNG")),
    ("really-a-jpeg.png", image_bytes("JPEG")),
    ("SHOUTING.PNG", image_bytes("PNG", colour=(5, 250, 5))),
    ("sixteen-bit.png", None),
    ("palette-alpha.png", None),
    ("animated.gif", None),
    ("one-pixel.png", image_bytes(size=(1, 1))),
    ("ribbon.png", image_bytes(size=(4000, 1))),
    ("cmyk.jpg", image_bytes("JPEG", mode="CMYK", colour=(0, 200, 200, 0))),
]  # data None: made in the test


@pytest.mark.parametrize("name, data", ODD_IMAGES, ids=[name for name, _ in ODD_IMAGES])
def test_an_odd_but_valid_image_is_embedded(embedded, name, data):
    h = embedded
    before = h.snapshot()
    if name == "sixteen-bit.png":
        buf = io.BytesIO()
        Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20).save(buf, "PNG")
        data = buf.getvalue()
    elif name == "palette-alpha.png":
        buf = io.BytesIO()
        im = Image.new("P", (16, 16), 1)
        im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        im.save(buf, "PNG", transparency=0)
        data = buf.getvalue()
    elif name == "animated.gif":
        buf = io.BytesIO()
        frames = [Image.new("RGB", (12, 12), c) for c in ((255, 0, 0), (0, 0, 255))]
        frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
        data = buf.getvalue()
    add(h.images / "8", name, data)
    assert counts(embed(h)) == (1, 12)
    h.intact(before)


# -- copies, moves and files that change under the run


def test_a_copy_of_a_stored_image_in_another_class_folder(embedded):
    h = embedded
    before = h.snapshot()
    original = h.images / "4" / "0004.png"
    other = h.tmp / "other"
    shutil.copy(original, add(other / "7", "copy.png", b""))
    result = embed(h, other, lines=1, match=r"1 file\(s\) are copies .*copy\.png is .*0004\.png \(label '4'\)")
    assert counts(result) == (0, 0)
    h.intact(before, same=True)  # the stored label and path are the first ones
    assert counts(embed(h)) == (0, 12)


def test_copies_under_two_labels_in_one_run(embedded):
    h = embedded
    before = h.snapshot()
    data = image_bytes(colour=(123, 45, 67))
    add(h.images / "2", "twin.png", data)
    add(h.images / "9", "twin.png", data)
    result = embed(h, lines=1, match=r"1 file\(s\) are copies .*9/twin\.png is .*2/twin\.png \(label '2'\)")
    assert counts(result) == (1, 12)
    h.intact(before)


def test_a_moved_image_follows_its_file(embedded):
    h = embedded
    before = h.snapshot()
    moved = h.images / "extra" / "0005.png"
    moved.parent.mkdir()
    (h.images / "5" / "0005.png").rename(moved)
    assert counts(embed(h)) == (0, 12)
    sha = next(s for s, row in before.items.items() if row[0].endswith("/5/0005.png"))
    after = h.intact(before, changed={sha})
    assert after.items[sha][:2] == (str(moved), "extra")


def test_a_file_that_changes_between_hashing_and_decoding(embedded, monkeypatch):
    """Rewritten after the hash stage: the item stored is the content decoded, under its own hash."""
    import clipclust.commands.embed.embedding as embedding

    h = embedded
    before = h.snapshot()
    target = add(h.images / "3", "moving.png", image_bytes(colour=(1, 1, 1)))
    real_hash = embedding.hash_sources

    def hash_then_change(*args, **kwargs):
        hashed = real_hash(*args, **kwargs)
        target.write_bytes(image_bytes(size=(33, 21), colour=(250, 250, 250)))
        return hashed

    monkeypatch.setattr(embedding, "hash_sources", hash_then_change)
    assert counts(embed(h)) == (1, 12)
    monkeypatch.setattr(embedding, "hash_sources", real_hash)
    assert counts(embed(h)) == (0, 13)  # what was stored is what the file holds now
    h.intact(before)


def test_a_file_that_changes_while_it_is_read(embedded, monkeypatch):
    """Rewritten between the header read and the full read: skipped for this run, embedded by the next."""
    import clipclust.commands.embed.images as stage

    h = embedded
    before = h.snapshot()
    target = add(h.images / "3", "torn.png", image_bytes(colour=(1, 1, 1)))
    real_probe = stage.probe_image

    def probe_then_change(fh, *args, **kwargs):
        size = real_probe(fh, *args, **kwargs)
        if _is(fh, target):
            with open(target, "ab") as out:
                out.write(b"\0" * 100)
        return size

    monkeypatch.setattr(stage, "probe_image", probe_then_change)
    result = embed(h, lines=1, match=r"torn\.png: it changed while it was being read; re-run to embed it")
    assert counts(result) == (0, 12)
    monkeypatch.setattr(stage, "probe_image", real_probe)
    assert counts(embed(h)) == (1, 12)  # not remembered as unreadable
    h.intact(before)


def _is(fh, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
    except OSError:
        return False


def test_a_file_deleted_before_it_is_decoded(embedded, monkeypatch):
    import clipclust.commands.embed.embedding as embedding

    h = embedded
    before = h.snapshot()
    target = add(h.images / "0", "fleeting.png", image_bytes(colour=(90, 10, 200)))
    data = target.read_bytes()
    real_hash = embedding.hash_sources

    def hash_then_delete(*args, **kwargs):
        hashed = real_hash(*args, **kwargs)
        target.unlink()
        return hashed

    monkeypatch.setattr(embedding, "hash_sources", hash_then_delete)
    embed(h, lines=1, match=r"fleeting\.png: No such file or directory")
    monkeypatch.setattr(embedding, "hash_sources", real_hash)
    target.write_bytes(data)
    assert counts(embed(h)) == (1, 12)  # back again: embedded, not remembered as unreadable
    h.intact(before)


def test_a_new_image_set_in_a_workspace_of_another_folder(embedded):
    """Not hostile, the baseline the others are measured against: a second folder adds its images."""
    h = embedded
    before = h.snapshot()
    write_images(h.tmp / "more", 3)
    for p in (h.tmp / "more").rglob("*.png"):
        im = Image.open(p).convert("RGB")
        im.putpixel((0, 0), (1, 2, 3))
        im.save(p)
    assert counts(embed(h, h.tmp / "more")) == (3, 0)
    h.intact(before)


# -- descriptions imported for image files


def _import(h: Hostile, records: list[dict], **kw):
    import json

    source = h.tmp / "descriptions.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    return h.run("describe", "--from", source, "--path-field", "path", **kw)


def test_identical_descriptions_for_images_that_are_not_there(embedded):
    h = embedded
    before = h.snapshot()
    records = [{"path": str(h.tmp / "gone" / f"{i}.png"), "text": "a cat on a mat"} for i in (1, 2)]
    result = _import(h, records, lines=1, match=r"2 record\(s\) name a path that is neither a stored item nor an "
                     r"image file .*1 record\(s\) skipped, e.g. descriptions.jsonl record 2: the same text as "
                     r"descriptions.jsonl record 1; a description with no image is keyed by its text")
    assert "1 text-only items, 1 skipped" in result.out
    h.intact(before)


def test_identical_descriptions_for_two_stored_images(embedded):
    h = embedded
    before = h.snapshot()
    paths = [next(p for p, lab, _ in before.items.values() if lab == d) for d in ("0", "1")]
    result = _import(h, [{"path": p, "text": "a digit"} for p in paths])
    assert "2 matched to images, 0 text-only items, 0 skipped" in result.out
    h.intact(before)


def test_two_descriptions_of_one_image(embedded):
    h = embedded
    before = h.snapshot()
    path = next(iter(before.items.values()))[0]
    _import(h, [{"path": path, "text": "first"}, {"path": path, "text": "second"}], lines=1,
            match=r"1 record\(s\) skipped, e.g. descriptions.jsonl record 2: a second description of .* \(the first, "
                  r"descriptions.jsonl record 1, is kept\)")
    h.intact(before)
