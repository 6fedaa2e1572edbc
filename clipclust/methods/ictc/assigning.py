"""Step 3 without an LLM call per item where it can: by the step-2a label, by a text embedding, by
CLIP image vectors; and the warnings a degenerate result deserves.

"Matched" means the same in every mode: the item's own text (its step-2a label, else its
description, or the LLM's answer) names the cluster it was put in. An item placed by similarity
alone (nearest name in an embedding space) is counted unmatched, so the printed count says how many
assignments rest on evidence the user can read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from clipclust.errors import InputError
from clipclust.models.llm import DecodeParams, TextGenerator

from clipclust.methods.ictc.grouping import LabelMatcher, _unit
from clipclust.methods.ictc.matching import _phrase_position
from clipclust.methods.ictc.parsing import name_key
from clipclust.methods.ictc.prompts import IctcPrompts, Layout
from clipclust.methods.ictc.steps import Assignment, StepProgress, assign

DOMINANT_SHARE = 0.9
"""A cluster holding more than this share of the items makes the result degenerate."""


def named_in_text(text: str, name: str) -> bool:
    """True when ``name`` occurs, not negated, as whole words in ``text`` (plurals folded)."""
    return _phrase_position(name_key(name), name_key(text)) >= 0


def evidence_matched(
    ids: Sequence[int], names: Sequence[str], descriptions: Sequence[str], labels: Sequence[str] | None = None
) -> list[bool]:
    """Per item: does its step-2a label (when there is one) or its description name its cluster?"""
    matcher = LabelMatcher(names)
    out = []
    for i, cid in enumerate(ids):
        label = labels[i] if labels is not None and i < len(labels) else ""
        by_label = bool(label) and matcher.lexical(label) == cid
        out.append(by_label or named_in_text(descriptions[i], names[cid]))
    return out


def assign_by_scores(
    scores: Any,
    names: Sequence[str],
    descriptions: Sequence[str],
    labels: Sequence[str] | None = None,
) -> Assignment:
    """Each item to its highest-scoring name (ties: the earlier name); ``matched`` by evidence."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (len(descriptions), len(names)):
        raise InputError(f"expected {len(descriptions)} x {len(names)} scores, got {s.shape}")
    ids = [int(i) for i in np.argmax(s, axis=1)]
    return Assignment([names[i] for i in ids], ids, evidence_matched(ids, names, descriptions, labels))


def assign_by_embedding(
    embed: Callable[[Sequence[str]], Any],
    descriptions: Sequence[str],
    names: Sequence[str],
    labels: Sequence[str] | None = None,
) -> Assignment:
    """Nearest name by cosine similarity of ``embed(descriptions)`` and ``embed(names)``."""
    scores = _unit(embed(list(descriptions))) @ _unit(embed(list(names))).T
    return assign_by_scores(scores, names, descriptions, labels)


def assign_by_label(
    generator: TextGenerator | None,
    descriptions: Sequence[str],
    labels: Sequence[str],
    names: Sequence[str],
    criterion: str,
    *,
    prompts: IctcPrompts | None = None,
    params: DecodeParams | None = None,
    layout: Layout = "instruction_first",
    progress: StepProgress | None = None,
    embed: Callable[[Sequence[str]], Any] | None = None,
) -> tuple[Assignment, int]:
    """Each item's step-2a label matched to a name by words (:class:`LabelMatcher`). The items whose
    label names none go, with ``embed``, to the name nearest their description (no LLM call), else
    to the LLM constrained to the names. Returns the assignment and the number of LLM calls."""
    if len(labels) != len(descriptions):
        raise InputError("label assignment needs one step-2a label per description")
    matched = LabelMatcher(names).match_many(list(labels))
    todo = [i for i, m in enumerate(matched) if m is None]
    answers = [names[m] if m is not None else "" for m in matched]
    ids = [m if m is not None else -1 for m in matched]
    flags = [m is not None for m in matched]
    rest: Assignment | None = None
    if todo and embed is not None:
        rest = assign_by_embedding(embed, [descriptions[i] for i in todo], names)
    elif todo:
        if generator is None:
            raise InputError(f"{len(todo)} labels match no name and the LLM that would place them is missing")
        rest = assign(
            generator, [descriptions[i] for i in todo], names, criterion, mode="constrained",
            prompts=prompts, params=params, layout=layout, progress=progress,
        )
    if rest is not None:
        for j, i in enumerate(todo):
            answers[i], ids[i], flags[i] = rest.answers[j], rest.cluster_ids[j], rest.matched[j]
    if progress is not None and (rest is None or embed is not None):
        progress("step3", len(ids), len(ids))
    return Assignment(answers, ids, flags), len(todo) if embed is None else 0


def degenerate_warnings(cluster_ids: Sequence[int], names: Sequence[str]) -> list[str]:
    """What is wrong with a result that says little: one cluster holding over 90% of the items, or
    clusters left empty when K > 1; each warning says what to try."""
    k, n = len(names), len(cluster_ids)
    if k < 2 or n == 0:
        return []
    counts = Counter(cluster_ids)
    out: list[str] = []
    top, size = max(counts.items(), key=lambda kv: (kv[1], -kv[0]))
    if size > DOMINANT_SHARE * n:
        out.append(
            f"cluster {names[top]!r} holds {size} of {n} items ({size / n:.0%}): the names do not separate "
            "the items; try names from the raw labels (frequent or hybrid), label or embed assignment, "
            "or a larger model"
        )
    empty = [names[i] for i in range(k) if counts.get(i, 0) == 0]
    if empty:
        out.append(
            f"{len(empty)} of {k} clusters are empty ({', '.join(repr(e) for e in empty)}): lower k, or take "
            "names that the raw labels support (frequent or hybrid)"
        )
    return out
