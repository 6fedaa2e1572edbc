"""LatteCLIP's group descriptions: items that share a pseudo-label, grouped and pasted into one collage each,
described as one image through the call cache."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from PIL import Image

from clipclust.errors import InputError
from clipclust.methods.latteclip.collage import CANVAS, GAP, collage, collage_id
from clipclust.models.llm import DecodeParams
from clipclust.models.vlm import CachedDescriber, ImageSource, open_image


def group_indices(
    labels: Sequence[Hashable | None],
    group_size: int = 4,
    seed: int = 0,
    ids: Sequence[str] | None = None,
) -> list[list[int]]:
    """Partition items sharing a label into groups of ``group_size`` (the last one may be smaller).

    Deterministic: members of a label are ordered by ``ids`` (content hashes; else by position) and
    shuffled with a generator seeded by ``(seed, label)``, so adding items of one label never
    reshuffles another. Items whose label is ``None`` are left out.
    """
    if group_size < 1:
        raise InputError(f"group size must be >= 1, got {group_size}")
    if ids is not None and len(ids) != len(labels):
        raise InputError(f"{len(labels)} labels but {len(ids)} ids")
    by_label: dict[Hashable, list[int]] = {}
    for i, lab in enumerate(labels):
        if lab is not None:
            by_label.setdefault(lab, []).append(i)
    groups: list[list[int]] = []
    for lab in sorted(by_label, key=str):
        members = by_label[lab]
        if ids is not None:
            members = sorted(members, key=lambda i: (ids[i], i))
        random.Random(f"{seed}:{lab}").shuffle(members)
        groups.extend(members[s : s + group_size] for s in range(0, len(members), group_size))
    return groups


@dataclass(frozen=True)
class GroupDescription:
    """One collage description: the label, member positions, the collage's id and the text."""

    label: Hashable
    members: tuple[int, ...]
    input_id: str
    text: str


def describe_groups(
    describer: CachedDescriber,
    images: Sequence[ImageSource],
    input_ids: Sequence[str],
    labels: Sequence[Hashable | None],
    prompt: str,
    params: DecodeParams | None = None,
    *,
    group_size: int = 4,
    seed: int = 0,
    canvas: int = CANVAS,
    gap: int = GAP,
) -> list[GroupDescription]:
    """Describe collages of items sharing a label (LatteCLIP's group descriptions).

    Each group's collage is cached under an id derived from its members' content hashes and the
    layout; collages are only assembled for groups whose description is not cached yet.
    """
    if not (len(images) == len(input_ids) == len(labels)):
        raise InputError("images, input_ids and labels must have the same length")
    groups = group_indices(labels, group_size, seed, ids=input_ids)
    gids = [collage_id([input_ids[i] for i in g], canvas, gap) for g in groups]

    def loader(members: list[int]) -> Callable[[], Image.Image]:
        return lambda: collage([open_image(images[i]) for i in members], canvas, gap)

    texts = describer.describe(
        [loader(g) for g in groups], prompt, params, input_ids=gids
    )
    return [
        GroupDescription(labels[g[0]], tuple(g), gid, text)  # type: ignore[arg-type]
        for g, gid, text in zip(groups, gids, texts)
    ]


__all__ = ["GroupDescription", "describe_groups", "group_indices"]
