"""ESMC (methods.md section 4): criterion prompts, localisation, features and cluster names.

An LLM reads an item (an image, or its description) followed by a criterion prompt ("The color of the
car is"); its hidden state at one (layer, token position) is the item's criterion embedding.  This
module holds the model-independent parts:

* :func:`criterion_prompt` builds the prompt for an item;
* :func:`localise` picks the (layer, position) whose logit lens gives the criterion's keywords the
  highest probability on a few sampled items, and keeps the evidence (top tokens per layer);
* :func:`hidden_features` / :func:`lens_features` turn stored states or stored lens tokens into the
  matrix that k-means and the head see;
* :func:`explain` names each cluster by the lens tokens over-represented in it.

Where we differ from the paper's demo: the demo feeds a full vocabulary-sized lens vector to the
head; we store each item's top ``LENS_TOP`` lens tokens and build the lens feature over the union of
those tokens (columns outside every item's top list carry almost no mass), which keeps storage and
k-means independent of the vocabulary size.  ``feature="lens"`` clusters the Hellinger embedding of
those probabilities (square roots, unit length); ``feature="lens-raw"`` feeds the raw probabilities as
the demo does (on the dev descriptions raw probabilities gave 0.74 / 0.59 ACC at layers 24 / 22 of
Qwen2.5-0.5B where the Hellinger embedding gave 0.89 / 0.70; with the head, raw SmolLM2 lens vectors
collapsed into one cluster).  The paper selects positions whose keyword probability
exceeds 0.2; we take the single best (layer, position) and report every candidate's score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = [
    "DEFAULT_IMAGE_TEMPLATE", "DEFAULT_TEXT_TEMPLATE", "LENS_TOP", "LOCATE_POSITIONS", "Localisation",
    "ask_keywords", "criterion_prompt", "explain", "hellinger_features", "hidden_features", "lens_features",
    "localise", "parse_keywords",
]

# A question answered in one word: the next token is the criterion's value, so the last position's lens
# shows values (" jet", " airplane") where "In one word, the object is" shows " a" and ":\n\n".
DEFAULT_TEXT_TEMPLATE = "{description}\n\nQuestion: What is the {criterion}? Answer in one word.\nAnswer:"
DEFAULT_IMAGE_TEMPLATE = "Question: What is the {criterion} in the image? Answer in one word.\nAnswer:"
LENS_TOP = 64          # lens tokens kept per item (features over their union, names for explain)
LOCATE_POSITIONS = 4   # candidate positions: the last tokens of the prompt
EVIDENCE_TOKENS = 5


def _plain_criterion(criterion: str) -> str:
    text = " ".join(criterion.split())
    return text[4:] if text.lower().startswith("the ") else text


def criterion_prompt(template: str, criterion: str, description: str | None = None) -> str:
    """The prompt for one item: ``template`` with ``{criterion}`` (and ``{description}``) filled in."""
    if "{criterion}" not in template:
        raise ValueError("the prompt template needs a {criterion} placeholder")
    if description is not None and "{description}" not in template:
        raise ValueError("a prompt template for descriptions needs a {description} placeholder")
    text = template.replace("{criterion}", _plain_criterion(criterion))
    return text.replace("{description}", description.strip()) if description is not None else text


KEYWORDS_QUESTION = ("Name {n} common kinds of {criterion}. Answer with a comma-separated list of single words and "
                     "nothing else.")


def ask_keywords(generator: Any, criterion: str, n: int = 10) -> list[str]:
    """Criterion keywords from a chat LLM (``clipclust.models.llm.TextGenerator``), as ESMC asks
    ("What are common car colors?"); deterministic (greedy) and cached by the runtime's call cache."""
    from clipclust.models.llm import DecodeParams, GenerationRequest, chat

    question = KEYWORDS_QUESTION.format(criterion=_plain_criterion(criterion), n=n)
    answer = generator.generate([GenerationRequest(chat(question))], DecodeParams(max_tokens=96))[0]
    words = [w for w in parse_keywords(answer) if len(w.split()) <= 2][:n]
    if not words:
        raise ValueError(f"the LLM gave no keywords for '{criterion}' (it answered {answer[:80]!r}); "
                         "pass keywords yourself")
    return words


