"""IC|TC: image clustering conditioned on a text criterion (Kwon et al., ICLR 2024).

Step 1 (a VLM describes each image for the criterion) lives in :mod:`clipclust.models.vlm`; this
module takes the descriptions and runs the LLM steps:

- step 2a: one raw label per description (``Answer: {label}``);
- step 2b: the raw labels are counted into a dictionary, rare ones dropped, and the LLM names exactly
  K clusters (robust parsing, then a bounded repair dialogue, then a deterministic, reported fallback);
- step 3: every description is assigned to one name, by a free answer matched afterwards (the
  paper), by decoding restricted to the K names (``constrained``) or by the nearest name in a text
  embedding space (``embed``).

Answers that match no name go to the closest name by a deterministic string similarity and are
counted and reported; nothing is ever assigned at random (the released code's bug). Every LLM call
goes through the generator passed in, so wrapping it in
:class:`~clipclust.models.llm.CachedGenerator` makes re-runs free and prompt edits cheap.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from clipclust.errors import InputError
from clipclust.models.llm import (
    CacheStats,
    CachedGenerator,
    DecodeParams,
    GenerationRequest,
    Message,
    TextGenerator,
)

# --------------------------------------------------------------------------------------------------
# Prompt templates
# --------------------------------------------------------------------------------------------------

STEPS = ("step1", "step2a", "step2b", "step3")
PLACEHOLDERS = ("criterion", "k", "len", "labels", "names", "description", "extra")
PRESETS = ("generic", "action", "mood", "location", "instrument", "object")
_PRESET_ALIASES = {
    "actions": "action",
    "human action": "action",
    "moods": "mood",
    "locations": "location",
    "instruments": "instrument",
    "musical instrument": "instrument",
    "musical instruments": "instrument",
    "objects": "object",
}

Layout = Literal["instruction_first", "description_first"]
Mode = Literal["generate", "constrained", "embed"]
MODES: tuple[str, ...] = ("generate", "constrained", "embed")


def fill(template: str, **values: Any) -> str:
    """Replace the known ``{placeholder}``s given in ``values``; every other brace stays as written.

    ``str.format`` cannot be used: the paper's prompts contain literal braces such as
    ``{ 'a': 15 }`` and ``"{index}: {name}"``.
    """
    out = template
    for name, value in values.items():
        if name not in PLACEHOLDERS:
            raise ValueError(f"unknown placeholder {name!r}")
        out = out.replace("{" + name + "}", str(value))
    return out


@dataclass(frozen=True)
class IctcPrompts:
    """The four step templates (see ``clipclust/data/ictc/README.md`` for the placeholders)."""

    step1: str
    step2a: str
    step2b: str
    step3: str
    source: str = "generic"

    @classmethod
    def builtin(cls, preset: str = "generic") -> IctcPrompts:
        """A built-in preset: ``generic`` or one of the paper's criteria (action, mood, ...)."""
        if preset not in PRESETS:
            raise InputError(f"unknown IC|TC prompt preset {preset!r}; choose one of {', '.join(PRESETS)}")
        folder = resources.files("clipclust").joinpath("data", "ictc", preset)
        texts = {s: folder.joinpath(f"{s}.txt").read_text(encoding="utf-8").strip() for s in STEPS}
        return cls(**texts, source=f"builtin:{preset}")

    def with_overrides(self, directory: str | Path) -> IctcPrompts:
        """Replace the steps for which ``directory`` holds a file (``step3.txt``, ``step3`` ...)."""
        d = Path(directory).expanduser()
        if not d.is_dir():
            raise InputError(f"prompt directory not found: {d}")
        found: dict[str, str] = {}
        for step in STEPS:
            for name in (f"{step}.txt", step, f"{step}.md"):
                p = d / name
                if p.is_file():
                    text = p.read_text(encoding="utf-8").strip()
                    if not text:
                        raise InputError(f"prompt file {p} is empty")
                    found[step] = text
                    break
        if not found:
            raise InputError(
                f"{d} holds none of {', '.join(s + '.txt' for s in STEPS)}; name the files after the step "
                "they replace"
            )
        return replace(self, **found, source=f"{self.source}+{d}")


def preset_for(criterion: str) -> str:
    """The paper's preset for a one-word criterion it used (``mood`` -> mood), else ``generic``."""
    c = re.sub(r"[^\w\s]", "", criterion.strip().lower())
    c = re.sub(r"\s+", " ", c)
    c = _PRESET_ALIASES.get(c, c)
    return c if c in PRESETS and c != "generic" else "generic"


