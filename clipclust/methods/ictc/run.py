"""The whole method: steps 2a, 2b and 3 on a list of descriptions, and the result to store."""

from __future__ import annotations

from collections import Counter
from functools import cache
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from clipclust.errors import InputError
from clipclust.models.llm import CacheStats, DecodeParams, TextGenerator

from clipclust.methods.ictc.assigning import (assign, assign_by_embedding, assign_by_label, assign_by_scores,
                                              degenerate_warnings)
from clipclust.methods.ictc.concepts import coverage_of, name_concepts, place
from clipclust.methods.ictc.grouping import coverage, frequent_names, group_labels, hybrid_names
from clipclust.methods.ictc.hierarchy import Level, TreeNames, coarser_levels, labels_at_level, tree_names
from clipclust.methods.ictc.parsing import _dedupe, normalise
from clipclust.methods.ictc.prompts import MODES, NAMES_MODES, STEPS, IctcPrompts, Layout, Mode, NamesMode, default_prompts
from clipclust.methods.ictc.steps import (
    Assignment,
    NamesResult,
    StepProgress,
    _stats,
    cluster_names,
    count_labels,
    filter_labels,
    raw_labels,
)

Embedder = Callable[[Sequence[str]], Any]
"""texts -> one vector per text (a sentence encoder)."""

ClipScores = Callable[[Sequence[str]], Any]
"""names -> an items x names score matrix (CLIP image vectors against the names' text vectors)."""


def names_budget(prompts: IctcPrompts, k: int) -> int:
    """Step 2b's token budget: 16 per name, 48 when the template asks for a reason per name (the
    paper's object and instrument presets do), plus room for a preamble."""
    per_name = 48 if "reason" in prompts.step2b.lower() else 16
    return per_name * k + 64


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
    names_mode: str = "llm"
    names_proposed: list[str] = field(default_factory=list)
    names_replacements: list[str] = field(default_factory=list)
    coverage: float | None = None
    n_llm_assigned: int = 0
    warnings: list[str] = field(default_factory=list)
    names_sources: list[str] = field(default_factory=list)
    names_notes: list[str] = field(default_factory=list)
    names_choice: str = ""
    k_evidence: list[str] = field(default_factory=list)
    levels: list[Level] = field(default_factory=list)

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
        """JSON-ready view."""
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
            "names_mode": self.names_mode,
            "names_proposed": self.names_proposed,
            "names_replacements": self.names_replacements,
            "coverage": self.coverage,
            "n_llm_assigned": self.n_llm_assigned,
            "warnings": self.warnings,
            "names_sources": self.names_sources,
            "names_notes": self.names_notes,
            "names_choice": self.names_choice,
            "k_evidence": self.k_evidence,
            "levels": [{"k": lv.k, "names": lv.names, "cluster_ids": lv.ids, "parents_of_finer": lv.parents_of_finer}
                       for lv in self.levels],
            "calls": {s: {"hits": c.hits, "misses": c.misses} for s, c in self.stats.items()},
        }


