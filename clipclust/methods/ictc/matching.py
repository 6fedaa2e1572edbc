"""Mapping an answer to one of the K names, deterministically (never at random)."""

from __future__ import annotations

import difflib
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from clipclust.errors import InputError

from clipclust.methods.ictc.parsing import name_key, normalise, parse_answer

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


_NEGATION_RE = re.compile(r"(?:\b(?:not|no|non|never|without|nor|neither|hardly|barely)|n't|n’t)[\s-]+(?:\w+[\s-]+)?$")


def _phrase_position(phrase: str, text: str) -> int:
    """Where ``phrase`` first occurs as whole words in ``text`` and is not negated ("not happy",
    "no longer happy" and "non-happy" do not name "happy"); -1 if nowhere."""
    if not phrase:
        return -1
    for m in re.finditer(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text):
        if not _NEGATION_RE.search(text[: m.start()]):
            return m.start()
    return -1


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