def parse_keywords(text: str) -> list[str]:
    """Keywords from a comma/newline separated list or an LLM's answer ('1. red\\n2. blue' -> red, blue)."""
    words: dict[str, None] = {}
    for part in text.replace("\n", ",").replace(";", ",").split(","):
        word = part.strip().lstrip("-*0123456789.) ").strip(" .\"'")
        if word and len(word) <= 40:
            words[word] = None
    return list(words)


@dataclass
class Localisation:
    """The chosen (layer, position) and the evidence: each candidate layer's score and top lens tokens.

    ``table`` rows: ``{"layer", "position", "score", "top": [tokens]}`` for every layer at its best
    position; ``score`` is the mean lens probability mass on the keyword tokens over the samples.
    """

    layer: int
    position: int
    score: float
    keywords: list[str]
    n_samples: int
    table: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "position": self.position, "score": self.score, "keywords": self.keywords,
                "n_samples": self.n_samples, "table": self.table}


def localise(model: Any, prompts: Sequence[str], keywords: Sequence[str], images: Sequence[Any] | None = None,
             n_positions: int = LOCATE_POSITIONS) -> Localisation:
    """The (layer, position) whose logit lens puts the most probability on the keywords' tokens.

    ``model`` is a :class:`clipclust.models.hidden.HiddenModel`; every layer 1..n_layers and the
    last ``n_positions`` tokens are candidates (layer 0, the raw token embedding, carries no context).
    """
    token_ids = model.keyword_tokens(keywords)
    if not token_ids:
        raise ValueError("none of the keywords maps to a token; pass other keywords")
    layers = list(range(1, model.n_layers + 1))
    positions = [-p for p in range(1, n_positions + 1)]
    states = model.states(prompts, layers, positions, images=images)  # (S, L, P, D)
    scores = np.zeros((len(layers), len(positions)))
    mean_probs: dict[tuple[int, int], Any] = {}
    for li, layer in enumerate(layers):
        for pi in range(len(positions)):
            probs = model.lens(states[:, li, pi, :], layer)  # (S, V)
            scores[li, pi] = float(probs[:, token_ids].sum(dim=1).mean())
            mean_probs[(li, pi)] = probs.mean(dim=0)
    table = []
    for li, layer in enumerate(layers):
        pi = int(np.argmax(scores[li]))
        top = mean_probs[(li, pi)].topk(EVIDENCE_TOKENS).indices.tolist()
        table.append({"layer": layer, "position": positions[pi], "score": round(float(scores[li, pi]), 6),
                      "top": model.token_texts(top)})
    best_l, best_p = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return Localisation(layer=layers[best_l], position=positions[best_p], score=float(scores[best_l, best_p]),
                        keywords=list(keywords), n_samples=len(prompts), table=table)


