"""Collages for group descriptions (LatteCLIP): several images pasted on one canvas for one VLM call.

LatteCLIP pastes 4 images that share a pseudo-label in a 2x2 grid on a 672x672 black canvas with
20 px gaps, each image scaled to its cell with its aspect ratio kept and centred. ``collage``
generalises the layout to n images in a ceil(sqrt(n))-column grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image

from clipclust.errors import InputError
from clipclust.models.llm import canonical_key

CANVAS = 672
GAP = 20


def grid_shape(n: int) -> tuple[int, int]:
    """``(rows, cols)`` of the grid for n images: ceil(sqrt(n)) columns, as many rows as needed."""
    if n < 1:
        raise InputError("a collage needs at least one image")
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    return rows, cols


def collage(
    images: Sequence[Image.Image],
    canvas: int = CANVAS,
    gap: int = GAP,
    margin: int | None = None,
    background: tuple[int, int, int] = (0, 0, 0),
) -> Image.Image:
    """Paste ``images`` row-major into a square RGB canvas.

    Cells are separated by ``gap`` pixels and kept ``margin`` pixels (default: ``gap``) from the
    border; each image is scaled (up or down) to fit its cell with its aspect ratio kept and is
    centred in it. An incomplete last row is centred horizontally so the layout stays balanced.
    """
    n = len(images)
    rows, cols = grid_shape(n)
    margin = gap if margin is None else margin
    cell_w = (canvas - 2 * margin - (cols - 1) * gap) // cols
    cell_h = (canvas - 2 * margin - (rows - 1) * gap) // rows
    if cell_w < 1 or cell_h < 1:
        raise InputError(f"{n} images do not fit a {canvas}px canvas with {gap}px gaps")
    # Centre the whole grid (integer division can leave a few pixels over).
    grid_w = cols * cell_w + (cols - 1) * gap
    grid_h = rows * cell_h + (rows - 1) * gap
    x0 = (canvas - grid_w) // 2
    y0 = (canvas - grid_h) // 2
    out = Image.new("RGB", (canvas, canvas), background)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        in_row = min(cols, n - r * cols)
        row_shift = (cols - in_row) * (cell_w + gap) // 2
        cx = x0 + row_shift + c * (cell_w + gap)
        cy = y0 + r * (cell_h + gap)
        rgb = img.convert("RGB")
        scale = min(cell_w / rgb.width, cell_h / rgb.height)
        w = max(1, round(rgb.width * scale))
        h = max(1, round(rgb.height * scale))
        resized = rgb.resize((w, h), Image.Resampling.BICUBIC)
        out.paste(resized, (cx + (cell_w - w) // 2, cy + (cell_h - h) // 2))
    return out


def collage_2x2(images: Sequence[Image.Image]) -> Image.Image:
    """LatteCLIP's group image: 4 images, 2x2, 672x672 black canvas, 20 px gaps."""
    if len(images) != 4:
        raise InputError(f"collage_2x2 takes exactly 4 images, got {len(images)} (use collage())")
    return collage(images, CANVAS, GAP)


def collage_id(
    member_ids: Sequence[str], canvas: int = CANVAS, gap: int = GAP, margin: int | None = None
) -> str:
    """Content identity of a collage: its members (in order) and layout, for the call cache."""
    margin = gap if margin is None else margin
    return canonical_key(
        {"collage": list(member_ids), "canvas": canvas, "gap": gap, "margin": margin}
    )


__all__ = ["CANVAS", "GAP", "collage", "collage_2x2", "collage_id", "grid_shape"]
