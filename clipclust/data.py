"""Finding images, their labels and splits, and decoding any common image file to RGB.

Decoding is the one place that sees hostile files: a corrupt, truncated or non-image file raises
``UnreadableImage`` so that callers can skip it, warn and count it, and never stop a run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps

from .errors import InputError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".jpe", ".webp", ".bmp", ".tif", ".tiff", ".gif"}

# A decompression bomb is a bad input, not a reason to crash; keep Pillow's guard but make it an error.
Image.MAX_IMAGE_PIXELS = 200_000_000


class UnreadableImage(Exception):
    """The file could not be decoded as an image (corrupt, truncated, or not an image)."""


@dataclass
class SourceFile:
    """An image file found on disk and what the folders or a labels file say about it."""

    path: Path
    label: str = ""
    resolved: str = ""  # the absolute path with links resolved, when discovery already knows it

    def real_path(self) -> str:
        return self.resolved or str(self.path.resolve())


def find_images(inputs: Sequence[str | os.PathLike[str]], *, folder_labels: bool = True) -> list[SourceFile]:
    """Expand files and folders (recursively) into image files, in a stable sorted order.

    Folders contribute files with an image extension (hidden files skipped); a file named explicitly is
    always taken, so that a mislabelled extension is decoded and, if it is no image, reported.  With
    ``folder_labels`` a file at ``root/<label>/...`` gets the label ``<label>``.
    """
    found: dict[str, SourceFile] = {}
    for raw in inputs:
        root = Path(raw)
        if not root.exists():
            raise InputError(f"no such file or folder: {raw}")
        if root.is_file():
            found.setdefault(str(root.resolve()), SourceFile(root))
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            folder = Path(dirpath)
            real_folder = str(folder.resolve())  # once per folder: resolving each file stats every component
            rel = folder.relative_to(root).parts
            label = rel[0] if folder_labels and rel else ""
            for name in sorted(filenames):
                if name.startswith(".") or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                    continue
                path = os.path.join(dirpath, name)
                real = os.path.realpath(path) if os.path.islink(path) else os.path.join(real_folder, name)
                if real not in found:
                    found[real] = SourceFile(Path(path), label, real)
    return sorted(found.values(), key=lambda s: str(s.path))


def read_labels_csv(path: str | os.PathLike[str]) -> dict[Path, str]:
    """Read ``path,label`` rows (a header row ``path,label`` is optional); paths resolve against the CSV's folder."""
    csv_path = Path(path)
    if not csv_path.is_file():
        raise InputError(f"labels file not found: {path}")
    out: dict[Path, str] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
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