def run_ictc(
    generator: TextGenerator | None,
    descriptions: Sequence[str],
    criterion: str,
    k: int | str,
    *,
    mode: Mode = "generate",
    names_mode: NamesMode = "llm",
    prompts: IctcPrompts | None = None,
    params: DecodeParams | None = None,
    min_count: int | None = None,
    max_labels: int | None = 200,
    extra: str | None = None,
    retries: int = 2,
    embed: Embedder | None = None,
    clip_scores: ClipScores | None = None,
    layout: Layout = "instruction_first",
    names: Sequence[str] | None = None,
    progress: StepProgress | None = None,
    levels: int = 1,
) -> IctcResult:
    """Steps 2a, 2b and 3 on ``descriptions`` (step 1's output) for a criterion and K.

    ``names_mode``: ``llm`` (step 2b, the paper), ``frequent`` (the K heaviest groups of raw labels,
    no LLM call) or ``hybrid`` (the LLM's names, the ones the raw labels barely support replaced by
    the heaviest uncovered groups). ``mode`` (step 3): ``generate`` / ``constrained`` (an LLM call per
    item), ``label`` (the step-2a label matched to a name; the LLM only for labels matching none),
    ``embed`` (nearest name by ``embed``) or ``clip`` (``clip_scores(names)``). ``embed``, when
    given, also merges near-duplicate labels. ``params`` sets temperature/top_p/seed for every step
    (greedy by default); each step keeps its own token budget (2a: 24, 2b: :func:`names_budget`, 3:
    enough for the longest name). ``names`` skips step 2b (known class names; step 2a still runs for
    ``label``). ``names_mode`` ``taxonomy``: the label groups in one count-weighted tree cut at K, each
    concept named at its own level (:mod:`.concepts`), items placed through the tree by ``label`` and
    ``label-embed``. ``k="auto"`` takes K from the tree's clearest merge-cost gap (any names mode);
    ``levels`` 2 or 3 adds that many coarser cuts (taxonomy names only). ``stats`` reports cache hits/misses per step when ``generator`` is a
    :class:`~clipclust.models.llm.CachedGenerator`.
    """
    if not descriptions:
        raise InputError("no descriptions to cluster")
    if k != "auto" and int(k) < 1:
        raise InputError(f"k must be >= 1, got {k}")
    if levels not in (1, 2, 3):
        raise InputError(f"levels must be 1, 2 or 3, got {levels}")
    if levels > 1 and names_mode not in ("taxonomy", "auto"):
        raise InputError("coarser levels are cuts of the label taxonomy; choose names taxonomy or auto")
    if (k == "auto" or levels > 1) and names is not None:
        raise InputError("k auto and levels work on the raw labels' taxonomy; given names fix K and one level")
    if mode not in MODES:
        raise InputError(f"unknown step-3 mode {mode!r}; choose one of {', '.join(MODES)}")
    if names_mode not in NAMES_MODES:
        raise InputError(f"unknown names mode {names_mode!r}; choose one of {', '.join(NAMES_MODES)}")
    if mode in ("generate", "constrained") and generator is None:
        raise InputError(f"{mode} assignment needs an LLM")
    if mode in ("embed", "label-embed") and embed is None:
        raise InputError(f"{mode} assignment needs a text embedding model")
    if mode == "clip" and clip_scores is None:
        raise InputError("clip assignment needs the items' stored image vectors and a CLIP model")
    tree_needed = names is None and (names_mode in ("taxonomy", "auto") or k == "auto")
    if tree_needed and embed is None:
        raise InputError("the label taxonomy (names taxonomy, k auto) needs a text embedding model")
    needs_labels = names is None or mode in ("label", "label-embed")
    if needs_labels and generator is None:
        raise InputError("step 2a (a raw label per description) needs an LLM")
    criterion = criterion.strip()
    prompts = prompts or default_prompts(criterion)
    base = params or DecodeParams()
    stats: dict[str, CacheStats] = {}

    def measured(step: str, fn: Callable[[], Any]) -> Any:
        before = _stats(generator) if generator is not None else None
        out = fn()
        after = _stats(generator) if generator is not None else None
        if before is not None and after is not None:
            diff = after - before
            if step in stats:  # a step measured in parts (the tree's names, then the levels')
                diff.hits, diff.misses = diff.hits + stats[step].hits, diff.misses + stats[step].misses
            stats[step] = diff
        return out

    labels: list[str] = []
    outputs: list[str] = []
    dictionary: dict[str, int] = {}
    kept: dict[str, int] = {}
    threshold = 0
    if needs_labels:
        assert generator is not None
        labels, outputs = measured(
            "step2a",
            lambda: raw_labels(
                generator, descriptions, criterion, prompts=prompts,
                params=replace(base, max_tokens=24), layout=layout, progress=progress,
            ),
        )
        dictionary = count_labels(labels)
    groups = cache(lambda: group_labels(dictionary, embed))  # the label groups, computed once if at all
    tree: TreeNames | None = None
    names_note = ""
    if tree_needed:
        tree = measured("step2b", lambda: tree_names(groups(), labels, descriptions, embed, k,
                                                     generator, criterion, name=names_mode == "taxonomy"))
        k = tree.k
        if tree.from_values and names_mode not in ("auto", "taxonomy"):
            tree.named = None  # an explicit names mode names the values' K as it would a given K
        if names_mode == "auto" and tree.from_values:
            names_note, names_mode = "auto: the values the criterion names", "taxonomy"
        elif names_mode == "auto":
            at_level, why = labels_at_level(tree, groups(), sum(dictionary.values()))
            names_chosen = "frequent" if at_level and levels == 1 else "taxonomy"
            if names_chosen == "taxonomy":
                tree.named = measured("step2b", lambda: name_concepts(tree.tax, tree.concepts, generator, criterion))
            names_note = f"auto: levels need the concepts ({why})" if at_level and levels > 1 else f"auto: {why}"
            names_mode = names_chosen
    k = int(k)
    if needs_labels:
        kept, threshold = filter_labels(
            dictionary, k, n_items=len(descriptions), min_count=min_count, max_labels=max_labels
        )
    names_outputs: list[str] = []
    attempts = 0
    fallback: list[str] = []
    proposed: list[str] = []
    replacements: list[str] = []
    if names is not None:
        final_names = _dedupe([normalise(n) for n in names])
        if len(final_names) != k:
            raise InputError(f"{len(final_names)} distinct names given for k={k}")
    elif tree is not None and tree.named is not None:
        final_names, names_outputs = tree.named.names, list(tree.named.outputs.values())
    elif names_mode == "frequent":
        final_names = frequent_names(groups(), k)
    else:
        assert generator is not None
        nres: NamesResult = measured(
            "step2b",
            lambda: cluster_names(
                generator, kept, k, criterion, prompts=prompts,
                params=replace(base, max_tokens=names_budget(prompts, k)), extra=extra, retries=retries,
                dictionary=dictionary,
            ),
        )
        final_names, names_outputs, attempts, fallback = nres.names, nres.outputs, nres.attempts, nres.fallback
        if names_mode == "hybrid":
            proposed = list(final_names)
            hybrid = hybrid_names(proposed, groups(), dictionary, len(descriptions))
            final_names, replacements = hybrid.names, hybrid.replacements

    longest = max(len(n) for n in final_names)
    step3_params = replace(base, max_tokens=max(32, longest // 2 + 16))
    n_llm = 0

    def step3() -> Assignment:
        nonlocal n_llm
        if tree is not None and tree.named is not None and mode in ("label", "label-embed"):
            return _through_tree(tree, final_names)
        if mode in ("label", "label-embed"):
            result, n_llm = assign_by_label(
                generator, descriptions, labels, final_names, criterion, prompts=prompts,
                params=step3_params, layout=layout, progress=progress,
                embed=embed if mode == "label-embed" else None,
            )
            return result
        if mode == "embed":
            assert embed is not None
            return assign_by_embedding(embed, descriptions, final_names, labels or None)
        if mode == "clip":
            assert clip_scores is not None
            return assign_by_scores(clip_scores(final_names), final_names, descriptions, labels or None)
        n_llm = len(descriptions)
        return assign(
            generator, descriptions, final_names, criterion, mode=mode, prompts=prompts,
            params=step3_params, layout=layout, progress=progress,
        )

    def _through_tree(tree: TreeNames, final_names: list[str]) -> Assignment:
        def by_llm(rows: list[int]) -> list[int]:
            nonlocal n_llm
            n_llm = len(rows)
            return assign(generator, [descriptions[i] for i in rows], final_names, criterion, mode="constrained",
                          prompts=prompts, params=step3_params, layout=layout, progress=progress).cluster_ids

        names_vecs = embed(final_names) if embed is not None else None
        placed = place(tree.tax, tree.concepts, labels, tree.desc_vecs, rest=by_llm if mode == "label" else None,
                       name_vecs=None if names_vecs is None else np.asarray(names_vecs, dtype=np.float64))
        if progress is not None:
            progress("step3", len(placed.ids), len(placed.ids))
        return Assignment([final_names[i] for i in placed.ids], placed.ids, placed.by_label)

    result: Assignment = measured("step3", step3)
    warnings = degenerate_warnings(result.cluster_ids, final_names)
    level_list: list[Level] = []
    if tree is not None and levels > 1:
        level_list, notes = measured("step2b", lambda: coarser_levels(tree, result.cluster_ids, labels, levels,
                                                                      generator, criterion))
        warnings += notes
    if tree is not None and tree.named is not None:
        cover = coverage_of(result.cluster_ids, labels, tree.concept_of) if labels else None
    else:
        cover = coverage(final_names, dictionary) if dictionary else None
    return IctcResult(
        criterion=criterion, k=k, mode=mode, prompts=prompts, extra=extra, params=base,
        raw_outputs=outputs, raw_labels=labels, dictionary=dictionary, kept=kept,
        min_count=threshold, names=final_names, names_outputs=names_outputs,
        names_attempts=attempts, names_fallback=fallback, answers=result.answers,
        cluster_ids=result.cluster_ids, matched=result.matched, stats=stats,
        names_mode="given" if names is not None else names_mode, names_proposed=proposed, names_choice=names_note,
        names_replacements=replacements,
        coverage=cover, n_llm_assigned=n_llm, warnings=warnings,
        names_sources=tree.named.sources if tree is not None and tree.named is not None else [],
        names_notes=tree.named.notes(tree.tax, tree.concepts) if tree is not None and tree.named is not None else [],
        k_evidence=tree.k_evidence if tree is not None else [], levels=level_list,
    )
