"""One file or flag that would blow up memory: decoding limits (--max-pixels) and montage sizes.

An image over the limit is skipped and counted from its header, before its pixels are read, so these
cases cost milliseconds where the images they use would take gigabytes to decode.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from .conftest import Hostile

pytestmark = pytest.mark.usefixtures("single_thread", "shared_encoder")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def grey_png(width: int, height: int, full: bool = True) -> bytes:
    """A greyscale PNG of width x height black pixels, compressed row by row (20000 x 20000 is 389 KB); with
    ``full=False`` only its header is right (its pixel data is cut short)."""
    row = b"\0" * (width + 1)
    if full:
        z = zlib.compressobj(9)
        data = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    else:
        data = zlib.compress(row)
    head = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + head + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def bomb_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 20000 x 20000 PNG: Pillow's decompression-bomb guard let exactly its 400M pixels (4.4 GB) through."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(grey_png(20000, 20000))
    return path


def image_bytes(fmt: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (180, 60, 20)).save(buf, fmt)
    return buf.getvalue()


def embed(h: Hostile, *extra, **kw):
    return h.run("embed", h.images, "-m", h.model, *extra, **kw)


def test_one_20000_by_20000_png(embedded, bomb_png):
    h = embedded
    before = h.snapshot()
    (h.images / "0" / "bomb.png").write_bytes(bomb_png.read_bytes())
    result = embed(h, lines=1, match=r"bomb\.png: 20000x20000 pixels is 400M pixels, over the limit of 64M "
                                     r"\(--max-pixels\); raise it to take this image")
    assert "1 skipped" in result.out
    h.intact(before, same=True)


def test_a_png_whose_header_claims_30000_by_30000(embedded):
    h = embedded
    before = h.snapshot()
    (h.images / "1" / "claims.png").write_bytes(grey_png(30000, 30000, full=False))
    embed(h, lines=1, match=r"claims\.png: 900M pixels, over the limit of 64M \(--max-pixels\)")
    h.intact(before, same=True)


def test_a_raised_limit_still_meets_pillows_guard(embedded):
    h = embedded
    before = h.snapshot()
    (h.images / "1" / "claims.png").write_bytes(grey_png(30000, 30000, full=False))
    embed(h, "--max-pixels", "2G", lines=1, match=r"claims\.png: 900M pixels, over Pillow's decompression-bomb "
                                                  r"limit of 400M pixels")
    h.intact(before, same=True)


def test_a_bmp_header_claiming_30000_by_30000(embedded):
    h = embedded
    before = h.snapshot()
    header = b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 30000, 30000, 1, 24, 0,
                                                                       0, 2835, 2835, 0, 0)
    (h.images / "2" / "claims.bmp").write_bytes(header)
    embed(h, lines=1, match=r"claims\.bmp: 900M pixels, over the limit of 64M \(--max-pixels\)")
    h.intact(before, same=True)


def test_a_ribbon_that_would_grow_when_resized_for_the_model(embedded):
    """100000 x 1 is 100K pixels, but resizing its short side to the model's input makes it 100000 times
    the model's square: over the limit, though the file is a few hundred bytes."""
    h = embedded
    before = h.snapshot()
    (h.images / "3" / "ribbon.png").write_bytes(grey_png(100_000, 1))
    embed(h, lines=1, match=r"ribbon\.png: 100000x1 pixels .*when resized for the model, over the limit")
    h.intact(before, same=True)


def test_a_lower_limit_skips_a_bigger_image_and_forgets_it(embedded):
    h = embedded
    before = h.snapshot()
    (h.images / "4" / "big.png").write_bytes(image_bytes("PNG", (1200, 1000)))
    embed(h, "--max-pixels", "1M", lines=1, match=r"big\.png: 1200x1000 pixels is 1.2M pixels, over the limit of 1M")
    result = embed(h)  # the default limit takes it: being over a limit is not remembered as unreadable
    assert "1 new, 12 cached" in result.out
    h.intact(before)


def test_a_large_jpeg_counts_at_its_reduced_decode(embedded):
    h = embedded
    before = h.snapshot()
    (h.images / "5" / "photo.jpg").write_bytes(image_bytes("JPEG", (4000, 3000)))
    result = embed(h, "--max-pixels", "1M")  # 12M pixels, decoded at 1/8 scale for a 32-pixel model
    assert "1 new, 12 cached" in result.out
    h.intact(before)


@pytest.mark.parametrize("value", ["0", "2.5M", "1G", "250k", "4_000_000"])
def test_max_pixels_spellings(embedded, value):
    h = embedded
    before = h.snapshot()
    (h.images / "6" / "mid.png").write_bytes(image_bytes("PNG", (300, 200)))
    assert "1 new, 12 cached" in embed(h, "--max-pixels", value).out
    h.intact(before)


@pytest.mark.parametrize("value", ["abc", "-5", "nan", "inf", "", "1.5.3", "-1M", "1e400"])
def test_bad_max_pixels(embedded, value):
    h = embedded
    before = h.snapshot()
    embed(h, "--max-pixels", value, code=2, match=r"--max-pixels .*expected a number of pixels such as 64M")
    h.intact(before, same=True)


def test_a_sparse_64_mb_file_named_png(embedded):
    """Not an image, and 64 MB: hashed in blocks and refused from its first bytes, never read whole."""
    h = embedded
    before = h.snapshot()
    with open(h.images / "7" / "huge.png", "wb") as fh:
        fh.truncate(64 * 2**20)
    embed(h, lines=1, match=r"huge\.png: not an image PIL can read")
    h.intact(before, same=True)


# -- montages


@pytest.mark.parametrize("args, match", [
    (("--thumb", "5000"), r"--thumb from 8 to 1024 pixels"),
    (("--thumb", "1025"), r"--thumb from 8 to 1024 pixels"),
    (("--thumb", "7"), r"--thumb from 8 to 1024 pixels"),
    (("--per-cluster", "100000"), r"would be 6800004x256 pixels, over the limit of 50M: use a smaller --thumb or "
                                  r"--per-cluster"),
    (("--thumb", "1024", "--per-cluster", "64"), r"over the limit of 50M"),
], ids=["thumb-5000", "thumb-1025", "thumb-7", "per-cluster-100000", "thumb-1024-x64"])
def test_a_montage_too_big_to_draw(clustered, args, match):
    h = clustered
    before = h.snapshot()
    out = h.tmp / "m.png"
    h.run("visualize", "km", "--kind", "montage", *args, "-o", out, code=2, match=match)
    assert not out.exists() and list(h.tmp.glob(".m.png*")) == []
    h.intact(before, same=True)


def test_a_montage_member_that_became_huge(clustered, bomb_png):
    """A stored image's file replaced by a 400M-pixel one since it was embedded: left out, not decoded."""
    h = clustered
    before = h.snapshot()
    (h.images / "0" / "0000.png").write_bytes(bomb_png.read_bytes())
    out = h.tmp / "m.png"
    h.run("visualize", "km", "--kind", "montage", "-o", out, lines=1,
          match=r"1 image\(s\) were left out of the montage, e.g. .*0000\.png: 20000x20000 pixels is 400M pixels")
    assert out.is_file()
    h.intact(before)