def default_prompts(
    criterion: str, preset: str = "auto", prompt_dir: str | Path | None = None
) -> IctcPrompts:
    """Templates for a criterion: a built-in preset (``auto`` = the paper's when the criterion is one
    of its words, else generic) with the files of ``prompt_dir`` overriding single steps."""
    base = IctcPrompts.builtin(preset_for(criterion) if preset == "auto" else preset)
    return base.with_overrides(prompt_dir) if prompt_dir is not None else base


def describe_prompt(
    criterion: str | None = None,
    prompts: IctcPrompts | None = None,
) -> str:
    """The step-1 (VLM) prompt for a criterion; the default follows the paper:
    "Characterize the image using a well-detailed description." + the criterion."""
    if not criterion and prompts is None:
        raise InputError("a description prompt needs a criterion or an explicit prompt")
    crit = (criterion or "").strip()
    prompts = prompts or default_prompts(crit)
    return fill(prompts.step1, criterion=crit)


# --------------------------------------------------------------------------------------------------
# Text normalisation, parsing and matching
# --------------------------------------------------------------------------------------------------

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


def _ngrams(text: str, n: int = 3) -> Counter[str]:
    t = f"  {name_key(text)}  "
    return Counter(t[i : i + n] for i in range(max(0, len(t) - n + 1)))


def similarity(a: str, b: str) -> float:
    """Deterministic string similarity in [0, 1]: character-trigram cosine of the name keys, with
    difflib's ratio to break near-ties."""
    ca, cb = _ngrams(a), _ngrams(b)
    dot = sum(v * cb[g] for g, v in ca.items())
    na = math.sqrt(sum(v * v for v in ca.values()))
    nb = math.sqrt(sum(v * v for v in cb.values()))
    cos = dot / (na * nb) if na and nb else 0.0
    return 0.9 * cos + 0.1 * difflib.SequenceMatcher(None, name_key(a), name_key(b)).ratio()


def _phrase_position(phrase: str, text: str) -> int:
    if not phrase:
        return -1
    m = re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text)
    return m.start() if m else -1


@dataclass(frozen=True)
class Match:
    """How one answer maps to a name: its index, whether the answer named it (``matched``) or the
    closest name was taken (``matched=False``), and the parsed answer text."""

    index: int
    matched: bool
    answer: str
    score: float = 1.0


def match_answer(text: str, names: Sequence[str]) -> Match:
    """Map a step-3 output to one of ``names``, deterministically.

    1. the answer, raw or parsed, equals a name (case, punctuation and plurals ignored);
    2. else a name appears as a whole phrase in the parsed answer: the earliest (then longest) one;
    3. else the closest name by :func:`similarity` (ties go to the earlier name), flagged unmatched.
    """
    if not names:
        raise InputError("no cluster names to match against")
    keys = [name_key(n) for n in names]
    raw = text.strip()
    rkey = name_key(raw)
    for i, (name, key) in enumerate(zip(names, keys)):
        if raw == name or (key and key == rkey):  # a constrained answer is the name itself
            return Match(i, True, normalise(raw))
    answer = parse_answer(text)
    akey = name_key(answer)
    for i, key in enumerate(keys):
        if key and key == akey:
            return Match(i, True, answer)
    best: tuple[int, int, int] | None = None
    for i, key in enumerate(keys):
        pos = _phrase_position(key, akey)
        if pos >= 0:
            cand = (pos, -len(key), i)
            if best is None or cand < best:
                best = cand
    if best is not None:
        return Match(best[2], True, answer)
    probe = answer or normalise(text)
    scores = [similarity(probe, n) for n in names]
    top = max(scores)
    return Match(scores.index(top), False, answer, top)


def ngram_embedder(dim: int = 4096, n: int = 3) -> Callable[[Sequence[str]], np.ndarray]:
    """A dependency-free text embedding (hashed character n-grams, L2-normalised).

    Deterministic but purely lexical: pass a real sentence encoder to ``embed`` mode for quality; this
    one exists for tests and as a last resort.
    """

    def embed(texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for gram, c in _ngrams(text, n).items():
                out[row, zlib.crc32(gram.encode("utf-8")) % dim] += c
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)

    return embed


# --------------------------------------------------------------------------------------------------
# Requests per step
# --------------------------------------------------------------------------------------------------


def _instruction_request(
    template: str, description: str, layout: Layout, choices: Sequence[str] | None = None, **values: Any
) -> GenerationRequest:
    """System = shared instruction, user = description (the authors' layout, and a prefix the model's
    prompt cache reuses across items); ``description_first`` puts the description before the
    instruction in one user turn; a template with ``{description}`` is sent as one user turn."""
    if "{description}" in template:
        msgs: tuple[Message, ...] = ({"role": "user", "content": fill(template, description=description, **values)},)
    elif layout == "instruction_first":
        msgs = (
            {"role": "system", "content": fill(template, **values)},
            {"role": "user", "content": description},
        )
    elif layout == "description_first":
        msgs = ({"role": "user", "content": f"{description}\n\n{fill(template, **values)}"},)
    else:
        raise InputError(f"unknown layout {layout!r}; choose instruction_first or description_first")
    return GenerationRequest(msgs, tuple(choices) if choices is not None else None)


