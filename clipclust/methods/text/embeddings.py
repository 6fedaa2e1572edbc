"""The text route's embeddings, kept in the workspace as a set of their own.

One set per (text model, description set as it stands, instruction prefix): its id derives from those
parts alone, so another K, a forced re-run or another clustering method (the set is item-keyed, so
``on`` can name it) finds the vectors again and loads no model.  The description set's digest is one of
the parts: descriptions added or rewritten later give a new set instead of stale vectors.  Items are
encoded in batches and each batch is written at once, so an interrupted run keeps what it encoded and
the next one encodes the rest only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from clipclust.core.progress import Reporter
from clipclust.store import SetInfo, SetSpec, Workspace

__all__ = ["EMBEDDING_KIND", "TextEmbeddings", "embedding_spec", "text_embeddings"]

EMBEDDING_KIND = "text-embedding"


@dataclass
class TextEmbeddings:
    """The vectors of the asked items (in their order), the set they are stored in, how many were encoded now."""

    vectors: np.ndarray
    set_id: str
    n_encoded: int


def embedding_spec(model_identity: str, model_name: str, source: SetInfo, source_digest: str, prompt: str) -> SetSpec:
    """The set that holds ``source``'s descriptions embedded by the model with the prefix ``prompt``
    (``model_name``, the name the user gave, only names the set)."""
    short = model_name.rstrip("/").rsplit("/", 1)[-1]
    label = f"text:{short}" + (" [instructed]" if prompt else "") + f" on {source.name}"
    provenance = {"model": model_identity, "source_set": source.id, "source_digest": source_digest,
                  "prompt": prompt}
    return SetSpec.of((EMBEDDING_KIND, model_identity, source.id, source_digest, prompt), name=label,
                      kind=EMBEDDING_KIND, model=model_identity, prompt=prompt, provenance=provenance)


def text_embeddings(workspace: Workspace, spec: SetSpec, keys: Sequence[str], texts: Sequence[str], encoder: Any,
                    prompt: str, batch_size: int, reporter: Reporter) -> TextEmbeddings:
    """The embedding of every ``texts[i]`` (item ``keys[i]``), encoding and storing only those missing.

    ``encoder(texts, prompt=...)`` returns unit vectors (a :class:`~clipclust.models.text_encoder.TextEncoder`);
    it is called only when an item is missing, so a complete set loads no model.
    """
    have = workspace.set_keys(spec.id)
    missing = [i for i, key in enumerate(keys) if key not in have]
    if missing:
        with reporter.task(f"embedding {len(missing)} descriptions", len(missing)) as advance:
            for start in range(0, len(missing), batch_size):
                rows = missing[start:start + batch_size]
                vectors = encoder([texts[i] for i in rows], prompt=prompt or None)
                workspace.write_batch(rows=[(spec, [keys[i] for i in rows], np.asarray(vectors, np.float32))])
                advance(len(rows))
    stored_keys, data = workspace.read_set(spec.id)
    row_of = {k: i for i, k in enumerate(stored_keys)}
    vectors = np.asarray(data[[row_of[k] for k in keys]], dtype=np.float32)
    return TextEmbeddings(vectors, spec.id, len(missing))
