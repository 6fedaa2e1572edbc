"""The label taxonomy: step 2a's label groups in one hierarchy, cut at the K a request asks for.

The K heaviest raw-label groups are names at the level of the labels, never more abstract: at a coarse
K ("animal or vehicle" over cat, dog, truck, ...) they name two fine classes and leave the rest
uncovered. Here every group with enough mass is a leaf of one count-weighted Ward tree, so labels of
different levels ("brass" beside "trumpet") meet early and a name never sits beside its own parent or
child; cutting the tree at K gives K concepts at K's level, and the merge costs tell which K's the
data separates well (``-k auto``, the coarser levels of ``levels``).

A leaf's vector joins two views of one group: the text of its labels and the mean of the descriptions
that carry them. The second puts a family label whose items are trumpets next to "trumpet", whatever
the words say.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipclust.errors import InputError

from clipclust.core.vectors import unit_rows
from clipclust.methods.ictc.grouping import LabelGroup

Embedder = Callable[[Sequence[str]], Any]

MIN_MASS_SHARE = 0.5
"""A label group enters the tree with at least half the mean mass of the groups seen twice or more
(and at least 2 items); lighter ones (one-off labels, a stray "rock" or "umbrella") join the nearest
concept afterwards, each item by its own description. In the tree, light leaves would first clump
together (Ward merges them cheaply whatever they are) and then drag each other into one concept."""

TEXT_WEIGHT = 0.5
"""Share of a leaf's vector that is its labels' text (the rest: the mean of its descriptions)."""


def min_mass(groups: Sequence[LabelGroup]) -> int:
    """The mass a group needs to be a leaf: :data:`MIN_MASS_SHARE` of the mean of the repeated groups."""
    repeated = [g.count for g in groups if g.count >= 2]
    return max(2, math.ceil(MIN_MASS_SHARE * sum(repeated) / len(repeated))) if repeated else 2


@dataclass
class Taxonomy:
    """The tree over ``groups`` (the leaves, heaviest first) and the groups left outside it.

    ``merges`` are ``(a, b, cost)`` in order, scipy style: node ``i < n`` is leaf ``i``, node ``n + j``
    is the ``j``-th merge; ``cost`` is the count-weighted Ward cost w_a w_b / (w_a + w_b) |mu_a - mu_b|^2
    (non-decreasing along the list).
    """

    groups: list[LabelGroup]
    outside: list[LabelGroup]
    vectors: np.ndarray
    merges: list[tuple[int, int, float]] = field(default_factory=list)

    @property
    def n_leaves(self) -> int:
        return len(self.groups)

    def cut(self, k: int) -> list[list[int]]:
        """``k`` concepts, each a list of leaf indices (heaviest leaf first), heaviest concept first."""
        n = self.n_leaves
        if not 1 <= k <= n:
            raise InputError(f"the label tree has {n} concepts; cannot cut it into {k}")
        members: dict[int, list[int]] = {i: [i] for i in range(n)}
        for j, (a, b, _) in enumerate(self.merges[: n - k]):
            members[n + j] = members.pop(a) + members.pop(b)
        weight = [g.count for g in self.groups]
        concepts = [sorted(m, key=lambda i: (-weight[i], i)) for m in members.values()]
        return sorted(concepts, key=lambda m: (-sum(weight[i] for i in m), m[0]))

    def cost_into(self, k: int) -> float:
        """The cost of the merge that takes ``k + 1`` concepts to ``k``."""
        return self.merges[self.n_leaves - k - 1][2]

    def gap(self, k: int) -> float:
        """How much better ``k`` concepts separate than ``k + 1``: the cost of going on to ``k - 1``
        over the cost of reaching ``k``. A clear gap (a costly next merge) is a level of the data."""
        return self.cost_into(k - 1) / max(self.cost_into(k), 1e-12)


def label_vectors(
    groups: Sequence[LabelGroup], labels: Sequence[str], descriptions: Sequence[str], embed: Embedder,
    text_weight: float = TEXT_WEIGHT,
) -> tuple[np.ndarray, np.ndarray]:
    """One unit vector per group (its labels' text, count-weighted, joined with the mean of the
    descriptions carrying them) and the descriptions' unit vectors (for what the tree leaves out)."""
    names = sorted({lab for g in groups for lab in g.labels})
    row = {lab: i for i, lab in enumerate(names)}
    label_vecs = unit_rows(embed(names)) if names else np.zeros((0, 1))
    desc_vecs = unit_rows(embed(list(descriptions)))
    group_of = {lab: gi for gi, g in enumerate(groups) for lab in g.labels}
    out = np.zeros((len(groups), desc_vecs.shape[1]))
    for gi, g in enumerate(groups):
        text = sum(c * label_vecs[row[lab]] for lab, c in g.labels.items())
        items = [i for i, lab in enumerate(labels) if group_of.get(lab) == gi]
        desc = desc_vecs[items].mean(axis=0) if items else text
        out[gi] = text_weight * unit_rows(np.atleast_2d(text))[0] + (1 - text_weight) * unit_rows(np.atleast_2d(desc))[0]
    return unit_rows(out), desc_vecs


