"""Greedy chat answers of many prompts decoded together, with the per-call path's prompts, stops and budgets.

Where the time of a one-line answer goes with one call at a time (IC|TC step 2a, Qwen2.5-0.5B, 2 cores):
the shared instruction is already evaluated once (llama-cpp-python keeps the previous prompt's KV cache),
the description's ~130 tokens are evaluated as one batch, and then each of the ~4 answer tokens costs a
full read of the weights for a single token.  Here the answers of up to ``n_seq`` prompts are decoded in
lock step: one decode call per step evaluates the next token of every unfinished sequence, and the
prompts' common prefix is evaluated once and kept between groups.

The per-call path is followed exactly: the prompt tokens, stop strings, stopping criteria and token budget
are the ones ``Llama.create_chat_completion`` would use (captured from it), the next token is the argmax
of the logits (llama.cpp's greedy sampler picks the first maximum too), and the answer's text is cut the
way llama-cpp-python cuts it (end-of-generation token, stop strings, incomplete UTF-8, the budget).
What cannot be followed exactly is the arithmetic: llama.cpp's quantised kernels round a row computed
beside others differently, so an answer whose top two tokens nearly tie may differ (2 of 140 on the dev
set); that is why one call at a time stays the default.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from clipclust.models.llm.requests import DecodeParams, Message
from clipclust.models.llm.sequences import Entry, SequenceContext


class _Captured(Exception):
    """Carries the arguments ``create_chat_completion`` passed on to ``create_completion``."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__("captured")
        self.kwargs = kwargs


@dataclass
class Prompt:
    """One request as the per-call path would run it: prompt tokens, stop strings, criteria, budget."""

    tokens: list[int]
    stop: list[bytes]
    criteria: Any
    max_tokens: int


def capture(llama: Any, messages: Sequence[Message], params: DecodeParams, **chat_args: Any) -> dict[str, Any]:
    """The ``create_completion`` arguments that ``llama.create_chat_completion`` makes for ``messages``: its
    chat handler formats and tokenises them, and the call is stopped before anything is evaluated."""

    def intercept(**kwargs: Any) -> Any:
        raise _Captured(kwargs)

    llama.create_completion = intercept  # an instance attribute shadows the method for this one call
    try:
        llama.create_chat_completion(
            messages=[dict(m) for m in messages], temperature=params.temperature, top_p=params.top_p,
            max_tokens=params.max_tokens, seed=params.seed, repeat_penalty=1.0, **chat_args,
        )
    except _Captured as c:
        return c.kwargs
    finally:
        del llama.create_completion
    raise RuntimeError("the chat handler answered without calling create_completion")


def prepare(llama: Any, messages: Sequence[Message], params: DecodeParams) -> Prompt | None:
    """The prompt of a greedy request, or None when the per-call path must run it (sampling, a grammar, a
    logits processor, a handler that does not tokenise): only plain greedy decoding is replayed here."""
    if not params.greedy:
        return None
    kw = capture(llama, messages, params)
    tokens = kw.get("prompt")
    plain = (kw.get("grammar") is None and kw.get("logits_processor") is None and not kw.get("logit_bias")
             and kw.get("suffix") is None and not kw.get("stream") and not kw.get("echo")
             and kw.get("logprobs") is None and float(kw.get("temperature", 0.0)) == 0.0)
    if not plain or not isinstance(tokens, list) or not tokens:
        return None
    stop = kw.get("stop") or []
    stop = [stop] if isinstance(stop, str) else list(stop)
    n_ctx = int(llama.n_ctx())
    if len(tokens) >= n_ctx:
        raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of {n_ctx}")
    budget = kw.get("max_tokens")
    if budget is None or budget <= 0:
        budget = n_ctx - len(tokens)
    budget = budget if budget + len(tokens) < n_ctx else n_ctx - len(tokens)
    return Prompt(list(tokens), [s.encode("utf-8") for s in stop], kw.get("stopping_criteria"), int(budget))


def _ids(tokens: list[int]) -> Any:
    import numpy as np  # noqa: PLC0415

    return np.asarray(tokens, dtype=np.intc)


@dataclass
class _Answer:
    """One sequence's decoding, step by step as ``Llama._create_completion`` does it."""

    prompt: Prompt
    completion: list[int] = field(default_factory=list)
    text: bytes = b""
    multibyte_fix: int = 0
    done: bool = False

    def history(self) -> list[int]:
        return self.prompt.tokens + self.completion

    def accept(self, llama: Any, is_eog: Any, token: int, logits: Any) -> bool:
        """Take the sampled ``token``; True when it must be evaluated (the answer goes on)."""
        p = self.prompt
        if p.criteria is not None and p.criteria(_ids(self.history()), logits):
            return self._finish(llama, logits, appended=False)  # generation ends before the token is taken
        if is_eog(token):
            self.text = llama.detokenize(self.completion, prev_tokens=p.tokens)
            return self._finish(llama, logits, appended=False)
        self.completion.append(token)
        all_text = llama.detokenize(self.completion, prev_tokens=p.tokens)
        for k, char in enumerate(all_text[-3:]):  # an incomplete UTF-8 character waits for its next byte
            k = 3 - k
            for num, pattern in ((2, 192), (3, 224), (4, 240)):
                if num > k and pattern & char == pattern:
                    self.multibyte_fix = num - k
        if self.multibyte_fix > 0:
            self.multibyte_fix -= 1
            return True
        hits = [s for s in p.stop if s in all_text]
        if hits:
            self.text = all_text[: all_text.index(hits[0])]
            return self._finish(llama, logits, appended=True)
        if len(self.completion) >= p.max_tokens:
            self.text = llama.detokenize(self.completion, prev_tokens=p.tokens)
            return self._finish(llama, logits, appended=True)
        return True

    def _finish(self, llama: Any, logits: Any, *, appended: bool) -> bool:
        """The check ``_create_completion`` makes after its loop, on the tokens evaluated by then."""
        evaluated = self.history()[:-1] if appended else self.history()
        if self.prompt.criteria is not None and self.prompt.criteria(_ids(evaluated), logits):
            self.text = llama.detokenize(self.completion, prev_tokens=self.prompt.tokens)
        self.done = True
        return False

    @property
    def answer(self) -> str:
        return self.text.decode("utf-8", errors="ignore")


