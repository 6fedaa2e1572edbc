"""Finding images, their labels and splits, and decoding any common image file to RGB.

Decoding is the one place that sees hostile files: a corrupt, truncated or non-image file raises
``UnreadableImage`` so that callers can skip it, warn and count it, and never stop a run.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import math
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clipclust.errors import InputError, opt

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".jpe", ".webp", ".bmp", ".tif", ".tiff", ".gif"}

# Why 64M: an image is decoded whole before it is resized, at 3 bytes a pixel in RGB and about as much
# again while it is converted, so one 64M-pixel image takes ~0.4 GB and each decoding thread may hold one.
# 64M pixels is 8000 x 8000, more than any camera's photo but the 100-200 MP modes of some phones, and those
# are JPEGs, which decode at a reduced scale and count as such.  An image over the limit is skipped before
# its pixels are read: Pillow reads the size from the header.
DEFAULT_MAX_PIXELS = 64_000_000
# Pillow's own decompression-bomb guard stays as a backstop for the whole process (it refuses above twice
# this, 400M pixels, at open); ``max_pixels`` is the limit a run sets, and it is the lower one by default.
Image.MAX_IMAGE_PIXELS = 200_000_000
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")

_PIL_OBJECT = re.compile(r"\s*<_?io\.\w+ object at 0x[0-9a-fA-F]+>")


class UnreadableImage(Exception):
    """The file could not be decoded as an image (corrupt, truncated, or not an image)."""


class ImageTooLarge(UnreadableImage):
    """The image has more pixels than the limit allows; skipped before decoding (the content may be fine)."""


def format_count(n: float) -> str:
    """A pixel count as people say it: 400M, 64M, 1.5G, 900."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:g}"


def parse_count(text: str) -> int:
    """A count such as 64M, 1.5G, 250K or 4000000 (a bad one raises ValueError)."""
    raw = text.strip().upper().replace("_", "")
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(raw[-1:], 1) if raw else 1
    number = float(raw[:-1] if scale > 1 else raw)
    if not math.isfinite(number):
        raise ValueError(text)
    return int(number * scale)


class SourceFile:
    """An image file found on disk and what the folders or a labels file say about it.

    The path is kept as the string discovery produced and made a ``Path`` only when asked: a cached
    re-run of a million files would otherwise spend most of its time building Path objects.
    """

    __slots__ = ("file", "label", "resolved")

    def __init__(self, path: str | os.PathLike[str], label: str = "", resolved: str = "") -> None:
        self.file = os.fspath(path)
        self.label = label
        self.resolved = resolved  # the absolute path with links resolved, when discovery already knows it

    @property
    def path(self) -> Path:
        return Path(self.file)

    def real_path(self) -> str:
        return self.resolved or str(self.path.resolve())

    def __repr__(self) -> str:
        return f"SourceFile({self.file!r}, label={self.label!r})"


