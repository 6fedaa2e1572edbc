"""Bounded, seeded sampling in small batches; one short proposal call per batch; candidates merged and ranked.

One long answer from a 0.5B model cannot be trusted, but many short ones can be counted: a criterion that
several batches propose independently is likely a real axis of the collection, and one only a single
batch mentions is likely noise. Candidates are merged by their key (plurals and filler words folded) and,
given an embedder, by meaning; they are ranked by the number of batches that proposed them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipclust.core.vectors import linked_components, unit_rows
from clipclust.models.llm import DecodeParams, TextGenerator

from clipclust.methods.discover.prompts import COMMON_CRITERIA, criterion_key, parse_criteria, propose_request

Embedder = Callable[[Sequence[str]], Any]

SAME_CRITERION = 0.8
"""Cosine from which two proposed criteria are one for all-MiniLM-L6-v2 ("color"/"colour", "setting"/
"location" of the scene): stricter than label merging, since "animal" and "vehicle" are two criteria;
criteria that differ in words but not in the partition they make are caught later, by the labels."""


def sample_order(n_items: int, sample: int, seed: int) -> list[int]:
    """``min(sample, n_items)`` item positions drawn without replacement by ``seed``, in drawn order."""
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.permutation(n_items)[: min(sample, n_items)]]


def batches(positions: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive batches of ``size``; a last batch under half the size joins the one before it."""
    out = [list(positions[i : i + size]) for i in range(0, len(positions), size)]
    if len(out) > 1 and len(out[-1]) < max(1, size // 2):
        out[-2].extend(out.pop())
    return out


def propose(generator: TextGenerator, texts: Sequence[str], groups: Sequence[Sequence[int]], per_batch: int,
            params: DecodeParams) -> tuple[list[list[tuple[str, str]]], list[str]]:
    """One proposal call per batch (sent together, so a batching backend decodes them at once):
    ``(parsed criteria per batch, raw answers)``."""
    requests = [propose_request([texts[i] for i in group], per_batch) for group in groups]
    answers = generator.generate(requests, params) if requests else []
    return [parse_criteria(a) for a in answers], [str(a) for a in answers]


@dataclass
class Candidate:
    """One proposed criterion after merging: its commonest wording, an explanation, which batches said it."""

    name: str
    explanation: str
    batches: list[int]
    forms: dict[str, int] = field(default_factory=dict)

    @property
    def support(self) -> int:
        return len(self.batches)


def merge_candidates(proposals: Sequence[Sequence[tuple[str, str]]], embed: Embedder | None = None,
                     same: float = SAME_CRITERION) -> list[Candidate]:
    """The batches' criteria merged into candidates, ranked by support (batches), then by how often
    they were said, then by first appearance. Two wordings merge when their keys are equal, or, given
    ``embed``, when their cosine similarity is at least ``same``."""
    said: list[tuple[str, str, int]] = [(c, e, b) for b, found in enumerate(proposals) for c, e in found]
    if not said:
        return []
    keys = [criterion_key(c) for c, _, _ in said]
    distinct = list(dict.fromkeys(keys))
    links: list[tuple[int, int]] = []
    if embed is not None and len(distinct) > 1:
        vectors = unit_rows(embed(distinct))
        sims = vectors @ vectors.T
        links = [(i, j) for i in range(len(distinct)) for j in range(i + 1, len(distinct)) if sims[i, j] >= same]
    root = dict(zip(distinct, map(int, linked_components(len(distinct), links))))
    members: dict[int, list[int]] = {}
    for n, key in enumerate(keys):
        members.setdefault(root[key], []).append(n)
    candidates: list[tuple[tuple[int, int, int], Candidate]] = []
    for said_at in members.values():
        forms = Counter(said[n][0] for n in said_at)
        name = min(forms, key=lambda f: (-forms[f], len(f), f))
        explained = [said[n][1] for n in said_at if said[n][0] == name and said[n][1]]
        explained = explained or [said[n][1] for n in said_at if said[n][1]]
        explanation = Counter(explained).most_common(1)[0][0] if explained else ""
        found_in = sorted({said[n][2] for n in said_at})
        candidate = Candidate(name, explanation, found_in, dict(forms))
        candidates.append(((-len(found_in), -len(said_at), min(said_at)), candidate))
    return [c for _, c in sorted(candidates, key=lambda pair: pair[0])]


def with_common(candidates: Sequence[Candidate], embed: Embedder | None = None,
                same: float = SAME_CRITERION) -> list[Candidate]:
    """The LLM's candidates, then each common criterion (:data:`COMMON_CRITERIA`) none of them already is
    (by key or, given ``embed``, by meaning), with no batch behind it."""
    out = list(candidates)
    names = [c.name for c in out]
    vectors = None
    if embed is not None and names:
        vectors = unit_rows(embed(names))
    keys = {criterion_key(n) for n in names}
    for name, explanation in COMMON_CRITERIA:
        if criterion_key(name) in keys:
            continue
        if vectors is not None:
            v = np.asarray(embed([name]), dtype=np.float64)[0]
            if float(np.max(vectors @ (v / max(np.linalg.norm(v), 1e-12)))) >= same:
                continue
        out.append(Candidate(name, explanation, [], {}))
    return out
