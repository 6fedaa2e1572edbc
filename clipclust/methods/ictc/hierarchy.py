"""The taxonomy in the run: K chosen from it (``auto``), names at K's level, and the coarser levels.

:mod:`.taxonomy` builds and cuts the tree, :mod:`.concepts` names a cut and places items through it;
this module strings them together for :func:`~clipclust.methods.ictc.run.run_ictc`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipclust.core.vectors import unit_rows
from clipclust.errors import InputError
from clipclust.methods.criterion_values import named_values
from clipclust.models.llm import TextGenerator

from clipclust.methods.ictc.concepts import ConceptNames, coverage_of, name_concepts
from clipclust.methods.ictc.grouping import LabelGroup
from clipclust.methods.ictc.taxonomy import (Taxonomy, build_taxonomy, choose_k, coarser_ks, concept_of_labels,
                                             mass, nested_parents)

Embedder = Callable[[Sequence[str]], Any]


@dataclass
class TreeNames:
    """A cut of the tree with its names: what step 3 and the levels start from."""

    tax: Taxonomy
    desc_vecs: np.ndarray
    k: int
    concepts: list[list[int]]
    named: ConceptNames | None = None
    k_evidence: list[str] = field(default_factory=list)
    from_values: bool = False
    """K and the concepts come from the values the criterion names, not from a cut of the tree."""

    @property
    def concept_of(self) -> dict[str, int]:
        return concept_of_labels(self.tax, self.concepts)


@dataclass
class Level:
    """One coarser level: a cluster id per item, its names, and its parent of each finer cluster."""

    k: int
    ids: list[int]
    names: list[str]
    sources: list[str]
    notes: list[str]
    parents_of_finer: list[int]
    coverage: float


def tree_names(
    groups: Sequence[LabelGroup], labels: Sequence[str], descriptions: Sequence[str], embed: Embedder | None,
    k: int | str, generator: TextGenerator | None, criterion: str, *, name: bool = True,
) -> TreeNames:
    """The tree over the label groups, K and the K concepts named (``name``). ``auto``: the values the
    criterion names when it lists them (:func:`by_values`), else the tree's clearest gap."""
    if embed is None:
        raise InputError("the label taxonomy needs a text embedding model")
    auto = k == "auto"
    values = named_values(criterion) if auto else []
    if values:
        found = by_values(groups, labels, descriptions, embed, values)
        if isinstance(found, TreeNames):
            return found
        evidence = found
    else:
        evidence = []
    tax, desc_vecs = build_taxonomy(groups, labels, descriptions, embed, k=None if auto else int(k))
    if auto:
        k, gap_evidence = choose_k(tax, len(descriptions))
        evidence += gap_evidence
    k = int(k)
    concepts = tax.cut(k)
    named = name_concepts(tax, concepts, generator, criterion) if name else None
    return TreeNames(tax, desc_vecs, k, concepts, named, evidence)


def by_values(
    groups: Sequence[LabelGroup], labels: Sequence[str], descriptions: Sequence[str], embed: Embedder,
    values: Sequence[str],
) -> TreeNames | list[str]:
    """K and concepts from the values the criterion names: every leaf of the label tree goes under the
    value nearest it (its labels' and descriptions' vector against the value's text, each value's cosines
    centred over the leaves), each value that
    gathers a leaf is a concept named by the value. Returns the evidence lines instead when fewer than
    two values gather leaves (the caller then reads K off the tree)."""
    said = ", ".join(values)
    try:
        tax, desc_vecs = build_taxonomy(groups, labels, descriptions, embed, k=len(values))
    except InputError:
        return [f"the criterion names {len(values)} values ({said}) but the raw labels form fewer concepts"]
    scores = tax.vectors @ unit_rows(np.asarray(embed(list(values)), dtype=np.float64)).T
    # Centred per value over the leaves: a value whose text lies nearer everything ("string instrument"
    # beside "wind instrument" in MiniLM) would otherwise gather every leaf.
    nearest = np.argmax(scores - scores.mean(axis=0, keepdims=True), axis=1)
    kept = [v for v in range(len(values)) if (nearest == v).any()]
    missing = [values[v] for v in range(len(values)) if v not in kept]
    if len(kept) < 2:
        return [f"the criterion names {len(values)} values ({said}) but every raw label lies nearest "
                f"{values[kept[0]] if kept else values[0]!r}"]
    concepts = [[int(i) for i in np.flatnonzero(nearest == v)] for v in kept]
    names = [values[v] for v in kept]
    evidence = [f"the criterion names its values ({said}): k={len(kept)}, each raw label under the nearest value"]
    evidence += [f"{n}: " + ", ".join(f"{lab} ({c})" for lab, c in list(mass(tax, leaves).items())[:6])
                 for n, leaves in zip(names, concepts)]
    if missing:
        evidence.append(f"no raw label lies nearest {', '.join(map(repr, missing))}: left out")
    named = ConceptNames(names, ["criterion"] * len(names))
    return TreeNames(tax, desc_vecs, len(kept), concepts, named, evidence, from_values=True)