def ward_merges(vectors: np.ndarray, weights: Sequence[float]) -> list[tuple[int, int, float]]:
    """Agglomerative count-weighted Ward merges over ``vectors`` (O(n^2) memory, n = the leaves)."""
    n = len(weights)
    mu = {i: np.asarray(vectors[i], dtype=np.float64) for i in range(n)}
    w = {i: float(weights[i]) for i in range(n)}
    active = list(range(n))
    merges: list[tuple[int, int, float]] = []

    def cost(a: int, b: int) -> float:
        d = mu[a] - mu[b]
        return w[a] * w[b] / (w[a] + w[b]) * float(d @ d)

    pair = {(a, b): cost(a, b) for ai, a in enumerate(active) for b in active[ai + 1 :]}
    while len(active) > 1:
        (a, b), c = min(pair.items(), key=lambda kv: (kv[1], kv[0]))
        new = n + len(merges)
        mu[new] = (w[a] * mu[a] + w[b] * mu[b]) / (w[a] + w[b])
        w[new] = w[a] + w[b]
        merges.append((a, b, c))
        active = [x for x in active if x not in (a, b)]
        pair = {key: v for key, v in pair.items() if a not in key and b not in key}
        pair.update({(x, new): cost(x, new) for x in active})
        active.append(new)
    return merges


def build_taxonomy(
    groups: Sequence[LabelGroup], labels: Sequence[str], descriptions: Sequence[str], embed: Embedder,
    k: int | None = None,
) -> tuple[Taxonomy, np.ndarray]:
    """The tree over the groups with at least :func:`min_mass` items (lowered until ``k`` enter, when
    given, or 2), and the descriptions' unit vectors. Raises when the labels form fewer than 2 concepts."""
    groups = list(groups)
    if len(groups) < max(2, k or 2):
        named = ", ".join(g.name for g in groups) or "none"
        raise InputError(f"the raw labels form only {len(groups)} distinct concepts ({named}), fewer than "
                         f"k={k or 2}; lower k")
    floor = min_mass(groups)
    while floor > 1 and sum(g.count >= floor for g in groups) < max(2, k or 2):
        floor -= 1
    tree = [g for g in groups if g.count >= floor]
    vectors, desc_vecs = label_vectors(tree, labels, descriptions, embed)
    merges = ward_merges(vectors, [g.count for g in tree])
    return Taxonomy(tree, [g for g in groups if g.count < floor], vectors, merges), desc_vecs


