"""The proposal prompt (a few criteria for one small batch of descriptions) and its robust parser.

A 0.5B model asked for criteria without an example copies the descriptions back; with a worked example
in another domain it first repeats the example's lines and then proposes its own. So the request is a
short few-shot chat, and the parser drops what is not a proposal: the example's own criteria, copied
sentences, headers, numbering and markdown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from clipclust.models.llm import GenerationRequest, Message

from clipclust.methods.ictc.parsing import _singular, is_junk_name, normalise

PROPOSE_SYSTEM = (
    "You sort photo collections. Read the image descriptions and name {m} different criteria by which the images "
    "could be sorted into groups. One criterion per line, as \"criterion: explanation\"; a criterion is one to "
    "three words. Do not repeat the descriptions."
)
EXAMPLE_DESCRIPTIONS = (
    "A bowl of ramen with an egg on a wooden table.",
    "A plate of pancakes with syrup at breakfast.",
    "A pizza with tomatoes and basil in a restaurant.",
    "A salad of green leaves in a white bowl.",
)
EXAMPLE_ANSWER = (("cuisine", "the country a dish comes from"), ("meal", "breakfast, lunch or dinner"),
                  ("dish", "the kind of food served"))
"""The worked example: a domain apart from most image collections; its criteria are never taken as
proposals (a small model repeats them before its own), which costs a food collection these three words."""

COMMON_CRITERIA = (("action", "what the people or animals are doing"), ("mood", "the feeling the picture gives"),
                   ("location", "where the picture was taken"), ("object", "the main thing the picture shows"))
"""The criteria of IC|TC's paper (its prompt presets, in their order; instrument left out as one domain's),
checked after the LLM's own proposals when those run out: a small model's proposals may all be noise, and
the label checks decide either way."""

MAX_DESCRIPTION_CHARS = 400
"""A description is cut here in the prompt, so a batch stays within a small context window."""

MAX_CRITERION_WORDS = 4
MAX_EXPLANATION_CHARS = 120
NOT_CRITERIA = frozenset({"image", "images", "photo", "photos", "picture", "pictures", "description",
                          "descriptions", "criterion", "criteria", "example", "explanation", "other", "none",
                          "answer", "group", "groups", "category", "sort", "sorting"})
"""Words that are the prompt talking back, never a way to group images."""

FILLER = frozenset({"type", "types", "kind", "kinds", "of", "the", "a", "an", "main", "primary", "category",
                    "categories", "in", "image", "images", "photo", "picture", "overall", "its", "their"})
"""Words left out when comparing criteria: "type of animal", "animal type" and "animal" are one."""

_SEPARATORS = re.compile(r"\s*(?::|\s-\s|\s–\s|\s—\s)\s*")
_LEAD = re.compile(r"^\s*(?:[-*•+>]+|\(?\d+[.):]?\)?|[a-z][.)])\s+", re.IGNORECASE)
_TALK = {"criteria", "criterion", "here", "following", "these", "descriptions"}
_CRITERION_WORD = re.compile(r"^criteri(?:on|a)\s*\d*$")


def _cut(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def propose_request(descriptions: Sequence[str], per_batch: int) -> GenerationRequest:
    """The proposal call for one batch: instruction, the worked example, then the batch, numbered."""
    def numbered(texts: Sequence[str]) -> str:
        return "Descriptions:\n" + "\n".join(f"{i + 1}. {_cut(t, MAX_DESCRIPTION_CHARS)}" for i, t in enumerate(texts))

    messages: tuple[Message, ...] = (
        {"role": "system", "content": PROPOSE_SYSTEM.replace("{m}", str(per_batch))},
        {"role": "user", "content": numbered(EXAMPLE_DESCRIPTIONS)},
        {"role": "assistant", "content": "\n".join(f"{c}: {e}" for c, e in EXAMPLE_ANSWER)},
        {"role": "user", "content": numbered(descriptions)},
    )
    return GenerationRequest(messages)


def criterion_key(text: str) -> str:
    """Comparison key of a criterion: normalised, plurals folded, filler words out ("Animal types" ->
    "animal"); the whole text when nothing but filler is left ("main object" -> "object")."""
    words = [_singular(w) for w in re.findall(r"[^\W_]+", normalise(text))]
    kept = [w for w in words if w not in FILLER]
    return " ".join(kept or words)


EXAMPLE_KEYS = frozenset(criterion_key(c) for c, _ in EXAMPLE_ANSWER)


def _clean_criterion(raw: str) -> str:
    text = normalise(_LEAD.sub("", raw))
    text = re.sub(r"^(?:the\s+)?criteri(?:on|a)\s*\d*\s*(?:is\s+)?", "", text).strip()
    text = re.sub(r"^(?:by|sort by|group by|grouped by)\s+", "", text).strip()
    return text.strip(" .,;:!?'\"")


def parse_criteria(text: str) -> list[tuple[str, str]]:
    """``[(criterion, explanation)]`` from one answer, in order, each criterion once.

    A line is ``criterion: explanation`` (or with a dash); numbering, bullets, markdown and a leading
    "criterion" word go; a line whose left side is only "criterion" is read again from its right side.
    Dropped: a criterion longer than four words (a copied sentence), junk or prompt words, and the
    worked example's criteria.
    """
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for line in str(text).splitlines():
        line = _LEAD.sub("", line.replace("**", "").replace("__", "").replace("`", "").strip())
        if not line:
            continue
        parts = _SEPARATORS.split(line, maxsplit=1)
        left, right = (parts[0], parts[1]) if len(parts) == 2 else (line, "")
        if _CRITERION_WORD.match(normalise(left)) and right:  # "Criterion 1: colour: the main colour"
            parts = _SEPARATORS.split(right, maxsplit=1)
            left, right = (parts[0], parts[1]) if len(parts) == 2 else (right, "")
        criterion = _clean_criterion(left)
        words = criterion.split()
        if not words or len(words) > MAX_CRITERION_WORDS or is_junk_name(criterion) or set(words) & _TALK:
            continue
        key = criterion_key(criterion)
        if not key or key in NOT_CRITERIA or key in EXAMPLE_KEYS or key in seen:
            continue
        seen.add(key)
        explanation = re.split(r"(?<=[.;])\s", " ".join(right.split()), maxsplit=1)[0].strip(" .;")
        found.append((criterion, _cut(explanation, MAX_EXPLANATION_CHARS)))
    return found
