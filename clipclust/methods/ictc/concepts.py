"""Names for the taxonomy's concepts, each at its own level, and the items placed through the tree.

A concept one label group dominates keeps that group's name (the fine case: the names the raw labels
give). A mixed concept ("whale, dolphin, seal") gets one short name from the LLM: one small call per
concept, cached like every call, whose answer must be short, not junk, not generic, distinct from the
other concepts' names and not a label of another concept (a name never sits beside its own child).
When the answer fails, label statistics name it: the head word most member labels share ("sports car,
race car" -> car), else the heaviest label.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
import numpy as np

from clipclust.models.llm import DecodeParams, GenerationRequest, TextGenerator

from clipclust.methods.ictc.parsing import _clean_name, is_junk_name, name_key
from clipclust.core.vectors import unit_rows
from clipclust.methods.ictc.grouping import LabelMatcher
from clipclust.methods.ictc.taxonomy import Taxonomy, concept_of_labels, mass, nearest_concepts, place_items

DOMINANT = 0.5
"""A concept whose heaviest label group holds more than this share of its mass is named by that group."""

MAX_SHOWN = 6
"""Member labels shown to the LLM (heaviest first)."""

NAME_SYSTEM = "You name groups of things. Answer with one short name (one or two words) and nothing else."
NAME_PROMPT = "One short name for: {labels}"
NAME_SHOTS = (("rose, tulip, daisy", "flowers"), ("hammer, saw, drill", "tools"))
"""Two worked examples from unrelated domains: without them a 0.5B model echoes the list back or
writes a sentence; with them it answers "birds", "vehicle", "animals" (measured, bench/ictc_quality.py)."""
GENERIC = frozenset("thing things object objects item items stuff entity entities kind kinds type types "
                    "variety various mixed group".split())


@dataclass
class ConceptNames:
    """The names of one cut, how each was found (``label``, ``llm``, ``head word``, ``heaviest label``),
    and the LLM's raw answers for the concepts it was asked about."""

    names: list[str]
    sources: list[str]
    outputs: dict[str, str] = field(default_factory=dict)

    def notes(self, tax: Taxonomy, concepts: Sequence[Sequence[int]]) -> list[str]:
        """One line per concept not named by a dominant label: its name, source and top labels."""
        out = []
        for name, source, leaves in zip(self.names, self.sources, concepts):
            if source != "label":
                top = ", ".join(list(mass(tax, leaves))[:MAX_SHOWN])
                out.append(f"{name!r} ({source}) for: {top}")
        return out


def name_request(labels: Sequence[str]) -> GenerationRequest:
    shots = [m for q, a in NAME_SHOTS for m in ({"role": "user", "content": NAME_PROMPT.format(labels=q)},
                                                {"role": "assistant", "content": a})]
    return GenerationRequest(({"role": "system", "content": NAME_SYSTEM}, *shots,
                              {"role": "user", "content": NAME_PROMPT.format(labels=", ".join(labels))}))


def read_name(raw: str) -> str:
    """The name in an answer: its first line without preamble, article or explanation; a list echoed
    back ("cat, dog, horse") reads as nothing."""
    line = next((ln for ln in raw.strip().splitlines() if ln.strip()), "")
    return "" if "," in line else _clean_name(line)


def _valid(answer: str, taken: set[str], members: set[str], criterion_key: str) -> bool:
    """Short, words only, not junk or generic, not the criterion, not a name already taken and not a
    label of another concept (that would name a sibling; the concept's own label may name it)."""
    key = name_key(answer)
    words = key.split()
    return (bool(key) and not is_junk_name(answer) and len(words) <= 3 and len(answer) <= 32
            and all(w.replace("-", "").isalpha() for w in words) and not set(words) <= GENERIC
            and key != criterion_key and key not in taken and key not in members)


def head_word(labels: Mapping[str, int]) -> str | None:
    """The last word that member labels carrying more than half of the mass share, when two or more do."""
    total = sum(labels.values())
    heads: dict[str, tuple[int, int]] = {}
    for lab, c in labels.items():
        words = name_key(lab).split()
        if words:
            n, m = heads.get(words[-1], (0, 0))
            heads[words[-1]] = (n + 1, m + c)
    best = max(heads.items(), key=lambda kv: (kv[1][1], kv[0]), default=None)
    if best is None or best[1][0] < 2 or best[1][1] * 2 <= total:
        return None
    return best[0]