def hidden_features(states: np.ndarray) -> np.ndarray:
    """L2-normalised hidden states (the scale of a raw state says little about the criterion)."""
    X = np.asarray(states, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


def lens_features(top_ids: np.ndarray, top_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each item's lens probabilities over the union of all items' top tokens: ``(X, token ids)``.

    ``top_ids``/``top_probs`` are ``(N, T)``; tokens outside an item's top list count as 0.
    """
    ids = np.asarray(top_ids, dtype=np.int64)
    vocab, columns = np.unique(ids, return_inverse=True)
    X = np.zeros((ids.shape[0], vocab.shape[0]), dtype=np.float32)
    rows = np.repeat(np.arange(ids.shape[0]), ids.shape[1])
    np.add.at(X, (rows, columns.reshape(-1)), np.asarray(top_probs, dtype=np.float32).reshape(-1))
    return X, vocab


def hellinger_features(probs: np.ndarray) -> np.ndarray:
    """Square roots of probability rows, L2-normalised: Euclidean distance becomes the Hellinger distance
    between the distributions, so k-means compares whole lens distributions instead of being dominated
    by each item's single most probable token (raw probabilities)."""
    return hidden_features(np.sqrt(np.maximum(np.asarray(probs, dtype=np.float32), 0.0)))


WORD_START = (" ", "\u2581", "\u0120")  # a leading space, SentencePiece's and byte-level BPE's word-start marks
STOP_WORDS = frozenset("""a an and are as at be been by for from has have in into is it its of on or that the their
there these this those to was were which while with without image picture photo shows showing shown""".split())


def _whole_word(token: str) -> str:
    """The word a lens token spells when it begins a word and is letters only (" Guitar" -> "Guitar"), else ""
    ("String" continues a word, "ly" too; "<|im_end|>" and " 3" are no words)."""
    if not token or not token.startswith(WORD_START):
        return ""
    word = token.lstrip("".join(WORD_START)).rstrip(".,;:!?\"')")
    return word if len(word) >= 2 and word.isalpha() else ""


def _text_words(text: str) -> set[str]:
    return {w for w in "".join(ch.lower() if ch.isalpha() else " " for ch in text).split()
            if len(w) >= 3 and w not in STOP_WORDS}


def _description_words(inside: np.ndarray, words: list[set[str]], n: int, taken: set[str]) -> list[str]:
    """The words in more of a cluster's descriptions than of the others', by the difference of those shares."""
    n_in, n_out = int(inside.sum()), int((~inside).sum())
    counts_in: dict[str, int] = {}
    counts_out: dict[str, int] = {}
    for row, bag in enumerate(words):
        target = counts_in if inside[row] else counts_out
        for w in bag:
            target[w] = target.get(w, 0) + 1
    lift = {w: c / max(n_in, 1) - counts_out.get(w, 0) / max(n_out, 1) for w, c in counts_in.items()}
    ranked = sorted((w for w in lift if lift[w] > 0 and w not in taken), key=lambda w: (-lift[w], w))
    return ranked[:n]


def explain(ids: np.ndarray, top_ids: np.ndarray, top_probs: np.ndarray, token_text: dict[int, str],
            k: int, n_words: int = 3, texts: Sequence[str] | None = None) -> list[str]:
    """A name per cluster 0..k-1: the whole words among the lens tokens most over-represented in it.

    A token's score is its mean lens probability inside the cluster minus its mean over the other items.
    Only tokens that begin a word and are letters only count (sub-word pieces such as "String" or "ly",
    special tokens and numbers do not); with the items' descriptions (``texts``) a token must also be a
    word they use, so a word's first piece (" Har" of "Harp") is left out, and a name short of
    ``n_words`` is completed with the words over-represented in the cluster's descriptions.  Repeats are
    skipped case-insensitively.  Labels are not read.
    """
    X, vocab = lens_features(top_ids, top_probs)
    ids = np.asarray(ids)
    bags = [_text_words(t) for t in texts] if texts is not None else None
    known = set().union(*bags) if bags else None
    names = []
    for cluster_id in range(k):
        inside = ids == cluster_id
        if not inside.any():
            names.append("")
            continue
        outside = X[~inside].mean(axis=0) if (~inside).any() else 0.0
        lift = X[inside].mean(axis=0) - outside
        words: list[str] = []
        for column in np.argsort(-lift, kind="stable"):
            if lift[column] <= 0 or len(words) == n_words:
                break
            word = _whole_word(token_text.get(int(vocab[column]), ""))
            if word and (known is None or word.lower() in known) and word.lower() not in {w.lower() for w in words}:
                words.append(word)
        if bags is not None and len(words) < n_words:
            words += _description_words(inside, bags, n_words - len(words), {w.lower() for w in words})
        names.append(" / ".join(words))
    return names
