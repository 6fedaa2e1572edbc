"""Hidden states of a GGUF model read by llama.cpp itself: ESMC's final-layer state without transformers.

transformers reads a GGUF file by dequantising every weight to fp32 (gigabytes for a 0.5B model, and tens
of seconds to load); llama.cpp runs the quantised file as it is.  What it exposes is the output of the
final norm for each token it is asked about (the "embeddings" of a context whose pooling is none, the
same vector as transformers' normalised ``hidden_states[-1]``) next to that token's logits, which are
exactly the final layer's logit lens.  So this reader serves the last layer at any position near the end
of the prompt; earlier layers (and the localisation, which scans them all) stay with transformers
(:mod:`clipclust.models.hidden`), whose lens needs the model's norm and output head.

Each prompt is evaluated on its own: all but its read tokens in one decode call (a batch of ~100 tokens
that keeps the cores as busy as a bigger one), then the read tokens with the hidden states switched on
(while they are on, llama.cpp outputs every token of a call, logits included, so the bulk goes without).
An item's vector then depends on its own prompt only, bit for bit: llama.cpp's quantised kernels round a
row differently in a group of four rows than alone, so items decoded side by side would depend on their
neighbours.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipclust.errors import InputError
from clipclust.models.llm.hashing import file_sha256
from clipclust.models.llm.llama import check_gguf_path, load_llama
from clipclust.models.llm.sequences import Entry, SequenceContext

__all__ = ["LlamaHiddenReader", "gguf_identity", "gguf_layers"]

CELL_STEP = 256
PROMPT_BATCH = 512  # tokens per decode call (llama.cpp's default batch)


def gguf_identity(path: str | os.PathLike[str]) -> str:
    """The identity of states read by llama.cpp from ``path``: its reader and the file's hash (states from
    transformers, ``gguf:sha256:...``, are a different set)."""
    return f"llama.cpp:sha256:{file_sha256(check_gguf_path(path, 'LLM'))}"


def gguf_layers(path: str | os.PathLike[str]) -> int:
    """The number of decoder layers in a GGUF file's metadata (its vocabulary is read, not its weights)."""
    import llama_cpp  # noqa: PLC0415

    llama = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    try:
        arch = llama.metadata.get("general.architecture", "")
        value = llama.metadata.get(f"{arch}.block_count")
        if value is None:
            raise InputError(f"{Path(path).name} names no layer count ({arch}.block_count) in its metadata")
        return int(value)
    finally:
        llama.close()


class LlamaHiddenReader:
    """A GGUF model whose final-layer states and lens tokens llama.cpp computes (see the module docstring).

    Implements the part of :class:`~clipclust.models.hidden.HiddenModel` that ESMC's state reading uses:
    ``read`` (states and top lens tokens in one pass), ``token_texts``, ``n_layers``, ``identity``.
    """

    reader = "llama.cpp"
    images = False

    def __init__(self, path: str | os.PathLike[str], *, n_threads: int | None = None) -> None:
        self.path = check_gguf_path(path, "LLM")
        self.name = self.path.name
        self.identity = gguf_identity(self.path)
        # The loaded model's own context stays tiny: the work happens in the sequence context below.
        self.llama = load_llama(self.path, n_ctx=256, n_gpu_layers=0, n_threads=n_threads, seed=0,
                                chat_format=None, verbose=False)
        import llama_cpp  # noqa: PLC0415

        self.n_layers = int(llama_cpp.llama_model_n_layer(self.llama._model.model))
        self._context: SequenceContext | None = None
        self._cells = 0

    def reaches(self, layer: int) -> bool:
        """Whether llama.cpp gives this layer's state: only the last one (the final norm's output)."""
        return int(layer) == self.n_layers

    def tokens(self, prompt: str) -> list[int]:
        """The prompt's tokens as the model's tokenizer makes them (a BOS only where the model asks for one)."""
        return self.llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)

    def _sequence(self, cells: int) -> SequenceContext:
        if self._context is None or cells > self._cells:
            if self._context is not None:
                self._context.close()
            self._cells = -(-cells // CELL_STEP) * CELL_STEP
            self._context = SequenceContext(self.llama, n_seq=1, n_ctx=self._cells, n_batch=PROMPT_BATCH,
                                            embeddings=True)
        return self._context

    def read(self, prompts: Sequence[str], layer: int, position: int, top: int,
             images: Sequence[Any] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(states (N, D) float32, top lens ids (N, top) int64, their probabilities (N, top) float32)``
        at ``layer`` (the last) and ``position`` (from the end: -1 is the last token)."""
        if images is not None:
            raise InputError("llama.cpp reads text prompts here; images go through transformers")
        if not self.reaches(layer):
            raise InputError(f"llama.cpp gives the last layer ({self.n_layers}) only, not layer {layer}")
        if position >= 0:
            raise ValueError("positions count from the end of the prompt: -1 is the last token")
        token_lists = [self.tokens(p) for p in prompts]
        if any(len(t) < -position for t in token_lists):
            raise ValueError(f"a prompt is shorter than {-position} tokens")
        states = np.zeros((len(prompts), self.llama.n_embd()), np.float32)
        ids = np.zeros((len(prompts), top), np.int64)
        probs = np.zeros((len(prompts), top), np.float32)
        for i, tokens in enumerate(token_lists):
            ctx = self._sequence(len(tokens))
            ctx.forget()
            cut = len(tokens) + position  # the read tokens start here
            ctx.outputs_embeddings(False)
            ctx.decode([Entry(t, j, 0, False) for j, t in enumerate(tokens[:cut])], lambda k: None)
            ctx.outputs_embeddings(True)
            (states[i], (ids[i], probs[i])), = ctx.decode(
                [Entry(t, cut + j, 0, j == 0) for j, t in enumerate(tokens[cut:])],
                lambda k: (ctx.embedding(k).copy(), _top(ctx.logits(k), top)))
        return states, ids, probs

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        """Each token id as the text it stands for (special tokens spelled out, broken UTF-8 replaced)."""
        return [self.llama.detokenize([int(i)], special=True).decode("utf-8", errors="replace") for i in ids]

    def close(self) -> None:
        if self._context is not None:
            self._context.close()
            self._context = None
        if getattr(self, "llama", None) is not None:
            self.llama.close()
            self.llama = None


def _top(logits: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` most probable tokens of a softmax over ``logits``, most probable first."""
    z = logits.astype(np.float64)
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    k = min(top, p.shape[0])
    idx = np.argpartition(-p, k - 1)[:k]
    idx = idx[np.argsort(-p[idx], kind="stable")]
    return idx.astype(np.int64), p[idx].astype(np.float32)
