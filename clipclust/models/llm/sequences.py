"""A llama.cpp context that holds several sequences at once, so that one ``llama_decode`` serves many prompts.

llama-cpp-python's ``Llama`` keeps one sequence: one prompt is evaluated, then its answer is decoded one
token per call, each call reading every weight for a single token.  A :class:`SequenceContext` is a second
context on the same loaded weights (nothing is loaded twice) whose KV cache holds ``n_seq`` sequences in
one unified buffer: a shared prompt prefix is evaluated once in sequence 0 and attached to the others
without copying (``llama_memory_seq_cp``), and one decode call evaluates a token of every sequence at once.
Both the batched generator (:mod:`.batched`) and the llama.cpp hidden-state reader use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from clipclust.errors import ClipclustError

T = TypeVar("T")


class Entry(NamedTuple):
    """One token to evaluate: its id, its position in its sequence, the sequence, whether to read its output."""

    token: int
    pos: int
    seq: int
    output: bool


class SequenceContext:
    """``n_seq`` sequences over the weights of a loaded ``llama_cpp.Llama``.

    ``embeddings`` makes each output row also carry the final (normalised) hidden state, read per token
    (pooling none), next to its logits.  The thread counts and the rest of the settings are the loaded
    model's own.
    """

    def __init__(self, llama: Any, *, n_seq: int, n_ctx: int, n_batch: int, n_ubatch: int | None = None,
                 embeddings: bool = False, unified: bool = True) -> None:
        import llama_cpp  # noqa: PLC0415
        from llama_cpp import _internals  # noqa: PLC0415 - the context wrapper that frees before its model

        self._lib = llama_cpp
        source = llama.context_params
        params = type(source).from_buffer_copy(source)
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = min(int(n_ubatch or source.n_ubatch), n_batch)
        params.n_seq_max = n_seq
        params.kv_unified = unified  # one buffer: a prefix shared by many sequences is stored once
        params.embeddings = embeddings
        if embeddings:
            params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_NONE
        try:
            self._context = _internals.LlamaContext(model=llama._model, params=params, verbose=llama.verbose)
        except ValueError as e:
            raise ClipclustError(f"llama.cpp could not make a context of {n_ctx} tokens for {n_seq} sequences: "
                                 f"{e}") from e
        self.ctx = self._context.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_seq, self.n_ctx, self.n_batch = n_seq, int(llama_cpp.llama_n_ctx(self.ctx)), n_batch
        self.n_vocab = int(llama.n_vocab())
        self.n_embd = int(llama.n_embd())
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.decode_calls = 0

    # ------------------------------------------------------------------ memory
    def forget(self, seq: int = -1, start: int = 0) -> None:
        """Drop the cached tokens of ``seq`` (every sequence for -1) from position ``start`` on."""
        self._lib.llama_memory_seq_rm(self.memory, seq, start, -1)

    def share(self, source: int, target: int) -> None:
        """Give ``target`` everything ``source`` holds: cells tagged in a unified buffer, the stream copied
        (at the next decode) otherwise."""
        self._lib.llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def outputs_embeddings(self, on: bool) -> None:
        """Whether the next decode calls also give hidden states.  While on, llama.cpp outputs every token
        of a call (with its logits): evaluate the bulk of a prompt with it off and only the read tokens on."""
        self._lib.llama_set_embeddings(self.ctx, on)

    # ------------------------------------------------------------------ evaluation
    def logits(self, index: int) -> Any:
        """The logits of output ``index`` of the last decode call, as a float32 array (a view: copy to keep)."""
        import numpy as np  # noqa: PLC0415

        return np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self.ctx, index), shape=(self.n_vocab,))

    def embedding(self, index: int) -> Any:
        """The final hidden state of output ``index`` of the last decode call (a view: copy to keep)."""
        import numpy as np  # noqa: PLC0415

        return np.ctypeslib.as_array(self._lib.llama_get_embeddings_ith(self.ctx, index), shape=(self.n_embd,))

    def decode(self, entries: Sequence[Entry], read: Callable[[int], T]) -> list[T]:
        """Evaluate ``entries`` in calls of at most ``n_batch`` tokens; ``read(batch_index)`` is applied to
        each output entry right after the call that computed it, in order."""
        out: list[T] = []
        batch = self._batch
        for start in range(0, len(entries), self.n_batch):
            chunk = entries[start:start + self.n_batch]
            outputs = []
            for i, e in enumerate(chunk):
                batch.token[i] = e.token
                batch.pos[i] = e.pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = e.seq
                batch.logits[i] = e.output
                if e.output:
                    outputs.append(i)
            batch.n_tokens = len(chunk)
            status = self._lib.llama_decode(self.ctx, batch)
            self.decode_calls += 1
            if status != 0:
                raise ClipclustError(f"llama.cpp decode failed with status {status} "
                                     + ("(no room left in the context)" if status == 1 else ""))
            out.extend(read(i) for i in outputs)
        return out

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        self._context.close()
