"""Decoding every supported format and mode to RGB, and finding files, labels and class folders."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clipclust.core.images import UnreadableImage, apply_labels, decode_image, find_images, read_labels_csv
from clipclust.errors import InputError


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_formats_decode_to_rgb(fmt):
    image = decode_image(_encode(Image.new("RGB", (17, 9), (250, 10, 10)), fmt))
    assert image.mode == "RGB" and image.size == (17, 9)
    r, g, b = image.getpixel((8, 4))
    assert r > 200 and g < 60 and b < 60


def test_gif_takes_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buf.getvalue()).getpixel((4, 4))[0] > 200


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (30, 10), (0, 255, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    decoded = decode_image(_encode(image, "JPEG", exif=exif))
    assert decoded.size == (10, 30)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "I;16", "1", "CMYK"])
def test_modes_convert_to_rgb(mode):
    if mode == "I;16":
        source = Image.fromarray(np.full((6, 6), 65535, dtype=np.uint16))
        assert source.mode.startswith("I;16")
    else:
        source = Image.new("RGB", (6, 6), (255, 255, 255)).convert(mode)
    fmt = "TIFF" if mode in ("CMYK",) else "PNG"
    decoded = decode_image(_encode(source, fmt))
    assert decoded.mode == "RGB"
    assert min(decoded.getpixel((3, 3))) > 240  # white stays white (16-bit scaled, not clipped to 255/65535)


def test_transparent_pixels_composite_on_white():
    decoded = decode_image(_encode(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "PNG"))
    assert decoded.getpixel((1, 1)) == (255, 255, 255)


def test_corrupt_and_truncated_raise_unreadable():
    good = _encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    for data in (b"not an image", good[: len(good) // 3], b""):
        with pytest.raises(UnreadableImage):
            decode_image(data)


def test_find_images_recursive_with_folder_labels(tmp_path):
    for rel in ("cat/a.png", "cat/deep/b.jpg", "dog/c.webp", "top.bmp", ".hidden/x.png", "notes.txt", "dog/.d.png"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    found = {s.path.relative_to(tmp_path).as_posix(): s.label for s in find_images([tmp_path])}
    assert found == {"cat/a.png": "cat", "cat/deep/b.jpg": "cat", "dog/c.webp": "dog", "top.bmp": ""}
    explicit = find_images([tmp_path / "notes.txt"])  # an explicitly named file is always tried
    assert [s.path.name for s in explicit] == ["notes.txt"]
    with pytest.raises(InputError):
        find_images([tmp_path / "nope"])


def _find_images_with_os_walk(inputs, folder_labels=True):
    """The os.walk + Path implementation find_images replaced: the reference for identical behaviour."""
    import os
    from pathlib import Path

    from clipclust.core.images import IMAGE_EXTENSIONS

    found = {}
    for raw in inputs:
        root = Path(raw)
        if root.is_file():
            found.setdefault(str(root.resolve()), (str(root), ""))
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            folder = Path(dirpath)
            rel = folder.relative_to(root).parts
            label = rel[0] if folder_labels and rel else ""
            for name in sorted(filenames):
                if name.startswith(".") or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                    continue
                path = os.path.join(dirpath, name)
                real = os.path.realpath(path) if os.path.islink(path) else os.path.join(str(folder.resolve()), name)
                found.setdefault(real, (str(Path(path)), label))
    return sorted(found.items(), key=lambda kv: kv[1][0])


def test_find_images_matches_the_os_walk_version(tmp_path, monkeypatch):
    for rel in ("cat/a.PNG", "cat/deep/er/b.jpg", "dog/c.webp", "dog/.d.png", "top.bmp", ".hidden/x.png", "noext",
                "a.", "z/.cache/y.jpg", "z/q.tiff"):
        path = tmp_path / "data" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (tmp_path / "data" / "linked").symlink_to(tmp_path / "data" / "dog")  # a folder link: followed
    (tmp_path / "data" / "cat" / "again.png").symlink_to(tmp_path / "data" / "top.bmp")  # same content file twice
    monkeypatch.chdir(tmp_path / "data")
    for inputs in ([tmp_path / "data"], ["."], ["./cat", "dog/"], [str(tmp_path / "data") + "/", "cat/a.PNG"]):
        for labels in (True, False):
            got = [(s.real_path(), (str(s.path), s.label)) for s in find_images(inputs, folder_labels=labels)]
            assert got == _find_images_with_os_walk(inputs, labels), (inputs, labels)


def test_labels_csv_resolves_against_its_folder(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"x")
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("path,label\nimgs/a.png,zebra\n")
    sources = find_images([tmp_path / "imgs"])
    assert apply_labels(sources, read_labels_csv(csv_file)) == 1 and sources[0].label == "zebra"
    (tmp_path / "bad.csv").write_text("only-one-column\n")
    with pytest.raises(InputError, match="expected 'path,label'"):
        read_labels_csv(tmp_path / "bad.csv")


def test_large_jpeg_decodes_at_reduced_scale_and_keeps_its_size():
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated: 600 wide, 1000 high
    data = _encode(Image.new("RGB", (1000, 600), (10, 200, 10)), "JPEG", exif=exif)
    full = decode_image(data)
    small = decode_image(data, min_size=224)
    assert full.size == (600, 1000) and full.info["original_size"] == (600, 1000)
    assert small.info["original_size"] == (600, 1000)
    assert 224 <= min(small.size) < 600 and small.size[1] > small.size[0]  # 1/2 scale, still oriented
    png = decode_image(_encode(Image.new("RGB", (1000, 600)), "PNG"), min_size=224)
    assert png.size == (1000, 600)  # only JPEG has a cheap reduced decode


@pytest.mark.parametrize("exc", [IndexError("tile cannot extend outside image"), ZeroDivisionError("division by zero"),
                                 KeyError("PixelXDimension"), TypeError("bad tile")])
def test_any_error_pillow_raises_on_a_malformed_file_is_an_unreadable_image(monkeypatch, exc):
    from clipclust.core.images import UnreadableImage, decode_image

    def broken_open(*args, **kwargs):
        raise exc

    monkeypatch.setattr("clipclust.core.images.Image.open", broken_open)
    with pytest.raises(UnreadableImage):
        decode_image(b"\x89PNG whatever")