def common_prefix(token_lists: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every list shares."""
    first = token_lists[0]
    n = len(first)
    for other in token_lists[1:]:
        m = 0
        for a, b in zip(first, other):
            if a != b:
                break
            m += 1
        n = min(n, m)
    return n


CELL_STEP = 256  # llama.cpp pads the attended KV cells to this; per-sequence sizes are its multiples


class GreedyBatcher:
    """Decodes groups of prompts in lock step in a :class:`SequenceContext`.

    Each sequence's logits are bit for bit those of one call at a time, because its arithmetic is the same:
    it has its own KV stream laid out as one call at a time lays it out (shared prefix, then the rest of
    the prompt, then the answer), the rest of its prompt is evaluated in a decode call of its own, and each
    answer step evaluates one token of every sequence.  (One unified KV buffer would store the prefix once
    but interleave the sequences' cells, which changes the order of the attention sums; several prompts in
    one call are cut into equal slices per sequence, and a slice of one token takes another kernel than
    the same token among others.)  Sequence 0 keeps the shared prefix between groups; the others copy it.
    """

    def __init__(self, llama: Any, *, n_seq: int, n_ctx: int) -> None:
        import llama_cpp  # noqa: PLC0415

        self.llama = llama
        vocab = llama._model.vocab
        self.is_eog = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
        self.n_seq, self.max_cells = n_seq, n_ctx
        self.n_batch = int(llama.context_params.n_ubatch)
        self.context: SequenceContext | None = None
        self.cells = 0  # KV cells per sequence in the current context
        self.streams = n_seq  # sequences decoded together in it
        self._prefix: list[int] = []  # what sequence 0 holds

    def room(self, prompt: Prompt) -> int:
        """KV cells one sequence may need (its prompt and budget, plus a few for UTF-8 tails)."""
        return len(prompt.tokens) + prompt.max_tokens + 4

    def fits(self, prompt: Prompt) -> bool:
        return self.room(prompt) <= self.max_cells

    def _context(self, cells: int) -> SequenceContext:
        """A context whose sequences hold ``cells`` each, made anew (and the prefix forgotten) when it grows.
        The answering sequences hold at most twice the one-call context (long prompts: fewer at a time)."""
        cells = min(self.max_cells, -(-cells // CELL_STEP) * CELL_STEP)
        if self.context is None or cells > self.cells:
            if self.context is not None:
                self.context.close()
            self.cells = cells
            self.streams = max(1, min(self.n_seq, 2 * self.max_cells // cells))
            self.context = SequenceContext(self.llama, n_seq=self.streams + 1, n_ctx=self.cells * (self.streams + 1),
                                           n_batch=self.n_batch, unified=False)
            self._prefix = []
        return self.context

    def run(self, prompts: Sequence[Prompt]) -> Iterator[tuple[int, str]]:
        """``(position, answer)`` of each prompt, in the order they finish, as many at a time as fit."""
        start = 0
        while start < len(prompts):
            self._context(max(self.room(p) for p in prompts[start:]))
            group = prompts[start:start + self.streams]
            for pos, text in self._run(group):
                yield start + pos, text
            start += len(group)

    def _run(self, prompts: Sequence[Prompt]) -> Iterator[tuple[int, str]]:
        import numpy as np  # noqa: PLC0415

        ctx = self._context(max(self.room(p) for p in prompts))
        n_prefix = common_prefix([p.tokens for p in prompts])
        n_prefix = min(n_prefix, min(len(p.tokens) for p in prompts) - 1)  # every sequence evaluates a token
        keep = common_prefix([self._prefix, prompts[0].tokens[:n_prefix]]) if self._prefix else 0
        self._prefix = []  # unknown until the prefix below is evaluated
        ctx.forget(0, keep)
        prefix = prompts[0].tokens[:n_prefix]
        for start in range(keep, n_prefix, self.n_batch):
            ctx.decode([Entry(t, start + j, 0, False) for j, t in enumerate(prefix[start:start + self.n_batch])],
                       lambda i: None)
        self._prefix = list(prefix)
        answers = [_Answer(p) for p in prompts]
        calls: list[list[Entry]] = []
        for seq, p in enumerate(prompts, start=1):
            ctx.forget(seq)
            ctx.share(0, seq)
            suffix = p.tokens[n_prefix:]
            calls.append([Entry(t, n_prefix + j, seq, j == len(suffix) - 1) for j, t in enumerate(suffix)])
        read = lambda i: (int(np.argmax(ctx.logits(i))), ctx.logits(i).copy())  # noqa: E731
        steps = [out for call in calls if call for out in ctx.decode(call, read)]
        active = list(range(len(prompts)))
        while active:
            going, entries = [], []
            for pos, (token, logits) in zip(active, steps):
                answer = answers[pos]
                if answer.accept(self.llama, self.is_eog, token, logits):
                    going.append(pos)
                    entries.append(Entry(token, len(answer.history()) - 1, pos + 1, True))
                else:
                    yield pos, answer.answer
            active = going
            steps = ctx.decode(entries, read) if entries else []

    def close(self) -> None:
        if self.context is not None:
            self.context.close()
            self.context = None
