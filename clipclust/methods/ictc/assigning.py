"""Step 3, one name per description: by the LLM (:func:`assign`, free or constrained answers), and without
an LLM call per item where it can: by the step-2a label, by a text embedding, by CLIP image vectors; and
the warnings a degenerate result deserves.

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

from clipclust.core.vectors import unit_rows
from clipclust.methods.ictc.grouping import LabelMatcher
from clipclust.methods.ictc.matching import _phrase_position, match_answer
from clipclust.methods.ictc.parsing import name_key
from clipclust.methods.ictc.prompts import MODES, IctcPrompts, Layout, Mode, assign_request, default_prompts
from clipclust.methods.ictc.steps import Assignment, StepProgress, _run_requests

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
    scores = unit_rows(embed(list(descriptions))) @ unit_rows(embed(list(names))).T
    return assign_by_scores(scores, names, descriptions, labels)


def assign(
    generator: TextGenerator | None,
    descriptions: Sequence[str],
    names: Sequence[str],
    criterion: str,
    *,
    mode: Mode = "generate",
    prompts: IctcPrompts | None = None,
    params: DecodeParams | None = None,
    embed: Callable[[Sequence[str]], Any] | None = None,
    layout: Layout = "instruction_first",
    progress: StepProgress | None = None,
) -> Assignment:
    """Step 3: one cluster per description.

    ``generate``: free answer (the paper), matched by :func:`match_answer`. ``constrained``: the
    decoder may only produce one of the names (grammar / JSON schema / token trie, by backend);
    answers are still matched, so a server without structured output degrades to ``generate``.
    ``embed``: nearest name by cosine similarity of ``embed(descriptions)`` and ``embed(names)``
    (ties go to the earlier name); no LLM call; matched only where the description names the cluster.
    """
    if mode not in MODES:
        raise InputError(f"unknown step-3 mode {mode!r}; choose one of {', '.join(MODES)}")
    names = list(names)
    if len(set(map(name_key, names))) != len(names):
        raise InputError(f"cluster names must be distinct: {names}")
    if mode == "embed":
        if embed is None:
            raise InputError("embed mode needs an embedding function (texts -> vectors)")
        result = assign_by_embedding(embed, descriptions, names)
        if progress is not None:
            progress("step3", len(descriptions), len(descriptions))
        return result
    if mode not in ("generate", "constrained"):
        raise InputError(f"{mode} assignment runs in run_ictc (it needs step 2a's labels or image vectors)")
    if generator is None:
        raise InputError(f"{mode} mode needs an LLM")
    prompts = prompts or default_prompts(criterion)
    longest = max(len(n) for n in names)
    params = params or DecodeParams(max_tokens=max(32, longest // 2 + 16))
    reqs = [
        assign_request(d, names, criterion, prompts, constrained=mode == "constrained", layout=layout)
        for d in descriptions
    ]
    outputs = _run_requests(generator, reqs, params, "step3", progress)
    matches = [match_answer(o, names) for o in outputs]
    return Assignment(outputs, [m.index for m in matches], [m.matched for m in matches])


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
    """What is wrong with a result that says little: one cluster for everything (K = 1, or one holding
    over 90% of the items), every item its own cluster, or clusters left empty; each warning says what
    to try."""
    k, n = len(names), len(cluster_ids)
    if n == 0:
        return []
    if k < 2:
        return [f"k=1: one cluster holds all {n} items; ask for k of 2 or more, or auto"] if n > 1 else []
    if k >= n:
        return [f"k={k} for {n} items: every item is its own cluster; lower k, or auto"]
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
