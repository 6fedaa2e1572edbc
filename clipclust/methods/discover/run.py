"""The whole proposal: sample, propose per batch, merge and rank, check the best candidates by their labels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clipclust.errors import InputError
from clipclust.models.llm import CachedGenerator, DecodeParams, TextGenerator

from clipclust.methods.discover.proposing import (Candidate, Embedder, batches, merge_candidates, propose, sample_order,
                                                  with_common)
from clipclust.methods.discover.scoring import LabelStats, all_different, duplicate_of, label_stats

PER_BATCH = 3
"""Criteria asked of each batch: a few short lines a 0.5B model can write without drifting."""
PROPOSE_TOKENS = 72
"""Room for the example's lines a small model repeats first, and three of its own."""
LABEL_TOKENS = 24

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: "propose" once, "labels" after each criterion checked."""


@dataclass
class Criterion:
    """One proposed criterion that holds in the data."""

    name: str
    explanation: str
    values: list[tuple[str, int]]
    n_groups: int
    n_labelled: int
    n_sampled: int
    support: int
    wordings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"criterion": self.name, "explanation": self.explanation,
                "values": [{"value": v, "count": c} for v, c in self.values], "groups": self.n_groups,
                "labelled": self.n_labelled, "sampled": self.n_sampled, "batches": self.support,
                "wordings": self.wordings}


@dataclass
class DiscoverResult:
    """The kept criteria (best first), the dropped candidates with the reason, and what the run saw."""

    criteria: list[Criterion]
    dropped: list[dict[str, Any]]
    n_batches: int
    n_sampled: int
    n_label_sample: int
    n_candidates: int
    answers: list[str]
    warnings: list[str]
    calls: dict[str, int] = field(default_factory=dict)


def run_discover(generator: TextGenerator, texts: Sequence[str], n: int, *, sample: int = 48, batch: int = 8,
                 label_sample: int = 24, check: int | None = None, seed: int = 0, embed: Embedder | None = None,
                 progress: Progress | None = None) -> DiscoverResult:
    """Up to ``n`` distinct criteria for the collection ``texts``.

    ``sample`` descriptions (seeded) go to the LLM in batches of ``batch``, each asked for a few criteria;
    the merged candidates, then the common criteria none of them is, are checked in that order, at most
    ``check`` of them (default ``n + 3``), each by step 2a on the first ``label_sample`` of the sample; a
    criterion's ``support`` is the number of batches that proposed it (0: a common one). Every call goes through ``generator`` (wrap
    it in a :class:`CachedGenerator` to make re-runs free).
    """
    if n < 1:
        raise InputError(f"the number of criteria must be at least 1, got {n}", option="n")
    if sample < 2:
        raise InputError(f"the sample must hold at least 2 descriptions, got {sample}", option="sample")
    if batch < 1:
        raise InputError(f"a batch must hold at least 1 description, got {batch}", option="batch")
    if label_sample < 2:
        raise InputError(f"the label sample must hold at least 2 descriptions, got {label_sample}",
                         option="label_sample")
    if len(texts) < 2:
        raise InputError(f"criteria need at least 2 descriptions to compare; the set holds {len(texts)}")
    check = n + 3 if check is None else max(check, n)
    order = sample_order(len(texts), sample, seed)
    groups = batches(order, batch)
    before = generator.stats.copy() if isinstance(generator, CachedGenerator) else None
    proposals, answers = propose(generator, texts, groups, PER_BATCH,
                                 DecodeParams(max_tokens=PROPOSE_TOKENS, temperature=0.0, seed=seed))
    if progress is not None:
        progress("propose", len(groups), len(groups))
    candidates = merge_candidates(proposals, embed)
    checked_in_order = with_common(candidates, embed)
    label_texts = [texts[i] for i in order[:label_sample]]
    params = DecodeParams(max_tokens=LABEL_TOKENS, temperature=0.0, seed=seed)
    kept: list[tuple[Candidate, LabelStats]] = []
    dropped: list[dict[str, Any]] = []
    checked = 0
    for candidate in checked_in_order:
        if len(kept) >= n or checked >= check:
            break
        checked += 1
        stats = label_stats(generator, label_texts, candidate.name, params=params, embed=embed)
        if progress is not None:
            progress("labels", checked, min(check, len(checked_in_order)))
        reason = stats.verdict or duplicate_of(stats, [s for _, s in kept], embed=embed) or ""
        if not reason and all_different(stats.groups):
            reason = f"all different (no value seen twice in {len(label_texts)})"
        if reason:
            dropped.append({"criterion": candidate.name, "reason": reason, "batches": candidate.support,
                            "values": [{"value": v, "count": c} for v, c in stats.values]})
        else:
            kept.append((candidate, stats))
    criteria = [Criterion(c.name, c.explanation, s.values, s.n_groups, s.n_labelled, len(label_texts), c.support,
                          sorted(c.forms, key=lambda f: (-c.forms[f], f))) for c, s in kept]
    result = DiscoverResult(criteria, dropped, len(groups), len(order), len(label_texts), len(candidates),
                            answers, degenerate_warnings(proposals, candidates, criteria, dropped, n))
    if before is not None and isinstance(generator, CachedGenerator):
        spent = generator.stats - before
        result.calls = {"hits": spent.hits, "misses": spent.misses}
    return result


def degenerate_warnings(proposals: Sequence[Sequence[tuple[str, str]]], candidates: Sequence[Candidate],
                        criteria: Sequence[Criterion], dropped: Sequence[dict[str, Any]], n: int) -> list[str]:
    """What a user should know about a weak result: no usable answer, one criterion repeated by every
    batch and nothing else, criteria with one value for every sampled item, fewer criteria than asked."""
    out: list[str] = []
    empty = sum(1 for found in proposals if not found)
    if proposals and empty == len(proposals):
        out.append(f"none of the {len(proposals)} batches' answers named a criterion; the LLM may be too weak "
                   "for the proposal prompt")
    elif empty:
        out.append(f"{empty} of {len(proposals)} batches' answers named no criterion")
    if len(proposals) > 1 and len(candidates) == 1 and candidates[0].support == len(proposals):
        out.append(f"every batch proposed the same criterion, {candidates[0].name!r}, and nothing else: the "
                   "proposals do not vary with the data")
    one = [d["criterion"] for d in dropped if d["reason"] == "one value"]
    if one:
        out.append(f"dropped {', '.join(repr(c) for c in one)}: one value for every sampled description")
    if len(criteria) < n:
        out.append(f"found {len(criteria)} distinct criteria of the {n} asked ({len(candidates)} proposed, "
                   f"{len(dropped)} dropped); a larger sample may find more")
    return out
