"""Raw labels grouped into concepts, and names measured against them.

Step 2a's raw labels are usually good (on IC|TC's instrument descriptions a 0.5B model's seven most
frequent labels were exactly the seven classes); what a small model loses is in naming and assigning.
This module works on the label dictionary alone, without an LLM call:

- :func:`group_labels` folds variants of one concept: plurals, agent nouns (violinist -> violin,
  drummer -> drum), a modified label under its head noun when both occur (red car -> car) and, with a
  real text embedder, near-duplicates (aeroplane ~ airplane);
- :func:`frequent_names` takes the K heaviest groups, each named by its heaviest label;
- :func:`hybrid_names` keeps the LLM's K names (step 2b merges into superclasses) but replaces the
  ones the raw labels barely support by the heaviest groups no name covers;
- :func:`match_label` maps one raw label to a name, :func:`coverage` is the share of the label mass
  the names match (printed with every result).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipclust.core.vectors import linked_components, unit_rows
from clipclust.errors import InputError

from clipclust.methods.ictc.matching import _phrase_position
from clipclust.methods.ictc.parsing import _singular, is_junk_name, name_key

Embedder = Callable[[Sequence[str]], Any]

NEAR_DUPLICATE = 0.78
"""Cosine from which two labels are one concept for a real sentence embedder (all-MiniLM-L6-v2:
"plane"/"airplane" 0.85, "aeroplane"/"airplane" 0.79, but "car"/"truck" 0.69 and "ship"/"boat" 0.60:
only near-duplicates merge)."""

MIN_SUPPORT = 0.25
"""A hybrid name is replaceable when the labels it matches weigh under this share of N/K."""


def agent_bases(word: str) -> set[str]:
    """Words an agent noun or plural may come from: violinist -> violin, pianist -> piano, drummer ->
    drum, dancer -> dance, sailor -> sail. Candidates only: they count when the base is itself a
    label or a name, so "water" never becomes "wat" on its own."""
    w = _singular(word)
    out = {w}
    if len(w) > 5 and w.endswith("ist"):
        stem = w[:-3]
        out |= {stem, stem + "o", stem + "e", stem + "a"}
    if len(w) > 4 and w.endswith(("er", "or")):
        stem = w[:-2]
        out |= {stem, stem + "e"}
        if len(stem) > 2 and stem[-1] == stem[-2]:
            out.add(stem[:-1])
    return out


def _fold(key: str, vocab: set[str]) -> str:
    """The name key with each word replaced by its agent base when that base is in ``vocab``."""
    words = []
    for w in key.split():
        bases = sorted((b for b in agent_bases(w) if b in vocab and b != w), key=lambda b: (len(b), b))
        words.append(bases[0] if bases else w)
    return " ".join(words)


@dataclass
class LabelGroup:
    """Raw labels that name one concept; ``name`` is the heaviest of them."""

    name: str
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(self.labels.values())


def _heaviest(labels: Mapping[str, int]) -> str:
    return min(labels, key=lambda lab: (-labels[lab], len(lab), lab))


def group_labels(
    dictionary: Mapping[str, int], embed: Embedder | None = None, near_duplicate: float = NEAR_DUPLICATE
) -> list[LabelGroup]:
    """The labels of ``dictionary`` grouped into concepts, heaviest group first (ties: name).

    Two labels join when their keys are equal after folding plurals and agent nouns, when one is the
    other with modifiers in front (its head noun), or, given ``embed``, when their cosine similarity
    is at least ``near_duplicate`` and they share no word. A modified label joins the longest label it ends with, so "red
    sports car" goes under "sports car" when both occur, and with it under "car". Junk labels are
    left out.
    """
    labels = [lab for lab in dictionary if lab and not is_junk_name(lab)]
    if not labels:
        return []
    keys = [name_key(lab) for lab in labels]
    vocab = {w for k in keys for w in k.split()}
    folded = [_fold(k, vocab) for k in keys]
    links: list[tuple[int, int]] = []
    by_key: dict[str, int] = {}
    for i, key in enumerate(folded):
        for variant in (key, key.replace(" ", "")):  # "fire truck" = "firetruck"
            if variant in by_key:
                links.append((i, by_key[variant]))
            else:
                by_key[variant] = i
    for i, key in enumerate(folded):
        words = key.split()
        for start in range(1, len(words)):  # longest proper suffix that is itself a label
            head = " ".join(words[start:])
            if head in by_key:
                links.append((i, by_key[head]))
                break
    if embed is not None and len(labels) > 1:
        vectors = unit_rows(embed(labels))
        sims = vectors @ vectors.T
        words = [set(k.split()) for k in keys]
        for i in range(len(labels)):
            for j in np.nonzero(sims[i, i + 1 :] >= near_duplicate)[0]:
                j = i + 1 + int(j)
                # Labels sharing a word differ by what sets them apart ("red car" / "blue car",
                # "digit 1" / "digit 7"): the word rules above decide those, similarity only merges
                # different words for one thing (plane / airplane).
                if not words[i] & words[j]:
                    links.append((i, j))
    members: dict[int, dict[str, int]] = {}
    for lab, component in zip(labels, linked_components(len(labels), links)):
        members.setdefault(int(component), {})[lab] = int(dictionary[lab])
    groups = [LabelGroup(_heaviest(m), m) for m in members.values()]
    return sorted(groups, key=lambda g: (-g.count, g.name))


class LabelMatcher:
    """Maps raw labels to one of K names by their words: equal keys after folding plurals and agent
    nouns, else a name occurring (not negated) as a whole phrase in the label, else the one name the
    label is the head noun of. Labels that match nothing give ``None``: the caller decides (the
    nearest name by meaning, an LLM call)."""

    def __init__(self, names: Sequence[str]) -> None:
        if not names:
            raise InputError("no cluster names to match labels against")
        self.names = list(names)
        self.keys = [name_key(n) for n in self.names]
        self.vocab = {w for k in self.keys for w in k.split()}

    def lexical(self, label: str) -> int | None:
        """1. equal keys; 2. the longest name inside the label ("red car" -> car); 3. the label is the
        head noun of exactly one name ("guitar" -> acoustic guitar). Plurals and agent nouns are
        folded both ways against the words of the label and the names (violinist ~ violin)."""
        raw = name_key(label)
        if not raw:
            return None
        vocab = self.vocab | set(raw.split())
        key = _fold(raw, vocab)
        keys = [_fold(k, vocab) for k in self.keys]
        compact = key.replace(" ", "")
        for i, k in enumerate(keys):
            if k == key or k.replace(" ", "") == compact:
                return i
        best: tuple[int, int, int] | None = None
        for i, k in enumerate(keys):
            pos = _phrase_position(k, key)
            if pos >= 0:
                cand = (-len(k), pos, i)
                best = cand if best is None or cand < best else best
        if best is not None:
            return best[2]
        heads = [i for i, k in enumerate(keys) if k.endswith(" " + key)]
        return heads[0] if len(heads) == 1 else None

    def match_many(self, labels: Sequence[str]) -> list[int | None]:
        """One name index (or ``None``) per label."""
        memo: dict[str, int | None] = {}
        for lab in labels:
            if lab not in memo:
                memo[lab] = self.lexical(lab) if lab else None
        return [memo[lab] for lab in labels]


def match_label(label: str, names: Sequence[str]) -> int | None:
    """The name a raw label names, by words alone (see :class:`LabelMatcher`), else ``None``."""
    return LabelMatcher(names).lexical(label)


def support(names: Sequence[str], dictionary: Mapping[str, int], matcher: LabelMatcher | None = None) -> list[int]:
    """The raw-label mass each name matches (every label counts for at most one name)."""
    matcher = matcher or LabelMatcher(names)
    labels = list(dictionary)
    out = [0] * len(names)
    for lab, i in zip(labels, matcher.match_many(labels)):
        if i is not None:
            out[i] += int(dictionary[lab])
    return out


def coverage(names: Sequence[str], dictionary: Mapping[str, int], matcher: LabelMatcher | None = None) -> float:
    """The share of the raw-label mass that the names match (1.0: every item's label names one)."""
    total = sum(int(c) for c in dictionary.values())
    return sum(support(names, dictionary, matcher)) / total if total else 0.0


def frequent_names(groups: Sequence[LabelGroup], k: int) -> list[str]:
    """The names of the K heaviest label groups."""
    if len(groups) < k:
        raise InputError(
            f"the raw labels form only {len(groups)} distinct concepts "
            f"({', '.join(g.name for g in groups) or 'none'}), fewer than k={k}; lower k"
        )
    return [g.name for g in groups[:k]]


@dataclass
class HybridNames:
    """The names after support checks, and a note per replacement (stored and printed)."""

    names: list[str]
    support: list[int]
    replacements: list[str]


def hybrid_names(
    proposed: Sequence[str],
    groups: Sequence[LabelGroup],
    dictionary: Mapping[str, int],
    n_items: int,
    *,
    min_support: float = MIN_SUPPORT,
    matcher_for: Callable[[Sequence[str]], LabelMatcher] = LabelMatcher,
) -> HybridNames:
    """The LLM's names with the barely supported ones replaced.

    A name whose matched raw-label mass is under ``min_support`` x N/K is replaced by the heaviest
    label group that no current name matches, when that group weighs more than the name's support;
    weakest names go first. Each replacement is described in ``replacements``.
    """
    names = list(proposed)
    k = len(names)
    floor = min_support * n_items / max(k, 1)
    notes: list[str] = []
    replaced: set[int] = set()
    while True:
        matcher = matcher_for(names)
        sup = support(names, dictionary, matcher)
        weak = [i for i in range(k) if sup[i] < floor and i not in replaced]
        if not weak:
            break
        i = min(weak, key=lambda j: (sup[j], j))
        uncovered = [g for g in groups if all(m is None for m in matcher.match_many([g.name]))]
        if not uncovered or uncovered[0].count <= sup[i]:
            break
        new = uncovered[0]
        notes.append(f"replaced {names[i]!r} (labels of {sup[i]} items) by {new.name!r} (labels of {new.count} items)")
        names[i] = new.name
        replaced.add(i)
    return HybridNames(names, support(names, dictionary, matcher_for(names)), notes)