def coarser_levels(
    tree: TreeNames, fine_ids: Sequence[int], labels: Sequence[str], levels: int, generator: TextGenerator | None,
    criterion: str,
) -> tuple[list[Level], list[str]]:
    """The ``levels - 1`` coarser cuts (coarsest first), each named like the fine one, and warnings
    when the fine K leaves no room for them."""
    if tree.from_values:
        return [], [f"the criterion names its {tree.k} values: they are the coarsest level, 1 level stored"]
    ks = coarser_ks(tree.tax, tree.k, levels)
    warnings = []
    if len(ks) < levels - 1:
        warnings.append(f"k={tree.k} leaves room for {len(ks)} coarser level(s), not {levels - 1}: "
                        f"{len(ks) + 1} level(s) stored")
    out: list[Level] = []
    cuts = [tree.tax.cut(c) for c in ks]
    parents_fine = [nested_parents(tree.concepts, cut) for cut in cuts]
    for ci, (c, cut) in enumerate(zip(ks, cuts)):
        named = name_concepts(tree.tax, cut, generator, criterion)
        ids = [parents_fine[ci][i] for i in fine_ids]
        finer = tree.concepts if ci == len(cuts) - 1 else cuts[ci + 1]
        out.append(Level(c, ids, named.names, named.sources, named.notes(tree.tax, cut),
                         nested_parents(finer, cut), coverage_of(ids, labels, concept_of_labels(tree.tax, cut))))
    return out, warnings


FINE_COVERAGE = 0.5
"""The K heaviest label groups must hold at least this share of the labelled items for the labels to
sit at K's level (CIFAR-10's dev set at K=10: 0.79; at K=2 animal/vehicle: 0.18)."""


def labels_at_level(tree: TreeNames, groups: Sequence[LabelGroup], n_labelled: int) -> tuple[bool, str]:
    """Whether the K heaviest label groups can name K clusters as they are (``auto`` names): they hold
    at least :data:`FINE_COVERAGE` of the items, and the tree cut at K puts each in a concept of its own
    (two of them in one concept are a label beside its parent or child, "brass" beside "trumpet").
    Returns the answer and the reason, printed with the result."""
    heavy = list(groups[: tree.k])
    share = sum(g.count for g in heavy) / max(n_labelled, 1)
    of = tree.concept_of
    concepts = [of.get(g.name) for g in heavy]
    shared = sorted({c for c in concepts if c is not None and concepts.count(c) > 1})
    if len(heavy) < tree.k:
        return False, f"the raw labels form {len(heavy)} groups, fewer than k={tree.k}: named by concept"
    if share < FINE_COVERAGE:
        return False, (f"the {tree.k} heaviest raw labels hold {share:.0%} of the items (under "
                       f"{FINE_COVERAGE:.0%}): the labels are finer than k, named by concept")
    if shared:
        pairs = "; ".join(" / ".join(g.name for g, c in zip(heavy, concepts) if c == s) for s in shared)
        return False, f"heavy labels in one concept ({pairs}): named by concept"
    return True, f"the {tree.k} heaviest raw labels hold {share:.0%} of the items, one per concept: named by them"
