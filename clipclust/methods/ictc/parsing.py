"""Reading labels and cluster names out of small-model outputs, and the keys names are compared by."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_QUOTES = "\"'`“”‘’«»„"
_EXPLANATION_CUTS = (". ", " - ", " – ", " — ", " (", "; ", " because ", ", because", " as it ", " since ")


def normalise(text: str) -> str:
    """Lower-case, strip markdown, quotes, brackets and edge punctuation, collapse whitespace."""
    t = unicodedata.normalize("NFKC", text)
    t = t.replace("**", "").replace("__", "").replace("`", "")
    t = t.strip().strip(_QUOTES + "[](){}<>*#_~").strip()
    t = re.sub(r"\s+", " ", t).lower()
    t = t.strip(" .,;:!?" + _QUOTES + "[](){}<>*").strip()
    return t


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("es") and word[-3] in "sxz":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def name_key(text: str) -> str:
    """Comparison key: normalised, plurals folded, so "Cats" and "cat" are the same name."""
    return " ".join(_singular(w) for w in normalise(text).split())


def _cut_explanation(text: str) -> str:
    cut = len(text)
    low = text.lower()
    for sep in _EXPLANATION_CUTS:
        i = low.find(sep)
        if 0 < i < cut:
            cut = i
    return text[:cut]


_ANSWER_RE = re.compile(r"answer(?:\s+is)?\s*(?:\d+\s*)?(?:\*\*|__)?\s*[:：=\-–]\s*(?:\*\*|__)?\s*(.*)", re.IGNORECASE)
_LEADING_INDEX_RE = re.compile(r"^\s*(?:[-*•+·]\s+|\(?\d{1,3}\s*[.):\]]\s+)")


def parse_answer(text: str) -> str:
    """The answer in a model output, normalised: the text after the first ``Answer:`` (to the end of
    its line), else the first non-empty line; markdown, quotes, numbering and trailing explanations
    ("cat - because ...", "Cat. The image shows ...") are removed."""
    if not text:
        return ""
    candidate = ""
    for line in text.splitlines():
        m = _ANSWER_RE.search(line)
        if m:
            candidate = m.group(1).strip()
            if candidate:
                break
    if not candidate:
        for line in text.splitlines():
            if line.strip():
                candidate = line.strip()
                break
    candidate = candidate.replace("**", "").replace("__", "")
    candidate = re.sub(r"^(?:answer\s*\d*\s*[:：]\s*)+", "", candidate, flags=re.IGNORECASE)
    candidate = _LEADING_INDEX_RE.sub("", candidate)
    candidate = candidate.strip().strip(_QUOTES).strip()
    candidate = _strip_preamble(candidate)
    candidate = _cut_explanation(candidate)
    return normalise(candidate)


_PREAMBLES = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"^(?:so,?\s+|thus,?\s+)?(?:i think\s+)?(?:the\s+)?(?:final\s+|correct\s+|best\s+)?answer\s+(?:is|would be)\s*:?\s*",
        r"^(?:the\s+)?(?:main\s+|primary\s+)?(?:object|subject|label|category|mood|action|location|instrument)"
        r"(?:\s+(?:with)?in\s+(?:the\s+)?(?:image|photo|picture|description))?\s+(?:is|would be)\s*:?\s+",
        r"^(?:the\s+|this\s+)?(?:image|photo|picture|scene|description)\s+(?:features|shows|depicts|contains|"
        r"is\s+of|describes|captures)\s+",
        r"^(?:it\s+is|this\s+is|it's|that\s+is)\s+",
        r"^(?:the\s+)?(?:\w+\s+)?(?:category|cluster|class|group|name|label)(?:\s+\d+)?\s+(?:is|would be)\s*:?\s*",
    )
]
_ARTICLE_RE = re.compile(r"^(?:a|an|the)\s+(?=\S)", re.IGNORECASE)


def _strip_preamble(text: str) -> str:
    """Drop the filler small models put before a label ("The image features a ...", "The answer is
    ...", "The main object in the image is ..."), then quotes and a leading article."""
    t = text.strip()
    for _ in range(3):
        before = t
        for rx in _PREAMBLES:
            t = rx.sub("", t).strip().strip(_QUOTES).strip()
        if t == before:
            break
    stripped = _ARTICLE_RE.sub("", t)
    return stripped if stripped else t


_ITEM_RE = re.compile(
    r"^(?:#+\s*|>\s*)?(?:\*\*|__)?\s*"
    r"(?:(?:answer|category|cluster|class|group|name|label|mood|action|location|object)\s*)?"
    r"#?\s*(\d{1,3})\s*(?:\*\*|__)?\s*[:.)\]\-–—]\s*(?:\*\*|__)?\s*(.*)$",
    re.IGNORECASE,
)
_INLINE_ANSWER_RE = re.compile(r"\banswer\s*#?\s*(\d{1,3})\s*[:.)\-–—]\s*(.*)$", re.IGNORECASE)
_BULLET_RE = re.compile(r"^(?:[-*•+·]|\u2022)\s+(.*)$")
_REASON_RE = re.compile(r"^[\W_]*(?:\d+\s*[.):]\s*)?(?:reason|explanation|note)\b", re.IGNORECASE)


def _clean_name(raw: str) -> str:
    s = raw.replace("**", "").replace("__", "").strip()
    s = s.strip(_QUOTES).strip()
    s = re.sub(r"^(?:answer|category|cluster|name)\s*\d*\s*[:\-]\s*", "", s, flags=re.IGNORECASE)
    s = _strip_preamble(s)
    # "cat: small felines" / "cat - small felines" -> "cat"
    for sep in (": ", " - ", " – ", " — ", " (", " because ", "; "):
        i = s.find(sep)
        if i > 0:
            s = s[:i]
    return normalise(s)


def _dedupe(names: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for n in names:
        key = name_key(n)
        if n and key and key not in seen:
            seen.add(key)
            out.append(n)
    return out


def parse_names(text: str, k: int | None = None) -> list[str]:
    """Distinct cluster names in a step-2b output, in order of appearance.

    Understands numbered lists (``1: x``, ``1. x``, ``1) x``, ``Answer 1: x``, ``**1.** x``), bullet
    lists, a bracketed list ``[x, y]`` and a comma-separated line; skips ``Reason`` lines, headings
    and prose; strips markdown, quotes and trailing explanations; folds duplicates (case, plurals).
    When the model repeats its list, a restart at index 1 after ``k`` names ends the parse. The
    result may hold more or fewer than ``k`` names: the caller repairs that.
    """
    numbered: list[str] = []
    bullets: list[str] = []
    last_index = 0
    for line in text.splitlines():
        s = line.strip()
        if not s or _REASON_RE.match(s):
            continue
        m = _ITEM_RE.match(s) or _INLINE_ANSWER_RE.search(s)
        if m and m.group(2).strip():
            index = int(m.group(1))
            if k is not None and index == 1 and last_index >= 1 and len(_dedupe(numbered)) >= k:
                break
            last_index = index
            numbered.append(_clean_name(m.group(2)))
            continue
        b = _BULLET_RE.match(s)
        if b and b.group(1).strip():
            bullets.append(_clean_name(b.group(1)))
    if numbered:
        return _dedupe(numbered)
    if bullets:
        return _dedupe(bullets)
    bracket = re.search(r"\[([^\[\]]+)\]", text)
    if bracket:
        return _dedupe([_clean_name(p) for p in bracket.group(1).split(",")])
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        body = ln.split(":", 1)[1] if ":" in ln and ln.index(":") < 40 else ln
        if body.count(",") >= 1:
            parts = [_clean_name(p) for p in re.split(r",|\band\b", body)]
            sizes = [len(p.split()) for p in parts if p]
            # A list of names, not a sentence that happens to hold a comma.
            if len(sizes) >= 2 and max(sizes) <= 5 and sum(sizes) / len(sizes) <= 3:
                return _dedupe(parts)
    short = [ln for ln in lines if len(ln.split()) <= 5 and not ln.endswith(":")]
    if len(short) >= 2:
        return _dedupe([_clean_name(ln) for ln in short])
    return []
