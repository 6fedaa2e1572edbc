"""Finding images, their labels and splits, and decoding any common image file to RGB.

Decoding is the one place that sees hostile files: a corrupt, truncated or non-image file raises
``UnreadableImage`` so that callers can skip it, warn and count it, and never stop a run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps

from clipclust.errors import InputError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".jpe", ".webp", ".bmp", ".tif", ".tiff", ".gif"}

# A decompression bomb is a bad input, not a reason to crash; keep Pillow's guard but make it an error.
Image.MAX_IMAGE_PIXELS = 200_000_000


class UnreadableImage(Exception):
    """The file could not be decoded as an image (corrupt, truncated, or not an image)."""


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


def _walk_folder(dirpath: str, label: str | None, found: dict[str, SourceFile], folder_labels: bool) -> None:
    """One folder of ``find_images``: its image files, then its sub-folders in name order (as os.walk).

    ``os.scandir`` tells files, folders and links apart from the directory listing itself, so a file
    costs no system call here; ``label`` is None in the root folder (files there have no class folder).
    """
    try:
        with os.scandir(dirpath) as it:
            entries = list(it)
    except OSError:
        return  # os.walk's default: an unreadable folder is skipped
    files, folders = [], []
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        (folders if is_dir else files).append(entry)
    shown = str(Path(dirpath))  # the spelling Path gives, computed once per folder
    prefix = "" if shown == "." else shown if shown.endswith(os.sep) else shown + os.sep
    real_folder = str(Path(dirpath).resolve())  # resolving each file would stat every component
    real_prefix = real_folder if real_folder.endswith(os.sep) else real_folder + os.sep
    for entry in sorted(files, key=lambda e: e.name):
        name = entry.name
        if name.startswith(".") or not _image_extension(name):
            continue
        path = prefix + name
        if entry.is_symlink():
            real = os.path.realpath(path)
        else:  # one string for both when the folder is spelled as it resolves (a million paths, not two)
            real = path if real_prefix == prefix else real_prefix + name
        if real not in found:
            found[real] = SourceFile(path, (label or "") if folder_labels else "", real)
    for entry in sorted(folders, key=lambda e: e.name):
        if not entry.name.startswith("."):
            _walk_folder(os.path.join(dirpath, entry.name), entry.name if label is None else label, found,
                         folder_labels)


def find_images(inputs: Sequence[str | os.PathLike[str]], *, folder_labels: bool = True) -> list[SourceFile]:
    """Expand files and folders (recursively) into image files, in a stable sorted order.

    Folders contribute files with an image extension (hidden files and folders skipped; links are
    followed); a file named explicitly is always taken, so that a mislabelled extension is decoded and,
    if it is no image, reported.  With ``folder_labels`` a file at ``root/<label>/...`` gets the label
    ``<label>``.
    """
    found: dict[str, SourceFile] = {}
    for raw in inputs:
        root = Path(raw)
        if not root.exists():
            raise InputError(f"no such file or folder: {raw}")
        if root.is_file():
            found.setdefault(str(root.resolve()), SourceFile(root))
            continue
        _walk_folder(str(root), None, found, folder_labels)
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


def decode_image(data: bytes, min_size: int | None = None) -> Image.Image:
    """Decode bytes fully into an RGB image, or raise UnreadableImage.

    With ``min_size`` a JPEG is decoded by libjpeg at the smallest 1/2, 1/4 or 1/8 scale whose sides stay
    at least ``min_size`` (the model resizes to that anyway): a 12-megapixel photo decodes several times
    faster.  ``image.info["original_size"]`` keeps the full, EXIF-oriented size either way.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            full = im.size
            if min_size and im.format == "JPEG" and min(full) >= 2 * min_size:
                im.draft("RGB", (min_size, min_size))
            scaled = im.size
            im.load()
            out = to_rgb(im).copy()
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on malformed files; each is one skip
        raise UnreadableImage(str(exc) or type(exc).__name__) from None
    out.info["original_size"] = full if out.size == scaled else (full[1], full[0])
    return out


def iter_read(sources: Iterable[SourceFile]) -> Iterable[tuple[SourceFile, bytes | None, str | None]]:
    """Yield (source, bytes, error) for each file; an unreadable file yields its error instead of raising."""
    for src in sources:
        try:
            yield src, src.path.read_bytes(), None
        except OSError as exc:
            yield src, None, exc.strerror or str(exc)