def label_request(
    description: str, criterion: str, prompts: IctcPrompts, layout: Layout = "instruction_first"
) -> GenerationRequest:
    """The step-2a call for one description."""
    return _instruction_request(prompts.step2a, description, layout, criterion=criterion)


def format_label_dict(dictionary: Mapping[str, int]) -> str:
    """The dictionary as the authors' code printed it: ``{'cat': 12, 'dog': 9}``."""
    return repr(dict(dictionary))


def names_messages(
    kept: Mapping[str, int], k: int, criterion: str, prompts: IctcPrompts, extra: str | None = None
) -> tuple[Message, ...]:
    """The step-2b conversation: the template as system message (``extra`` instructions appended or
    put at ``{extra}``) and the dictionary as ``list of labels: {...}`` / ``num_classes: K``."""
    labels = format_label_dict(kept)
    values = dict(criterion=criterion, k=k, len=len(kept))
    template = prompts.step2b
    if "{extra}" in template:
        template = fill(template, extra=extra or "")
    elif extra:
        template = f"{template}\n\n{extra.strip()}"
    if "{labels}" in template:
        return ({"role": "user", "content": fill(template, labels=labels, **values)},)
    return (
        {"role": "system", "content": fill(template, **values)},
        {"role": "user", "content": f"list of labels: {labels}\nnum_classes: {k}"},
    )


REPAIR_PROMPT = (
    'Your answer contains {m} distinct names ({found}), but exactly {k} are required. Reply with '
    'exactly {k} distinct category names for the criterion "{criterion}", one per line, in the '
    'format "{index}: {name}" with {index} from 1 to {k}, and nothing else.'
)
"""Follow-up turn when step 2b gave the wrong number of names ({m}, {found}, {k}, {criterion} are
filled; {index} and {name} stay literal)."""


def repair_message(found: Sequence[str], k: int, criterion: str) -> Message:
    text = (
        REPAIR_PROMPT.replace("{m}", str(len(found)))
        .replace("{found}", ", ".join(found) if found else "none")
        .replace("{k}", str(k))
        .replace("{criterion}", criterion)
    )
    return {"role": "user", "content": text}


def names_literal(names: Sequence[str]) -> str:
    """The names as the authors' code put them in the step-3 prompt: ``['cat', 'dog']``."""
    return repr(list(names))


def assign_request(
    description: str,
    names: Sequence[str],
    criterion: str,
    prompts: IctcPrompts,
    *,
    constrained: bool = False,
    layout: Layout = "instruction_first",
) -> GenerationRequest:
    """The step-3 call for one description (restricted to ``names`` when ``constrained``)."""
    return _instruction_request(
        prompts.step3, description, layout, choices=names if constrained else None,
        criterion=criterion, names=names_literal(names), k=len(names),
    )


# --------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------

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
    """Step 2a: ``(labels, raw outputs)``, one label per description (parsed and normalised)."""
    prompts = prompts or default_prompts(criterion)
    params = params or DecodeParams(max_tokens=24)
    reqs = [label_request(d, criterion, prompts, layout) for d in descriptions]
    outputs = _run_requests(generator, reqs, params, "step2a", progress)
    return [parse_answer(o) for o in outputs], outputs


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


