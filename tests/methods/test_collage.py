"""Collages: LatteCLIP's 2x2 on a 672x672 black canvas with 20 px gaps, aspect kept, centred; its prompts, and
group descriptions (items sharing a label, one collage each) through the call cache."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from clipclust.errors import InputError
from clipclust.methods.latteclip.collage import collage, collage_2x2, collage_id, grid_shape
from clipclust.methods.latteclip.group import describe_groups, group_indices
from clipclust.methods.latteclip.prompts import latteclip_prompt
from clipclust.models.llm import DecodeParams, MemoryCallStore
from clipclust.models.vlm import CachedDescriber, Describer


def bbox(canvas: Image.Image, colour: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) inclusive of the pixels that have exactly ``colour``."""
    a = np.asarray(canvas)
    ys, xs = np.nonzero(np.all(a == colour, axis=-1))
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_grid_shapes() -> None:
    assert [grid_shape(n) for n in (1, 2, 3, 4, 5, 9, 10)] == [(1, 1), (1, 2), (2, 2), (2, 2), (2, 3), (3, 3), (3, 4)]
    with pytest.raises(InputError):
        grid_shape(0)


def test_2x2_layout_keeps_aspect_and_centres_each_image() -> None:
    red, green, blue, white = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
    images = [
        Image.new("RGB", (100, 50), red),  # wide
        Image.new("RGB", (30, 90), green),  # tall
        Image.new("RGB", (32, 32), blue),  # small square, scaled up
        Image.new("RGBA", (64, 64), (*white, 255)),  # mode converted
    ]
    out = collage_2x2(images)
    assert out.size == (672, 672) and out.mode == "RGB"
    cell = (672 - 3 * 20) // 2  # 306: 20 px around and between the cells
    # Wide image: full cell width, half its height, centred vertically in the top-left cell.
    assert bbox(out, red) == (20, 20 + (cell - 153) // 2, 20 + cell - 1, 20 + (cell - 153) // 2 + 153 - 1)
    # Tall image: full cell height, a third of its width, centred horizontally in the top-right cell.
    x0 = 20 + cell + 20
    assert bbox(out, green) == (x0 + (cell - 102) // 2, 20, x0 + (cell - 102) // 2 + 102 - 1, 20 + cell - 1)
    # Square image fills its cell exactly.
    assert bbox(out, blue) == (20, x0, 20 + cell - 1, x0 + cell - 1)
    assert bbox(out, white) == (x0, x0, x0 + cell - 1, x0 + cell - 1)
    a = np.asarray(out)
    # Border, gaps and letterbox areas are black.
    assert not a[:20].any() and not a[:, :20].any() and not a[-20:].any() and not a[:, -20:].any()
    assert not a[:, 326:346].any() and not a[326:346].any()


def test_n_images_grid_and_centred_last_row() -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    out = collage([Image.new("RGB", (10, 10), c) for c in colours])
    cell = (672 - 3 * 20) // 2
    # The lone image of the last row sits in the middle.
    x0, y0, x1, y1 = bbox(out, colours[2])
    assert (x0 + x1) / 2 == pytest.approx(672 / 2, abs=1) and y0 == 20 + cell + 20
    one = collage([Image.new("RGB", (5, 10), (255, 0, 0))])
    x0, y0, x1, y1 = bbox(one, (255, 0, 0))
    assert (y0, y1) == (20, 651) and (x0 + x1) / 2 == pytest.approx(335.5, abs=1)
    nine = collage([Image.new("RGB", (8, 8), (200, 200, 200))] * 9, canvas=300, gap=10)
    assert nine.size == (300, 300)


def test_collage_2x2_requires_four_and_tiny_canvases_fail() -> None:
    with pytest.raises(InputError, match="exactly 4"):
        collage_2x2([Image.new("RGB", (4, 4))] * 3)
    with pytest.raises(InputError, match="do not fit"):
        collage([Image.new("RGB", (4, 4))] * 16, canvas=60, gap=20)


def test_collage_id_depends_on_members_order_and_layout() -> None:
    a = collage_id(["x", "y"])
    assert a == collage_id(["x", "y"]) and len(a) == 64
    assert len({a, collage_id(["y", "x"]), collage_id(["x", "y"], gap=10), collage_id(["x", "y"], canvas=336)}) == 4


# ------------------------------------------------------------------------------------------------
# Group descriptions: items sharing a label, one collage each, described through the call cache
# ------------------------------------------------------------------------------------------------


class CountingDescriber(Describer):
    identity = "counting-vlm"

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def describe(self, images: Any, prompt: str, params: DecodeParams | None = None) -> list[str]:
        self.seen.extend(im.size for im in images)
        return [f"{prompt}:{im.size[0]}x{im.size[1]}:{im.getpixel((0, 0))}" for im in images]


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


def test_latteclip_prompts_name_the_domain() -> None:
    assert latteclip_prompt("food") == "Describe the food in the photo concisely, less than 20 words."
    assert latteclip_prompt("flower", group=True) == (
        "Describe the common visual attributes of the flower in all the photos concisely, less than 20 words.")


def test_group_indices_partition_each_label_deterministically() -> None:
    labels = ["cat"] * 10 + ["dog"] * 3 + [None] * 2
    groups = group_indices(labels, 4, seed=0)
    assert groups == group_indices(labels, 4, seed=0)
    assert sorted(i for g in groups for i in g) == list(range(13))  # unlabeled items left out
    assert [len(g) for g in groups] == [4, 4, 2, 3]
    assert all(len({labels[i] for i in g}) == 1 for g in groups)
    assert group_indices(labels, 4, seed=1) != groups
    # Ordering by content hash makes the groups independent of input order.
    ids = [f"h{i:02d}" for i in range(15)]
    perm = list(reversed(range(15)))
    g1 = {frozenset(ids[i] for i in g) for g in group_indices(labels, 4, ids=ids)}
    g2 = {frozenset([ids[p] for p in perm][i] for i in g) for g in group_indices([labels[p] for p in perm], 4, ids=[ids[p] for p in perm])}
    assert g1 == g2


def test_describe_groups_builds_collages_only_on_a_miss() -> None:
    inner = CountingDescriber()
    cached = CachedDescriber(inner, MemoryCallStore())
    images = [solid((i * 20, 0, 0)) for i in range(6)]
    ids = [f"h{i}" for i in range(6)]
    labels = ["a", "a", "a", "a", "b", "b"]
    prompt = latteclip_prompt("flower", group=True)
    assert prompt == "Describe the common visual attributes of the flower in all the photos concisely, less than 20 words."
    out = describe_groups(cached, images, ids, labels, prompt)
    assert [g.label for g in out] == ["a", "b"] and [len(g.members) for g in out] == [4, 2]
    assert inner.seen == [(672, 672), (672, 672)]  # one collage per group
    assert out[0].input_id == collage_id([ids[i] for i in out[0].members])
    again = describe_groups(cached, images, ids, labels, prompt)
    assert again == out and len(inner.seen) == 2
    assert collage_id(["a", "b"]) == "ed5412ac78830cf04ca78048b1e22b1f6f192c39e9f2fb45bfda8d664be6487e"  # pinned
