"""The LLM steps 2a (raw labels) and 2b (K names, repaired), the step-3 outcome, and how calls are sent.

Step 3 itself (one name per description, by the LLM or without it) is :mod:`.assigning`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from clipclust.errors import InputError
from clipclust.models.llm import CacheStats, CachedGenerator, DecodeParams, GenerationRequest, TextGenerator

from clipclust.methods.ictc.matching import match_answer
from clipclust.methods.ictc.parsing import _dedupe, name_key, parse_answer, parse_names, short_label
from clipclust.methods.ictc.prompts import (
    IctcPrompts,
    Layout,
    default_prompts,
    label_request,
    names_messages,
    repair_message,
)

StepProgress = Callable[[str, int, int], None]
"""``progress(step, done, total)`` after each chunk of calls of a step."""


def _stats(generator: TextGenerator) -> CacheStats | None:
    return generator.stats.copy() if isinstance(generator, CachedGenerator) else None


def _run_requests(
    generator: TextGenerator,
    requests: Sequence[GenerationRequest],
    params: DecodeParams,
    step: str,
    progress: StepProgress | None,
) -> list[str]:
    """Send requests in chunks so progress is reported (and a cache flushed) as work completes."""
    chunk = max(8, 4 * generator.max_concurrency)
    out: list[str] = []
    for start in range(0, len(requests), chunk):
        out.extend(generator.generate(requests[start : start + chunk], params))
        if progress is not None:
            progress(step, len(out), len(requests))
    return out


def raw_labels(
    generator: TextGenerator,
    descriptions: Sequence[str],
    criterion: str,
    *,
    prompts: IctcPrompts | None = None,
    params: DecodeParams | None = None,
    layout: Layout = "instruction_first",
    progress: StepProgress | None = None,
) -> tuple[list[str], list[str]]:
    """Step 2a: ``(labels, raw outputs)``, one label per description (parsed, normalised, a sentence
    cut to the thing it names: :func:`~.parsing.short_label`)."""
    prompts = prompts or default_prompts(criterion)
    params = params or DecodeParams(max_tokens=24)
    reqs = [label_request(d, criterion, prompts, layout) for d in descriptions]
    outputs = _run_requests(generator, reqs, params, "step2a", progress)
    return [short_label(parse_answer(o)) for o in outputs], outputs


def count_labels(labels: Sequence[str]) -> dict[str, int]:
    """The label dictionary ``{label: count}``, most frequent first (ties alphabetical); empty
    labels are left out."""
    counts = Counter(lab for lab in labels if lab)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


MIN_COUNT_FRACTION = 0.002
"""Default rare-label threshold as a fraction of N. The authors' code keeps labels with count > 15
(GPT) or > 30 (Llama) on ~10k images, and the paper found thresholds of 5-10 helpful; 0.2% of N gives
20 on 10k images, between those, and scales with the data set instead of being absolute."""


def default_min_count(n_items: int) -> int:
    """``max(2, ceil(0.002 * N))``: drop singletons always, and labels under 0.2% of the items."""
    return max(2, math.ceil(MIN_COUNT_FRACTION * n_items))


def filter_labels(
    dictionary: Mapping[str, int],
    k: int,
    *,
    n_items: int | None = None,
    min_count: int | None = None,
    max_labels: int | None = 200,
) -> tuple[dict[str, int], int]:
    """Drop rare labels: keep ``count >= min_count`` (default :func:`default_min_count`).

    If fewer than ``k`` labels would survive, the threshold is lowered until ``k`` do (or all are
    kept), because the names step needs material for K clusters. ``max_labels`` then keeps only the
    most frequent labels so the step-2b prompt fits a context window. Returns ``(kept, threshold)``.
    """
    if min_count is None:
        min_count = default_min_count(n_items if n_items is not None else sum(dictionary.values()))
    if min_count < 1:
        raise InputError(f"min_count must be >= 1, got {min_count}")
    ordered = sorted(dictionary.items(), key=lambda kv: (-kv[1], kv[0]))
    threshold = min_count
    while threshold > 1 and sum(1 for _, c in ordered if c >= threshold) < k:
        threshold -= 1
    kept = [(lab, c) for lab, c in ordered if c >= threshold]
    if max_labels is not None:
        kept = kept[: max(max_labels, k)]
    return dict(kept), threshold


@dataclass
class NamesResult:
    """Step 2b's outcome: the K names, every raw output, and what the fallback had to do."""

    names: list[str]
    outputs: list[str]
    attempts: int
    fallback: list[str] = field(default_factory=list)

    @property
    def repaired(self) -> bool:
        return self.attempts > 1

    @property
    def used_fallback(self) -> bool:
        return bool(self.fallback)