def name_concepts(
    tax: Taxonomy, concepts: Sequence[Sequence[int]], generator: TextGenerator | None, criterion: str = "",
    params: DecodeParams | None = None,
) -> ConceptNames:
    """A distinct name per concept: the dominant group's, else the LLM's validated answer, else label
    statistics. All LLM questions of a cut go in one batch (each cached on its own)."""
    labels = [mass(tax, leaves) for leaves in concepts]
    dominant = [tax.groups[leaves[0]].count > DOMINANT * sum(lab.values()) for leaves, lab in zip(concepts, labels)]
    names: list[str | None] = [tax.groups[leaves[0]].name if d else None for leaves, d in zip(concepts, dominant)]
    sources = ["label" if d else "" for d in dominant]
    members = [{name_key(lab) for lab in lab_counts} for lab_counts in labels]
    asked = [i for i, d in enumerate(dominant) if not d]
    outputs: dict[str, str] = {}
    if asked and generator is not None:
        reqs = [name_request(list(labels[i])[:MAX_SHOWN]) for i in asked]
        answers = generator.generate(reqs, params or DecodeParams(max_tokens=12))
        outputs = {names_key(labels[i]): a for i, a in zip(asked, answers)}
    taken = {name_key(n) for n in names if n}
    crit = name_key(criterion)
    answers = {i: read_name(outputs.get(names_key(labels[i]), "")) for i in asked}
    said = [name_key(a) for a in answers.values() if a]
    for i in asked:
        answer = answers[i]
        foreign = set().union(*(members[j] for j in range(len(concepts)) if j != i))
        # One answer for two concepts names neither: both fall back to what their labels say.
        if answer and said.count(name_key(answer)) == 1 and _valid(answer, taken, foreign, crit):
            names[i], sources[i] = answer, "llm"
        else:
            head = head_word(labels[i])
            if head and _valid(head, taken, foreign, ""):
                names[i], sources[i] = head, "head word"
            else:
                free = [lab for lab in labels[i] if name_key(lab) not in taken]
                names[i], sources[i] = (free or list(labels[i]))[0], "heaviest label"
        taken.add(name_key(names[i] or ""))
    return ConceptNames([str(n) for n in names], sources, outputs)


def names_key(labels: Mapping[str, int]) -> str:
    return ", ".join(list(labels)[:MAX_SHOWN])


@dataclass
class Placement:
    """Step 3 through the tree: a concept per item, and whether its raw label put it there."""

    ids: list[int]
    by_label: list[bool]

    @property
    def coverage(self) -> float:
        """The share of items whose raw label lies in their concept (or names one of its labels)."""
        return sum(self.by_label) / len(self.by_label) if self.by_label else 0.0


def place(
    tax: Taxonomy, concepts: Sequence[Sequence[int]], labels: Sequence[str], desc_vecs: np.ndarray,
    rest: Callable[[list[int]], list[int]] | None = None, name_vecs: np.ndarray | None = None,
) -> Placement:
    """Raw label -> group -> concept; a label outside the tree that names a tree label by its words
    ("airplane wing" -> airplane) -> that label's concept; the other items go to ``rest(rows)`` when
    given (an LLM), else to the concept nearest their description: the cosine to the concept's
    description centroid plus, given ``name_vecs``, the cosine to its name (what ``label-embed`` uses)."""
    placed, centroids = place_items(tax, concepts, labels, desc_vecs)
    of = concept_of_labels(tax, concepts)
    tree_labels = list(of)
    matcher = LabelMatcher(tree_labels) if tree_labels else None
    for i, c in enumerate(placed):
        if c is None and labels[i] and matcher is not None:
            hit = matcher.lexical(labels[i])
            placed[i] = of[tree_labels[hit]] if hit is not None else None
    todo = [i for i, c in enumerate(placed) if c is None]
    found = (rest(todo) if rest is not None and todo
             else nearest_concepts(desc_vecs, centroids, todo, None if name_vecs is None else unit_rows(name_vecs)))
    ids = [c if c is not None else -1 for c in placed]
    for i, c in zip(todo, found):
        ids[i] = int(c)
    return Placement(ids, [c is not None for c in placed])


def coverage_of(ids: Sequence[int], labels: Sequence[str], of: Mapping[str, int]) -> float:
    """The share of items whose raw label lies in the concept they were assigned (any assignment mode)."""
    return sum(of.get(lab) == cid for lab, cid in zip(labels, ids)) / len(ids) if len(ids) else 0.0
