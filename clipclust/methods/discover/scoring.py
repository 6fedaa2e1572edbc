"""Label statistics decide which proposed criteria hold in the data.

For a candidate criterion, IC|TC's step 2a labels a small sample of descriptions; the labels are
grouped into concepts (:func:`~clipclust.methods.ictc.grouping.group_labels`). A criterion is kept when
its labels neither collapse to one value (every image the same: it sorts nothing) nor are all
different (every image its own group: it sorts nothing either); the values seen are the heaviest
groups and the group estimate is the number of heaviest groups that hold 90% of the labelled items.
Two criteria whose labels partition the sample the same way (adjusted mutual information) are one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipclust.core.vectors import unit_rows
from clipclust.models.llm import DecodeParams, TextGenerator

from clipclust.methods.ictc import count_labels, default_prompts, group_labels, raw_labels

Embedder = Callable[[Sequence[str]], Any]

MASS_SHARE = 0.9
"""The group estimate: how many of the heaviest label groups hold this share of the labelled items."""
ONE_VALUE_SHARE = 0.9
"""A criterion collapses when its heaviest label group holds this share of the labelled items."""
MIN_ANSWERED = 0.5
"""A criterion the LLM answers (a label that is not junk) for fewer of the sampled items is dropped."""
DUPLICATE_AMI = 0.7
"""Adjusted mutual information from which a criterion repeats a better-ranked one's partition."""
SHARED_VALUES = 0.6
"""Share of a criterion's labelled items whose value is also a value of a better-ranked criterion, from which
it repeats that one (a small model asked for "colour" that answers with the object): caught even where
the sample is too small for the partitions' AMI to say anything."""
MAX_VALUES = 8
"""Values shown per criterion: its heaviest label groups."""


@dataclass
class LabelStats:
    """What step 2a's labels say about one criterion on the label sample."""

    criterion: str
    labels: list[str]
    groups: list[tuple[str, int]]
    assignment: list[int]
    n_groups: int
    verdict: str = ""
    outputs: list[str] = field(default_factory=list)

    @property
    def n_labelled(self) -> int:
        return sum(1 for a in self.assignment if a >= 0)

    @property
    def values(self) -> list[tuple[str, int]]:
        return self.groups[:MAX_VALUES]

    @property
    def top_share(self) -> float:
        return self.groups[0][1] / self.n_labelled if self.groups and self.n_labelled else 0.0


def groups_for_mass(counts: Sequence[int], share: float = MASS_SHARE) -> int:
    """The fewest heaviest groups whose counts reach ``share`` of the total (0 for none)."""
    total = sum(counts)
    if not total:
        return 0
    acc = 0
    for n, c in enumerate(sorted(counts, reverse=True), start=1):
        acc += c
        if acc >= share * total - 1e-9:
            return n
    return len(counts)


def verdict(groups: Sequence[tuple[str, int]], n_labelled: int, n_sampled: int) -> str:
    """Why a criterion says nothing about the sample, or "" when it sorts it: "no answers" (too few
    usable labels), "one value" (the heaviest group holds 90%). "all different" (no value seen twice) is
    :func:`all_different`, decided after the duplicate check, which names the better reason."""
    if n_labelled < max(2, MIN_ANSWERED * n_sampled):
        return "no answers"
    if len(groups) <= 1 or groups[0][1] >= ONE_VALUE_SHARE * n_labelled:
        return "one value"
    return ""


def all_different(groups: Sequence[tuple[str, int]]) -> bool:
    """No value seen twice: on this sample the criterion gives every item a group of its own."""
    return bool(groups) and all(count == 1 for _, count in groups)


def label_stats(generator: TextGenerator, texts: Sequence[str], criterion: str, *, params: DecodeParams,
                embed: Embedder | None = None, prompt_dir: Any = None) -> LabelStats:
    """Step 2a for ``criterion`` on ``texts`` (the label sample), its label groups and verdict."""
    prompts = default_prompts(criterion, prompt_dir=prompt_dir)
    labels, outputs = raw_labels(generator, texts, criterion, prompts=prompts, params=params)
    groups = group_labels(count_labels(labels), embed)
    index = {label: g for g, group in enumerate(groups) for label in group.labels}
    assignment = [index.get(label, -1) if label else -1 for label in labels]
    pairs = [(group.name, group.count) for group in groups]
    n_labelled = sum(1 for a in assignment if a >= 0)
    return LabelStats(criterion, list(labels), pairs, assignment, groups_for_mass([c for _, c in pairs]),
                      verdict(pairs, n_labelled, len(texts)), list(outputs))


def partition_ami(a: Sequence[int], b: Sequence[int]) -> float:
    """Adjusted mutual information of two label assignments of the same items; an unlabelled item
    (-1) counts as a value of its own, "no answer", in each."""
    from sklearn.metrics import adjusted_mutual_info_score

    if len(set(a)) < 2 and len(set(b)) < 2:
        return 1.0
    return float(adjusted_mutual_info_score(list(a), list(b)))


def shared_values(stats: LabelStats, other: LabelStats, embed: Embedder | None = None) -> float:
    """The share of ``stats``' labelled items whose label is one of ``other``'s labels (by name key) or, given
    ``embed``, a near-duplicate of ``other``'s label for the same item ("antlered" / "antler")."""
    from clipclust.methods.ictc import name_key
    from clipclust.methods.ictc.grouping import NEAR_DUPLICATE

    theirs = {name_key(label) for label in other.labels if label}
    items = [i for i, g in enumerate(stats.assignment) if g >= 0]
    if not items:
        return 0.0
    same = {i for i in items if name_key(stats.labels[i]) in theirs}
    pairs = [i for i in items if i not in same and i < len(other.labels) and other.labels[i]]
    if embed is not None and pairs:
        mine = unit_rows(embed([stats.labels[i] for i in pairs]))
        yours = unit_rows(embed([other.labels[i] for i in pairs]))
        same |= {i for i, cos in zip(pairs, np.sum(mine * yours, axis=1)) if cos >= NEAR_DUPLICATE}
    return len(same) / len(items)


def duplicate_of(stats: LabelStats, kept: Sequence[LabelStats], threshold: float = DUPLICATE_AMI,
                 embed: Embedder | None = None) -> str | None:
    """Why ``stats`` repeats a better-ranked kept criterion, or None: the other's values for most items
    (:data:`SHARED_VALUES`), or the same partition (AMI at least ``threshold``)."""
    for other in kept:
        share = shared_values(stats, other, embed)
        if share >= SHARED_VALUES:
            return f"duplicate of {other.criterion} (its values for {share:.0%} of the items)"
        ami = partition_ami(stats.assignment, other.assignment)
        if ami >= threshold:
            return f"duplicate of {other.criterion} (AMI {ami:.2f})"
    return None