def choose_k(tax: Taxonomy, n_items: int, lo: int = 2, hi: int | None = None) -> tuple[int, list[str]]:
    """``-k auto``: the K in ``lo..hi`` (default 2..min(N/2, leaves)) with the clearest merge-cost gap,
    and the evidence lines (the best candidates with their gaps)."""
    hi = min(hi if hi is not None else tax.n_leaves, n_items // 2, tax.n_leaves)
    if hi < lo:
        raise InputError(f"the raw labels form {tax.n_leaves} concepts over {n_items} items: too few to choose "
                         f"k from (at least {lo} needed)")
    if hi == lo:
        return lo, [f"k={lo}: the only possible value (the label tree has {tax.n_leaves} concepts)"]
    scores = {k: tax.gap(k) for k in range(lo, hi + 1) if k < tax.n_leaves}
    if not scores:
        return hi, [f"k={hi}: every label group is its own concept"]
    best = max(scores, key=lambda k: (scores[k], -k))
    ranked = sorted(scores, key=lambda k: (-scores[k], k))[:4]
    lines = [f"k={k}: gap x{scores[k]:.2f} (merging on to {k - 1} costs {tax.cost_into(k - 1):.3g}, "
             f"reaching {k} cost {tax.cost_into(k):.3g})" + (" (chosen)" if k == best else "") for k in ranked]
    return best, [f"candidates {lo}..{hi} by the merge-cost gap of the label tree"] + lines


def coarser_ks(tax: Taxonomy, k: int, levels: int) -> list[int]:
    """The ``levels - 1`` coarser K's below ``k`` with the clearest gaps, coarsest first (fewer when
    ``k`` leaves no room)."""
    candidates = [c for c in range(2, k) if c < tax.n_leaves]
    ranked = sorted(candidates, key=lambda c: (-tax.gap(c), c))
    return sorted(ranked[: levels - 1])


def concept_of_labels(tax: Taxonomy, concepts: Sequence[Sequence[int]]) -> dict[str, int]:
    """Every raw label in the tree -> the index of its concept."""
    return {lab: ci for ci, leaves in enumerate(concepts) for li in leaves for lab in tax.groups[li].labels}


def place_items(
    tax: Taxonomy, concepts: Sequence[Sequence[int]], labels: Sequence[str], desc_vecs: np.ndarray
) -> tuple[list[int | None], np.ndarray]:
    """Per item its concept through its raw label (None: the label is outside the tree), and the
    concepts' centroids in description space (the items placed by label), for the rest."""
    of = concept_of_labels(tax, concepts)
    placed = [of.get(lab) if lab else None for lab in labels]
    centroids = np.zeros((len(concepts), desc_vecs.shape[1]))
    for ci in range(len(concepts)):
        rows = [i for i, c in enumerate(placed) if c == ci]
        centroids[ci] = desc_vecs[rows].mean(axis=0) if rows else tax.vectors[concepts[ci][0]]
    return placed, unit_rows(centroids)


def nearest_concepts(desc_vecs: np.ndarray, centroids: np.ndarray, rows: Sequence[int],
                     names: np.ndarray | None = None) -> list[int]:
    """The concept nearest each of ``rows``: cosine to its description centroid, plus to its name's
    vector when given (ties: the heavier concept)."""
    if not len(rows):
        return []
    scores = desc_vecs[list(rows)] @ centroids.T
    if names is not None:
        scores = scores + desc_vecs[list(rows)] @ names.T
    return [int(i) for i in np.argmax(scores, axis=1)]


def nested_parents(fine: Sequence[Sequence[int]], coarse: Sequence[Sequence[int]]) -> list[int]:
    """For each fine concept, the coarse concept holding its leaves (tree cuts nest by construction;
    checked anyway)."""
    owner = {leaf: ci for ci, leaves in enumerate(coarse) for leaf in leaves}
    out = []
    for leaves in fine:
        parents = {owner[leaf] for leaf in leaves}
        if len(parents) != 1:
            raise RuntimeError("a fine concept straddles two coarse ones; the cuts do not nest")
        out.append(parents.pop())
    return out


def mass(tax: Taxonomy, leaves: Sequence[int]) -> Mapping[str, int]:
    """The raw labels of a concept with their counts, heaviest first."""
    out: dict[str, int] = {}
    for li in leaves:
        out.update(tax.groups[li].labels)
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))