def _image_extension(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS


def label_text(name: str) -> str:
    """A folder name as a label: itself, or, when it is not valid UTF-8, its bytes with the invalid ones
    written as ``\\xNN`` (labels are text for prompts and tables; distinct names stay distinct)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def not_regular(mode: int) -> str:
    """What a file that is not a regular file is, said for a warning ('' for a regular file or a folder)."""
    for test, what in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return f"not a regular file ({what}); skipped without opening it"
    return ""


def _entry_problem(entry: os.DirEntry[str]) -> str:
    """Why a directory entry with an image extension is not taken as a file ('' when it is a regular file)."""
    try:
        if entry.is_file():
            return ""
        return not_regular(entry.stat().st_mode) or "not a regular file; skipped without opening it"
    except FileNotFoundError:
        return "a broken link (what it points to does not exist)"
    except OSError as exc:
        return exc.strerror or str(exc)


def _walk(root: str, found: dict[str, SourceFile], folder_labels: bool, skipped: list[tuple[str, str]] | None,
          seen: set[tuple[int, int]]) -> None:
    """The folders under ``root``: each folder's image files, then its sub-folders in name order (as os.walk).

    A folder is entered once, known by (device, inode): links are followed, but a link back to a folder
    being walked (a loop) or a second link to a walked one adds nothing.  The walk keeps its own stack, so
    nesting depth is bounded by the path length, not by Python's recursion limit.  ``os.scandir`` tells
    files, folders and links apart from the listing itself, so a file costs no system call here; a link
    or a name that is not a regular file (a named pipe, a socket, a device) costs a stat and is skipped
    and counted, never opened.  ``label`` is None in the root folder (files there have no class folder).
    """
    stack: list[tuple[str, str, str | None]] = [(root, str(Path(root).resolve()), None)]
    while stack:
        dirpath, real_folder, label = stack.pop()
        try:
            st = os.stat(dirpath)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(dirpath) as it:
                entries = list(it)
        except OSError as exc:
            if dirpath == root:
                raise InputError(f"cannot read folder {root}: {exc.strerror or exc}") from None
            if skipped is not None:
                skipped.append((dirpath, f"folder not readable ({exc.strerror or exc})"))
            continue
        files, folders = [], []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            (folders if is_dir else files).append(entry)
        shown = str(Path(dirpath))  # the spelling Path gives, computed once per folder
        prefix = "" if shown == "." else shown if shown.endswith(os.sep) else shown + os.sep
        real_prefix = real_folder if real_folder.endswith(os.sep) else real_folder + os.sep
        for entry in sorted(files, key=lambda e: e.name):
            name = entry.name
            if name.startswith(".") or not _image_extension(name):
                continue
            path = prefix + name
            link = entry.is_symlink()
            if link or entry.is_file(follow_symlinks=False) is False:
                problem = _entry_problem(entry)
                if problem:
                    if skipped is not None:
                        skipped.append((path, problem))
                    continue
            if link:
                real = os.path.realpath(path)
            else:  # one string for both when the folder is spelled as it resolves (a million paths, not two)
                real = path if real_prefix == prefix else real_prefix + name
            if real not in found:
                found[real] = SourceFile(path, (label or "") if folder_labels else "", real)
        subfolders = []
        for entry in sorted(folders, key=lambda e: e.name):
            if not entry.name.startswith("."):
                sub = os.path.join(dirpath, entry.name)
                real = os.path.realpath(sub) if entry.is_symlink() else real_prefix + entry.name
                subfolders.append((sub, real, label_text(entry.name) if label is None else label))
        stack.extend(reversed(subfolders))


def find_images(inputs: Sequence[str | os.PathLike[str]], *, folder_labels: bool = True,
                skipped: list[tuple[str, str]] | None = None) -> list[SourceFile]:
    """Expand files and folders (recursively) into image files, in a stable sorted order.

    Folders contribute files with an image extension (hidden files and folders skipped; links are
    followed, each folder once); a file named explicitly is always taken, so that a mislabelled
    extension is decoded and, if it is no image, reported.  With ``folder_labels`` a file at
    ``root/<label>/...`` gets the label ``<label>``.  What is passed over (a named pipe or other file that
    is not a regular one, a broken link, a folder that cannot be listed) is appended to ``skipped`` as
    (path, reason).
    """
    found: dict[str, SourceFile] = {}
    seen: set[tuple[int, int]] = set()
    for raw in inputs:
        root = Path(raw)
        try:
            mode = root.stat().st_mode
        except FileNotFoundError:
            raise InputError(f"no such file or folder: {raw}") from None
        except OSError as exc:
            raise InputError(f"cannot read {raw}: {exc.strerror or exc}") from None
        if stat.S_ISREG(mode):
            found.setdefault(str(root.resolve()), SourceFile(root))
        elif stat.S_ISDIR(mode):
            _walk(str(root), found, folder_labels, skipped, seen)
        elif skipped is not None:
            skipped.append((str(root), not_regular(mode) or "not a regular file; skipped without opening it"))
    return sorted(found.values(), key=lambda s: s.file)


def read_labels_csv(path: str | os.PathLike[str]) -> dict[Path, str]:
    """Read ``path,label`` rows (a header row ``path,label`` is optional); paths resolve against the CSV's folder."""
    from clipclust.core.textfiles import read_user_text

    csv_path = Path(path)
    if not csv_path.is_file():
        raise InputError(f"labels file not found: {path}")
    out: dict[Path, str] = {}
    try:
        rows = list(csv.reader(io.StringIO(read_user_text(csv_path), newline="")))
    except csv.Error as exc:  # a field past csv's size limit
        raise InputError(f"{path}: not readable as CSV ({exc})") from None
    for lineno, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise InputError(f"{path}:{lineno}: expected 'path,label', got {','.join(row)!r}")
        file, label = row[0].strip(), row[1].strip()
        if lineno == 1 and file.lower() == "path" and label.lower() == "label":
            continue
        candidate = Path(file)
        if not candidate.is_absolute():
            near_csv = csv_path.parent / candidate
            candidate = near_csv if near_csv.exists() else candidate
        out[candidate.resolve()] = label
    return out


def apply_labels(sources: list[SourceFile], labels: dict[Path, str]) -> int:
    """Overwrite folder labels with those of a labels file; returns how many files it labelled."""
    hits = 0
    for src in sources:
        label = labels.get(Path(src.real_path()))
        if label is not None:
            src.label = label
            hits += 1
    return hits


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image to 8-bit RGB: first frame, EXIF orientation, palette, alpha, 16-bit and float modes."""
    try:
        image.seek(0)
    except (EOFError, AttributeError, ValueError):
        pass
    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or (mode == "I" and arr.max() > 255) else max(arr.max(), 1.0)
        if mode == "F":
            lo, hi = float(arr.min()), float(arr.max())
            arr, top = arr - lo, max(hi - lo, 1e-12)
        image = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        mode = "L"
    if mode in ("P", "PA"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB") if mode != "RGB" else image


def _reason(exc: BaseException, empty: bool) -> str:
    """What went wrong with a file, without Pillow's '<_io.BytesIO object at 0x...>' (the caller names the file)."""
    if empty:
        return "an empty file (0 bytes)"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image PIL can read"
    return _PIL_OBJECT.sub("", str(exc)).strip() or type(exc).__name__


def _opened_checked(im: Image.Image, min_size: int | None, max_pixels: int | None) -> tuple[int, int]:
    """Set a JPEG's reduced decode, then refuse an image whose decode, or whose resize to ``min_size`` on its
    short side (what a model's preprocessing does), would exceed ``max_pixels``; returns its full size."""
    full = im.size
    if min_size and im.format == "JPEG" and min(full) >= 2 * min_size:
        im.draft("RGB", (min_size, min_size))
    pixels = im.size[0] * im.size[1]
    limit = f"over the limit of {format_count(max_pixels or 0)} ({opt('max_pixels')}); raise it to take this image"
    if max_pixels and pixels > max_pixels:
        scaled = f" (decoded at {im.size[0]}x{im.size[1]})" if im.size != full else ""
        raise ImageTooLarge(f"{full[0]}x{full[1]} pixels{scaled} is {format_count(pixels)} pixels, {limit}")
    short, long = sorted(im.size)
    if max_pixels and min_size and 0 < short < min_size and min_size * (min_size * long // short) > max_pixels:
        grown = f"{min_size * long // short}x{min_size}"
        raise ImageTooLarge(f"{full[0]}x{full[1]} pixels would be {grown} when resized for the model, {limit}")
    return full


def _bomb(exc: Exception, max_pixels: int | None) -> ImageTooLarge:
    """Pillow's decompression-bomb refusal (raised at open, with the pixel count only) in this module's words."""
    found = _BOMB_PIXELS.search(str(exc))
    pixels = format_count(int(found.group(1))) if found else "more"
    if max_pixels and found and int(found.group(1)) > max_pixels:
        return ImageTooLarge(f"{pixels} pixels, over the limit of {format_count(max_pixels)} ({opt('max_pixels')}); "
                             "raise it to take this image")
    return ImageTooLarge(f"{pixels} pixels, over Pillow's decompression-bomb limit of "
                         f"{format_count(2 * (Image.MAX_IMAGE_PIXELS or 0))} pixels")


def probe_image(fh: BinaryIO, min_size: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """The size of the image in an open file, read from its header only (nothing is decoded); raises
    ImageTooLarge over ``max_pixels`` and UnreadableImage for what Pillow cannot identify."""
    try:
        with Image.open(fh) as im:
            return _opened_checked(im, min_size, max_pixels)
    except UnreadableImage:
        raise
    except Image.DecompressionBombError as exc:
        raise _bomb(exc, max_pixels) from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on malformed files; each is one skip
        raise UnreadableImage(_reason(exc, fh.seek(0, 2) == 0)) from None


def decode_image(data: bytes, min_size: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode bytes fully into an RGB image, or raise UnreadableImage (ImageTooLarge over ``max_pixels``).

    With ``min_size`` a JPEG is decoded by libjpeg at the smallest 1/2, 1/4 or 1/8 scale whose sides stay
    at least ``min_size`` (the model resizes to that anyway): a 12-megapixel photo decodes several times
    faster, and counts against ``max_pixels`` at that scale.  ``image.info["original_size"]`` keeps the
    full, EXIF-oriented size either way.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            full = _opened_checked(im, min_size, max_pixels)
            scaled = im.size
            im.load()
            out = to_rgb(im).copy()
    except (MemoryError, UnreadableImage):
        raise
    except Image.DecompressionBombError as exc:
        raise _bomb(exc, max_pixels) from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on malformed files; each is one skip
        raise UnreadableImage(_reason(exc, not data)) from None
    out.info["original_size"] = full if out.size == scaled else (full[1], full[0])
    return out


def read_image(path: str | os.PathLike[str], min_size: int | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image file: its header is checked against ``max_pixels`` before the rest is read."""
    with open_regular(path) as fh:
        probe_image(fh, min_size, max_pixels)
        fh.seek(0)
        return decode_image(fh.read(), min_size, max_pixels)


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a file for reading without blocking on a named pipe: OSError unless it is a regular file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, not_regular(mode) or "not a regular file", os.fspath(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256_file(fh: BinaryIO) -> str:
    """The sha256 of an open file, read in blocks (a huge file costs no memory)."""
    return hashlib.file_digest(fh, "sha256").hexdigest()