def _support(names: Sequence[str], dictionary: Mapping[str, int]) -> list[int]:
    """How many items' labels each name would attract (labels go to their matching name)."""
    support = [0] * len(names)
    for label, count in dictionary.items():
        support[match_answer(label, names).index] += count
    return support


def fix_name_count(
    names: Sequence[str], k: int, kept: Mapping[str, int], dictionary: Mapping[str, int]
) -> tuple[list[str], list[str]]:
    """Deterministic last resort for a wrong number of names. Too many: keep the ``k`` names the
    label dictionary supports most (ties: earlier), in their order. Too few: add the most frequent
    kept labels, then any labels, that are not yet names. Returns ``(names, notes)``."""
    names = _dedupe(list(names))
    notes: list[str] = []
    if len(names) > k:
        support = _support(names, dictionary or kept)
        order = sorted(range(len(names)), key=lambda i: (-support[i], i))
        keep = sorted(order[:k])
        for i in sorted(order[k:]):
            notes.append(f"dropped {names[i]!r} (supported by {support[i]} items)")
        names = [names[i] for i in keep]
    if len(names) < k:
        have = {name_key(n) for n in names}
        for source in (kept, dictionary):
            for label, count in source.items():
                if len(names) >= k:
                    break
                key = name_key(label)
                if key and key not in have:
                    names.append(label)
                    have.add(key)
                    notes.append(f"added label {label!r} ({count} items)")
    if len(names) < k:
        raise InputError(
            f"cannot name {k} clusters: the descriptions yielded only {len(names)} distinct labels "
            f"({', '.join(names)}); lower k"
        )
    return names, notes


def cluster_names(
    generator: TextGenerator,
    kept: Mapping[str, int],
    k: int,
    criterion: str,
    *,
    prompts: IctcPrompts | None = None,
    params: DecodeParams | None = None,
    extra: str | None = None,
    retries: int = 2,
    dictionary: Mapping[str, int] | None = None,
) -> NamesResult:
    """Step 2b: exactly ``k`` distinct names from the (filtered) label dictionary.

    The output is parsed with :func:`parse_names`; a wrong count (fewer, more, duplicates) starts a
    repair turn that shows the model what it gave, at most ``retries`` times; if the count is still
    wrong, :func:`fix_name_count` trims or fills deterministically and says what it did.
    """
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    if not kept:
        raise InputError("no labels to name clusters from (step 2a produced no labels)")
    prompts = prompts or default_prompts(criterion)
    params = params or DecodeParams(max_tokens=16 * k + 64)
    messages = list(names_messages(kept, k, criterion, prompts, extra))
    outputs: list[str] = []
    parsed: list[list[str]] = []
    for attempt in range(retries + 1):
        out = generator.generate([GenerationRequest(tuple(messages))], params)[0]
        outputs.append(out)
        names = parse_names(out, k)
        parsed.append(names)
        if len(names) == k:
            return NamesResult(names, outputs, attempt + 1)
        messages += [{"role": "assistant", "content": out}, repair_message(names, k, criterion)]
    # Closest count wins; on ties the later attempt (it saw the feedback).
    best = min(range(len(parsed)), key=lambda i: (abs(len(parsed[i]) - k), -i))
    names, notes = fix_name_count(parsed[best], k, kept, dictionary or kept)
    return NamesResult(names, outputs, len(outputs), notes)


@dataclass
class Assignment:
    """Step 3's outcome per item: the raw answer, the cluster id and whether it named a cluster."""

    answers: list[str]
    cluster_ids: list[int]
    matched: list[bool]

    @property
    def unmatched(self) -> list[int]:
        return [i for i, m in enumerate(self.matched) if not m]
