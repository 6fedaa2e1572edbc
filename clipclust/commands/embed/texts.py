"""Prompt and agnostic texts: encode the classes a text set lacks, then hold all its vectors for the derived sets."""

from __future__ import annotations

import numpy as np

from clipclust.commands.embed.plan import TextSet
from clipclust.models.clip import ClipEncoder
from clipclust.store import Workspace


def missing_classes(workspace: Workspace, text_sets: list[TextSet]) -> dict[str, list[int]]:
    """Text-set id -> the indices of its classes the workspace does not hold yet."""
    missing = {}
    for ts in text_sets:
        have = workspace.set_keys(ts.spec.id)
        missing[ts.spec.id] = [i for i, c in enumerate(ts.classes) if c not in have]
    return missing


def encode_texts(workspace: Workspace, encoder: ClipEncoder | None, text_sets: list[TextSet],
                 missing: dict[str, list[int]]) -> int:
    """Encode and store the missing classes, then read every text set's vectors in class order.

    Returns how many texts were encoded; ``encoder`` is only used (and only needed) when some are missing.
    """
    encoded = 0
    for ts in text_sets:
        todo = missing[ts.spec.id]
        if todo:
            assert encoder is not None
            vecs = encoder.encode_texts([ts.texts[i] for i in todo])
            workspace.write_batch(rows=[(ts.spec, [ts.classes[i] for i in todo], vecs)])
            encoded += len(todo)
        keys, data = workspace.read_set(ts.spec.id)
        by_class = dict(zip(keys, data))
        ts.vectors = np.stack([by_class[c] for c in ts.classes]).astype(np.float32)
    return encoded
