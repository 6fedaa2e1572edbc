"""Reading labels and cluster names out of small-model outputs, and the keys names are compared by."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

_QUOTES = "\"'`“”‘’«»„"
_EXPLANATION_CUTS = (". ", " - ", " – ", " — ", " (", "; ", " because ", ", because", " as it ", " since ")


def normalise(text: str) -> str:
    """Lower-case, strip markdown, quotes, brackets and edge punctuation, collapse whitespace."""
    t = unicodedata.normalize("NFKC", text)
    t = t.replace("**", "").replace("__", "").replace("`", "")
    t = re.sub(r"\s+", " ", t).lower()
    # One strip over every edge character, so that normalising twice changes nothing ("0_:" -> "0").
    return t.strip(" .,;:!?" + _QUOTES + "[](){}<>*#_~").strip()


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
_CLAUSE_RE = re.compile(r"\s+(?:is|are|was|were|which|that|who|where|while)\s+|,\s+|;\s+")
LABEL_WORDS = 3
"""Step 2a asks for a label of one to three words; a longer answer is cut at its first clause."""


def short_label(label: str, max_words: int = LABEL_WORDS) -> str:
    """A step-2a label of at most ``max_words`` words kept as is; a longer one (small models answer
    with a sentence: "cat is sleeping on a sofa", "sparrow, a small bird that ...") cut before its
    first verb clause or comma, so the label is the thing named, not the sentence."""
    if len(label.split()) <= max_words:
        return label
    m = _CLAUSE_RE.search(label)
    return normalise(label[: m.start()]) if m and m.start() > 0 else label


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


_LABEL_WORDS = r"answer|category|cluster|class|group|name|label|mood|action|location|object|instrument"
# An index the way models echo the template: 1, #1, [1], (1), {1}, <1>, optionally after a word such
# as "Cluster", "Category" or "Answer". A bracketed index needs no separator ("[1] cat"); a bare one
# does ("1: cat", "1. cat", "1) cat", "1 - cat", "Category 1 – cat").
_ITEM_RE = re.compile(
    r"^(?:#+\s*|>\s*)?(?:\*\*|__)?\s*"
    rf"(?:(?:{_LABEL_WORDS})\s*)?"
    r"(?:[\[({<]\s*#?(\d{1,3})\s*[\])}>]\s*(?:\*\*|__)?\s*[:.)\-–—=]?|#?(\d{1,3})\s*(?:\*\*|__)?\s*[:.)\]\-–—=])"
    r"\s*(?:\*\*|__)?\s*(.*)$",
    re.IGNORECASE,
)
_INLINE_ANSWER_RE = re.compile(r"\banswer\s*#?\s*(\d{1,3})\s*[:.)\-–—]\s*(.*)$", re.IGNORECASE)
_BULLET_RE = re.compile(r"^(?:[-*•+·]|\u2022)\s+(.*)$")
_REASON_RE = re.compile(r"^[\W_]*(?:\d+\s*[.):]\s*)?(?:reason|explanation|note)\b", re.IGNORECASE)
_TABLE_RULE_RE = re.compile(r"^\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?$")
_PLACEHOLDER_RE = re.compile(r"^\s*\{\s*[a-z_ ]+\s*\}\s*$", re.IGNORECASE)

STOP_WORDS = frozenset(
    "a an the and or of in on at to for with by from is are be this that these those it its none n/a na "
    "unknown etc other others misc miscellaneous category categories cluster clusters name names label "
    "labels index answer class classes group groups reason image images photo photos picture pictures scene "
    "description".split()
)
"""Words that never make a cluster name on their own (articles, template words, "none", and "image":
every item is one)."""


def is_junk_name(name: str) -> bool:
    """True for a "name" that is only digits, punctuation, stop words or a template placeholder
    (``1``, ``--``, ``the``, ``n/a``, ``category``, ``{name}``; single letters count as stop words): a parse artefact, never a cluster."""
    if not name or _PLACEHOLDER_RE.match(name):
        return True
    words = re.findall(r"[^\W\d_]+", normalise(name))
    return not words or all(w in STOP_WORDS or len(w) == 1 for w in words)


def _clean_name(raw: str) -> str:
    s = raw.replace("**", "").replace("__", "").strip()
    s = s.strip(_QUOTES).strip()
    s = re.sub(r"^(?:answer|category|cluster|name)\s*\d*\s*[:\-]\s*", "", s, flags=re.IGNORECASE)
    s = re.sub(r"^[\[({<]\s*#?\d{1,3}\s*[\])}>]\s*[:.\-–—]?\s*", "", s)  # "{1}: x", "[1] x"
    s = _strip_preamble(s)
    # "cat: small felines" / "cat - small felines" -> "cat"
    for sep in (": ", " - ", " – ", " — ", " (", " because ", "; "):
        i = s.find(sep)
        if i > 0:
            s = s[:i]
    return normalise(s)


def _dedupe(names: Sequence[str]) -> list[str]:
    """Distinct names in order (case and plurals folded), junk (:func:`is_junk_name`) left out."""
    seen: set[str] = set()
    out: list[str] = []
    for n in names:
        key = name_key(n)
        if n and key and key not in seen and not is_junk_name(n):
            seen.add(key)
            out.append(n)
    return out


def _json_names(text: str) -> list[str] | None:
    """Names from the first JSON (or Python-literal) array or object in the text: a list of strings,
    ``{"1": "cat", ...}``, ``{"categories": [...]}`` or a list of objects holding a name field."""
    import ast
    import json

    for m in re.finditer(r"[\[{]", text):
        opener = m.group(0)
        closer = "]" if opener == "[" else "}"
        end = text.rfind(closer)
        while end > m.start():
            chunk = text[m.start() : end + 1]
            value: Any = None
            for load in (json.loads, ast.literal_eval):
                try:
                    value = load(chunk)
                    break
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    continue
            if value is not None:
                names = _names_in_value(value)
                if names:
                    return names
                break
            end = text.rfind(closer, 0, end)
    return None


def _names_in_value(value: Any) -> list[str]:
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            return _names_in_value(lists[0])
        if all(isinstance(v, str) for v in value.values()) and all(
            re.fullmatch(rf"\s*(?:(?:{_LABEL_WORDS})\s*)?#?\d{{1,3}}\s*", str(key), re.IGNORECASE) for key in value
        ):
            return [_clean_name(v) for v in value.values()]
        return [_clean_name(str(key)) for key in value]
    if isinstance(value, (list, tuple)):
        out: list[str] = []
        for v in value:
            if isinstance(v, str):
                out.append(_clean_name(v))
            elif isinstance(v, dict):
                named = [str(x) for key, x in v.items() if str(key).lower() in ("name", "category", "label", "cluster")]
                if named:
                    out.append(_clean_name(named[0]))
        return out
    return []


def _table_names(lines: Sequence[str]) -> list[str]:
    """Names from a markdown table: per body row, the first cell that is not an index."""
    rows = [ln for ln in lines if ln.startswith("|") and ln.count("|") >= 2]
    if len(rows) < 2:
        return []
    body = list(rows)
    rule = next((i for i, r in enumerate(rows) if _TABLE_RULE_RE.match(r)), None)
    if rule is not None:
        body = rows[rule + 1 :]
    out: list[str] = []
    for row in body:
        if _TABLE_RULE_RE.match(row):
            continue
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        for cell in cells:
            if cell and not re.fullmatch(r"[\W\d_]*", cell):
                out.append(_clean_name(cell))
                break
    return out


def parse_names(text: str, k: int | None = None) -> list[str]:
    """Distinct cluster names in a step-2b output, in order of appearance.

    Understands JSON arrays and objects, markdown tables, numbered lists however the template's
    index is echoed (``1: x``, ``{1}: x``, ``[1] x``, ``(1) x``, ``1 - x``, ``Cluster 1: x``,
    ``Category 1 – x``, ``Answer 1: x``, ``**1.** x``), bullet lists, a bracketed list ``[x, y]`` and
    a comma-separated line; skips ``Reason`` lines, headings and prose; strips markdown, quotes and
    trailing explanations; folds duplicates (case, plurals); never returns a name that is only
    digits, punctuation, stop words or a placeholder. When the model repeats its list, a restart at
    index 1 after ``k`` names ends the parse. The result may hold more or fewer than ``k`` names: the
    caller repairs that.
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    table = _dedupe(_table_names(lines))
    if table:
        return table
    numbered: list[str] = []
    bullets: list[str] = []
    last_index = 0
    for s in lines:
        if _REASON_RE.match(s):
            continue
        m = _ITEM_RE.match(s)
        found = (int(m.group(1) or m.group(2)), m.group(3)) if m else None
        if found is None:
            inline = _INLINE_ANSWER_RE.search(s)
            found = (int(inline.group(1)), inline.group(2)) if inline else None
        if found is not None and found[1].strip() and not is_junk_name(_clean_name(found[1])):
            index, body = found
            if k is not None and index == 1 and last_index >= 1 and len(_dedupe(numbered)) >= k:
                break
            last_index = index
            numbered.append(_clean_name(body))
            continue
        b = _BULLET_RE.match(s)
        if b and b.group(1).strip():
            bullets.append(_clean_name(b.group(1)))
    if numbered and len(_dedupe(numbered)) >= 2:
        return _dedupe(numbered)
    from_json = _json_names(text)
    if from_json and _dedupe(from_json):
        return _dedupe(from_json)
    if numbered:
        return _dedupe(numbered)
    if bullets:
        return _dedupe(bullets)
    bracket = re.search(r"\[([^\[\]]+)\]", text)
    if bracket:
        found_names = _dedupe([_clean_name(p) for p in bracket.group(1).split(",")])
        if found_names:
            return found_names
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