def assign(
    generator: TextGenerator | None,
    descriptions: Sequence[str],
    names: Sequence[str],
    criterion: str,
    *,
    mode: Mode = "generate",
    prompts: IctcPrompts | None = None,
    params: DecodeParams | None = None,
    embed: Callable[[Sequence[str]], Any] | None = None,
    layout: Layout = "instruction_first",
    progress: StepProgress | None = None,
) -> Assignment:
    """Step 3: one cluster per description.

    ``generate``: free answer (the paper), matched by :func:`match_answer`. ``constrained``: the
    decoder may only produce one of the names (grammar / JSON schema / token trie, by backend);
    answers are still matched, so a server without structured output degrades to ``generate``.
    ``embed``: nearest name by cosine similarity of ``embed(descriptions)`` and ``embed(names)``
    (ties go to the earlier name); no LLM call.
    """
    if mode not in MODES:
        raise InputError(f"unknown step-3 mode {mode!r}; choose one of {', '.join(MODES)}")
    names = list(names)
    if len(set(map(name_key, names))) != len(names):
        raise InputError(f"cluster names must be distinct: {names}")
    if mode == "embed":
        if embed is None:
            raise InputError("embed mode needs an embedding function (texts -> vectors)")
        d = np.asarray(embed(list(descriptions)), dtype=np.float64)
        n = np.asarray(embed(names), dtype=np.float64)
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        ids = [int(i) for i in np.argmax(d @ n.T, axis=1)]
        if progress is not None:
            progress("step3", len(ids), len(ids))
        return Assignment([names[i] for i in ids], ids, [True] * len(ids))
    if generator is None:
        raise InputError(f"{mode} mode needs an LLM")
    prompts = prompts or default_prompts(criterion)
    longest = max(len(n) for n in names)
    params = params or DecodeParams(max_tokens=max(32, longest // 2 + 16))
    reqs = [
        assign_request(d, names, criterion, prompts, constrained=mode == "constrained", layout=layout)
        for d in descriptions
    ]
    outputs = _run_requests(generator, reqs, params, "step3", progress)
    matches = [match_answer(o, names) for o in outputs]
    return Assignment(outputs, [m.index for m in matches], [m.matched for m in matches])


# --------------------------------------------------------------------------------------------------
# The whole method
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Importing existing descriptions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DescriptionRecord:
    """One imported description: the text, the image path it belongs to and its label, if given."""

    text: str
    path: str | None = None
    label: str | None = None


def _value(row: Mapping[str, Any], field_name: str | None, where: str) -> str | None:
    """A named field's value as text (``None`` for null/empty); a missing field is an error."""
    if field_name is None:
        return None
    if field_name not in row:
        raise InputError(
            f"{where}: no field {field_name!r} (fields: {', '.join(map(str, row)) or 'none'}); "
            "name the right one with the text/path/label field options"
        )
    v = row[field_name]
    if isinstance(v, (dict, list)):
        raise InputError(f"{where}: field {field_name!r} is not a plain value: {str(v)[:80]}")
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    return str(v)


def import_descriptions(
    path: str | Path,
    text_field: str = "text",
    path_field: str | None = None,
    label_field: str | None = None,
) -> list[DescriptionRecord]:
    """Read descriptions made elsewhere from JSONL (one object per line; ``.json`` may hold a list)
    or CSV/TSV (header row). Every named field must exist in every record; errors name the file, the
    line and the fields that are there."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"descriptions file not found: {p}")
    suffix = p.suffix.lower()
    rows: list[tuple[str, Mapping[str, Any]]] = []
    try:
        raw = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{p} is not UTF-8 text: {e}") from e
    if suffix in (".jsonl", ".ndjson", ".json"):
        stripped = raw.lstrip()
        if suffix == ".json" and stripped.startswith("["):
            try:
                data = json.loads(raw)
            except ValueError as e:
                raise InputError(f"{p}: invalid JSON: {e}") from e
            for i, obj in enumerate(data):
                rows.append((f"{p} item {i}", obj))
        else:
            for lineno, line in enumerate(raw.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise InputError(f"{p}:{lineno}: invalid JSON ({e.msg}); expected one object per line") from e
                rows.append((f"{p}:{lineno}", obj))
    elif suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(raw), delimiter="\t" if suffix == ".tsv" else ",")
        if not reader.fieldnames:
            raise InputError(f"{p}: no header row")
        for lineno, row in enumerate(reader, start=2):
            rows.append((f"{p}:{lineno}", row))
    else:
        raise InputError(f"{p}: unknown descriptions format {suffix!r}; use .jsonl, .json, .csv or .tsv")
    records: list[DescriptionRecord] = []
    for where, obj in rows:
        if not isinstance(obj, Mapping):
            raise InputError(f"{where}: expected an object with a {text_field!r} field, got {type(obj).__name__}")
        text = _value(obj, text_field, where)
        if text is None:
            raise InputError(f"{where}: field {text_field!r} is empty")
        records.append(
            DescriptionRecord(
                text=text.strip(),
                path=_value(obj, path_field, where),
                label=_value(obj, label_field, where),
            )
        )
    if not records:
        raise InputError(f"{p} holds no descriptions")
    return records


__all__ = [
    "MIN_COUNT_FRACTION",
    "MODES",
    "PLACEHOLDERS",
    "PRESETS",
    "REPAIR_PROMPT",
    "STEPS",
    "Assignment",
    "DescriptionRecord",
    "IctcPrompts",
    "IctcResult",
    "Match",
    "NamesResult",
    "assign",
    "assign_request",
    "cluster_names",
    "count_labels",
    "default_min_count",
    "default_prompts",
    "describe_prompt",
    "fill",
    "filter_labels",
    "fix_name_count",
    "format_label_dict",
    "import_descriptions",
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
