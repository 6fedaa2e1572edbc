"""The whole method: steps 2a, 2b and 3 on a list of descriptions, and the result to store."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from clipclust.errors import InputError
from clipclust.models.llm import CacheStats, DecodeParams, TextGenerator

from .parsing import _dedupe, normalise
from .prompts import STEPS, IctcPrompts, Layout, Mode, default_prompts
from .steps import NamesResult, StepProgress, _stats, assign, cluster_names, count_labels, filter_labels, raw_labels

@dataclass
class IctcResult:
    """Everything IC|TC produced, for storage, reports and evaluation."""

    criterion: str
    k: int
    mode: str
    prompts: IctcPrompts
    raw_outputs: list[str]
    raw_labels: list[str]
    dictionary: dict[str, int]
    kept: dict[str, int]
    min_count: int
    names: list[str]
    names_outputs: list[str]
    names_attempts: int
    names_fallback: list[str]
    answers: list[str]
    cluster_ids: list[int]
    matched: list[bool]
    extra: str | None = None
    params: DecodeParams = field(default_factory=DecodeParams)
    stats: dict[str, CacheStats] = field(default_factory=dict)

    @property
    def prompts_source(self) -> str:
        return self.prompts.source

    @property
    def unmatched(self) -> list[int]:
        """Items whose step-3 answer named no cluster (assigned to the closest name instead)."""
        return [i for i, m in enumerate(self.matched) if not m]

    @property
    def n_unmatched(self) -> int:
        return len(self.unmatched)

    def cluster_sizes(self) -> dict[str, int]:
        counts = Counter(self.cluster_ids)
        return {name: counts.get(i, 0) for i, name in enumerate(self.names)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (``--json``)."""
        return {
            "criterion": self.criterion,
            "k": self.k,
            "mode": self.mode,
            "prompts": {"source": self.prompts.source, **{s: getattr(self.prompts, s) for s in STEPS}},
            "extra": self.extra,
            "params": self.params.to_dict(),
            "names": self.names,
            "cluster_sizes": self.cluster_sizes(),
            "cluster_ids": self.cluster_ids,
            "answers": self.answers,
            "unmatched": self.unmatched,
            "raw_labels": self.raw_labels,
            "dictionary": self.dictionary,
            "kept": self.kept,
            "min_count": self.min_count,
            "names_attempts": self.names_attempts,
            "names_fallback": self.names_fallback,
            "calls": {s: {"hits": c.hits, "misses": c.misses} for s, c in self.stats.items()},
        }


def run_ictc(
    generator: TextGenerator | None,
    descriptions: Sequence[str],
    criterion: str,
    k: int,
    *,
    mode: Mode = "generate",
    prompts: IctcPrompts | None = None,
    params: DecodeParams | None = None,
    min_count: int | None = None,
    max_labels: int | None = 200,
    extra: str | None = None,
    retries: int = 2,
    embed: Callable[[Sequence[str]], Any] | None = None,
    layout: Layout = "instruction_first",
    names: Sequence[str] | None = None,
    progress: StepProgress | None = None,
) -> IctcResult:
    """Steps 2a, 2b and 3 on ``descriptions`` (step 1's output) for a criterion and K.

    ``params`` sets temperature/top_p/seed for every step (greedy by default); each step keeps its own
    token budget (2a: 24, 2b: 16 K + 64, 3: enough for the longest name). ``names`` skips steps 2a/2b
    (known class names). ``stats`` reports cache hits/misses per step when ``generator`` is a
    :class:`~clipclust.models.llm.CachedGenerator`.
    """
    if not descriptions:
        raise InputError("no descriptions to cluster")
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    if mode != "embed" and generator is None:
        raise InputError(f"{mode} mode needs an LLM")
    if names is None and generator is None:
        raise InputError("finding cluster names (steps 2a and 2b) needs an LLM")
    criterion = criterion.strip()
    prompts = prompts or default_prompts(criterion)
    base = params or DecodeParams()
    stats: dict[str, CacheStats] = {}

    def measured(step: str, fn: Callable[[], Any]) -> Any:
        before = _stats(generator) if generator is not None else None
        out = fn()
        after = _stats(generator) if generator is not None else None
        if before is not None and after is not None:
            stats[step] = after - before
        return out

    if names is None:
        assert generator is not None
        labels, outputs = measured(
            "step2a",
            lambda: raw_labels(
                generator, descriptions, criterion, prompts=prompts,
                params=replace(base, max_tokens=24), layout=layout, progress=progress,
            ),
        )
        dictionary = count_labels(labels)
        kept, threshold = filter_labels(
            dictionary, k, n_items=len(descriptions), min_count=min_count, max_labels=max_labels
        )
        nres: NamesResult = measured(
            "step2b",
            lambda: cluster_names(
                generator, kept, k, criterion, prompts=prompts,
                params=replace(base, max_tokens=16 * k + 64), extra=extra, retries=retries,
                dictionary=dictionary,
            ),
        )
        final_names, names_outputs, attempts, fallback = nres.names, nres.outputs, nres.attempts, nres.fallback
    else:
        labels, outputs, dictionary, kept, threshold = [], [], {}, {}, 0
        final_names = _dedupe([normalise(n) for n in names])
        if len(final_names) != k:
            raise InputError(f"{len(final_names)} distinct names given for k={k}")
        names_outputs, attempts, fallback = [], 0, []

    longest = max(len(n) for n in final_names)
    result = measured(
        "step3",
        lambda: assign(
            generator, descriptions, final_names, criterion, mode=mode, prompts=prompts,
            params=replace(base, max_tokens=max(32, longest // 2 + 16)), embed=embed,
            layout=layout, progress=progress,
        ),
    )
    return IctcResult(
        criterion=criterion, k=k, mode=mode, prompts=prompts, extra=extra, params=base,
        raw_outputs=outputs, raw_labels=labels, dictionary=dictionary, kept=kept,
        min_count=threshold, names=final_names, names_outputs=names_outputs,
        names_attempts=attempts, names_fallback=fallback, answers=result.answers,
        cluster_ids=result.cluster_ids, matched=result.matched, stats=stats,
    )
