"""The values a criterion names itself: "animal or vehicle", "indoor vs outdoor scene", "mood: calm, tense or joyful".

A criterion written as alternatives says how many groups it makes, whatever level the raw answers
sit at: a 0.5B model labels CIFAR-10's descriptions "cat", "truck"... under "animal or vehicle" (its
labels never reach the criterion's level, measured in bench/ictc_quality.py), so a K read off those
labels is the labels' K, 10, not the criterion's 2.  ``-k auto`` of the LLM methods asks this module
first and falls back on the data's own evidence when the criterion names no values ("object", "mood").

Rules (no model, so the same criterion always gives the same answer):

* the text after the last colon when there is one ("mood: calm or tense" -> "calm or tense");
* alternatives split on " or ", " vs ", " versus ", "/" and, once one of those is present, on commas;
* leading framing words ("whether it is an ...") and articles are dropped;
* a shared head noun is given to every value when only the last one carries it ("wind or string
  instrument" -> "wind instrument", "string instrument");
* every value is one to four words of letters; two to :data:`MAX_VALUES` distinct values, else none.
"""

from __future__ import annotations

import re

__all__ = ["MAX_VALUES", "k_from_values", "named_values"]

MAX_VALUES = 12
"""More alternatives than this read as a list of examples, not a partition."""

_ALTERNATIVE = re.compile(r"\s+(?:or|vs\.?|versus)\s+|\s*/\s*", re.IGNORECASE)
_FRAMING = frozenset("whether is it it's its the a an either this that item image photo picture shows showing "
                     "being of".split())
_ARTICLES = frozenset("a an the".split())
_WORD = re.compile(r"^[^\W\d_]+(?:[-'][^\W\d_]+)*$")


def _words(part: str, framing: frozenset[str]) -> list[str]:
    words = part.split()
    while words and words[0].lower() in framing:
        words = words[1:]
    return words


def named_values(criterion: str) -> list[str]:
    """The values ``criterion`` lists as alternatives, in its order; ``[]`` when it lists none."""
    text = criterion.strip().rstrip("?.!").strip()
    if ":" in text:
        text = text.rsplit(":", 1)[1].strip()
    if not _ALTERNATIVE.search(text):
        return []
    parts = [p for chunk in _ALTERNATIVE.split(text) for p in chunk.split(",")]
    parts = [p.strip() for p in parts if p.strip()]
    values = [_words(p, _FRAMING if i == 0 else _ARTICLES) for i, p in enumerate(parts)]
    if not all(v and len(v) <= 4 and all(_WORD.match(w) for w in v) for v in values):
        return []
    last = values[-1]
    if len(last) in (2, 3) and all(len(v) == 1 for v in values[:-1]) and len(values) >= 2:
        values = [v + last[-1:] for v in values[:-1]] + [last]
    out: list[str] = []
    for v in values:
        name = " ".join(v)
        if name.lower() not in {o.lower() for o in out}:
            out.append(name)
    return out if 2 <= len(out) <= MAX_VALUES else []


def k_from_values(criterion: str, n_items: int) -> tuple[int, str] | None:
    """``-k auto`` read off the criterion: the number of values it names and the evidence line, when it
    names fewer than ``n_items``; None otherwise (the method reads K off its data)."""
    values = named_values(criterion)
    if not 2 <= len(values) < n_items:
        return None
    return len(values), f"the criterion names its values ({', '.join(values)}): K={len(values)}"
