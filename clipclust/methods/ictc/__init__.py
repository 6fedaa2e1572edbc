"""IC|TC: image clustering conditioned on a text criterion (Kwon et al., ICLR 2024).

Step 1 (a VLM describes each image for the criterion) lives in :mod:`clipclust.models.vlm`; this
package takes the descriptions and runs the LLM steps:

- step 2a: one raw label per description (``Answer: {label}``);
- step 2b: the K names: from the LLM (the paper: the label dictionary, rare labels dropped, robust
  parsing, a bounded repair dialogue, a reported fallback), from the heaviest groups of raw labels
  (``frequent``, no LLM call), the LLM's with the unsupported ones replaced (``hybrid``), or the label
  groups in one count-weighted tree cut at K, each concept named at its own level (``taxonomy``: its
  dominant label, else one short cached LLM name, else label statistics), which also chooses K
  (``auto``: the values a criterion such as "animal or vehicle" names, each label under its nearest
  value, else the tree's clearest gap) and gives coarser levels;
- step 3: every description to one name: a free answer matched afterwards (the paper), decoding
  restricted to the names (``constrained``), the step-2a label's name (``label``, ``label-embed``),
  the nearest name in a text embedding space (``embed``) or by CLIP image vectors (``clip``).

Answers that match no name go to the closest name by a deterministic similarity and are counted and
reported; nothing is ever assigned at random (the released code's bug). Every LLM call goes through
the generator passed in, so wrapping it in :class:`~clipclust.models.llm.CachedGenerator` makes
re-runs free and prompt edits cheap.

One module per concern: :mod:`.prompts` (templates, requests), :mod:`.parsing` (outputs -> labels
and names), :mod:`.matching` (answer -> name), :mod:`.steps` (2a, 2b), :mod:`.grouping` (raw labels -> concepts,
names from them, coverage), :mod:`.assigning` (step 3 by the LLM, by label, embedding or CLIP scores;
degenerate warnings), :mod:`.taxonomy` (the label tree, its cuts, K from its gaps), :mod:`.concepts`
(a cut's names, items placed through it), :mod:`.hierarchy` (the tree in a run: auto K, levels),
:mod:`.run` (the whole method) and :mod:`.method` (the registry entry: options,
inputs, what a run reports). Importing descriptions made
elsewhere is :mod:`clipclust.commands.describe.importing`.
"""

from __future__ import annotations

from clipclust.methods.ictc.prompts import (
    NAMES_MODES,
    IctcPrompts,
    MODES,
    PLACEHOLDERS,
    PRESETS,
    REPAIR_PROMPT,
    STEPS,
    assign_request,
    default_prompts,
    describe_prompt,
    fill,
    format_label_dict,
    label_request,
    names_literal,
    names_messages,
    preset_for,
    repair_message,
)
from clipclust.methods.ictc.parsing import (
    short_label,
    is_junk_name,
    name_key,
    normalise,
    parse_answer,
    parse_names,
)
from clipclust.methods.ictc.matching import (
    Match,
    match_answer,
    ngram_embedder,
    similarity,
)
from clipclust.methods.ictc.steps import (
    Assignment,
    MIN_COUNT_FRACTION,
    NamesResult,
    cluster_names,
    count_labels,
    default_min_count,
    filter_labels,
    fix_name_count,
    raw_labels,
)
from clipclust.methods.ictc.assigning import (
    DOMINANT_SHARE,
    assign,
    assign_by_embedding,
    assign_by_label,
    assign_by_scores,
    degenerate_warnings,
    evidence_matched,
)
from clipclust.methods.ictc.grouping import (
    LabelGroup,
    LabelMatcher,
    coverage,
    frequent_names,
    group_labels,
    hybrid_names,
    match_label,
)
from clipclust.methods.ictc.run import (
    names_budget,
    IctcResult,
    run_ictc,
)

__all__ = [
    "short_label",
    "DOMINANT_SHARE",
    "NAMES_MODES",
    "LabelGroup",
    "LabelMatcher",
    "assign_by_embedding",
    "assign_by_label",
    "assign_by_scores",
    "coverage",
    "degenerate_warnings",
    "evidence_matched",
    "frequent_names",
    "group_labels",
    "hybrid_names",
    "match_label",
    "names_budget",
    "Assignment",
    "IctcPrompts",
    "IctcResult",
    "MIN_COUNT_FRACTION",
    "MODES",
    "Match",
    "NamesResult",
    "PLACEHOLDERS",
    "PRESETS",
    "REPAIR_PROMPT",
    "STEPS",
    "assign",
    "assign_request",
    "cluster_names",
    "count_labels",
    "default_min_count",
    "default_prompts",
    "describe_prompt",
    "fill",
    "filter_labels",
    "is_junk_name",
    "fix_name_count",
    "format_label_dict",
    "label_request",
    "match_answer",
    "name_key",
    "names_literal",
    "names_messages",
    "ngram_embedder",
    "normalise",
    "parse_answer",
    "parse_names",
    "preset_for",
    "raw_labels",
    "repair_message",
    "run_ictc",
    "similarity",
]
