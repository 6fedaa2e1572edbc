"""transformers causal LMs: chat templates, token-trie constrained decoding, hub identities."""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from clipclust.errors import InputError

from clipclust.models.devices import device_and_dtype
from clipclust.models.llm.generator import TextGenerator, serial_batches
from clipclust.models.llm.hashing import directory_sha256
from clipclust.models.llm.requests import DecodeParams, GenerationRequest, Message


def import_transformers() -> tuple[Any, Any]:
    try:
        import torch  # noqa: PLC0415
        import transformers  # noqa: PLC0415
    except ImportError as e:
        raise InputError("transformers models need torch and transformers: pip install torch transformers") from e
    return torch, transformers


def dtype_kwarg(transformers: Any, dtype: Any) -> dict[str, Any]:
    """``from_pretrained`` renamed ``torch_dtype`` to ``dtype`` in transformers 4.56."""
    major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _hub_commit(repo: str) -> str | None:
    """The commit of the locally cached snapshot of a hub repository, or None when none is cached."""
    try:
        from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

        cached = try_to_load_from_cache(repo, "config.json")
    except Exception:  # noqa: BLE001 - no hub library or an unreadable cache: not known
        return None
    return Path(cached).parent.name if isinstance(cached, str) else None


def transformers_source(spec: str | os.PathLike[str]) -> tuple[str, str | None]:
    """``(what to pass to from_pretrained, identity)`` for ``hf:ORG/NAME`` or a local directory.

    A local directory is identified by the hashes of its files, a hub name by the commit of its
    cached snapshot: ``hf:ORG/NAME@<commit>``. Before the first download that commit is unknown and
    the identity is None; the generator then takes it from the loaded model, so the first run and
    every later one share one identity (a name-only ``@main`` would change once the model is cached,
    and with it every cache key).
    """
    s = str(spec)
    if s.startswith("hf:"):
        repo = s[3:].strip("/")
        if not re.fullmatch(r"[\w.\-]+/[\w.\-]+", repo):
            raise InputError(f"expected hf:ORG/NAME, got {s!r}")
        commit = _hub_commit(repo)
        return repo, (f"hf:{repo}@{commit}" if commit else None)
    p = Path(s).expanduser()
    if not p.is_dir():
        raise InputError(f"model directory not found: {p} (pass a directory saved with save_pretrained or hf:ORG/NAME)")
    if not (p / "config.json").exists():
        raise InputError(f"{p} has no config.json: not a transformers model directory")
    return str(p), f"dir:sha256:{directory_sha256(p)}"


PLAIN_TEMPLATE_NOTE = "plain-template"


def template_identity(prefix: str, source: str, identity: str) -> str:
    """``PREFIX:identity``, marked when the model ships no chat template (its prompts are built by hand,
    so a template added later changes the answers)."""
    return f"{prefix}:{identity}" + ("" if has_chat_template(source) else f":{PLAIN_TEMPLATE_NOTE}")


def known_identity(prefix: str, spec: str | os.PathLike[str]) -> str | None:
    """The identity a transformers model opens with, without loading it; None before its first download."""
    source, identity = transformers_source(spec)
    return None if identity is None else template_identity(prefix, source, identity)


def open_pretrained(spec: str | os.PathLike[str], device: str, dtype: str) -> tuple[Any, Any, str, str | None, str, dict[str, Any]]:
    """What loading a transformers model takes: ``(torch, transformers, source, identity or None, device,
    from_pretrained dtype keywords)``, the device and dtype resolved by :mod:`clipclust.models.devices`."""
    torch, transformers = import_transformers()
    source, identity = transformers_source(spec)
    device, torch_dtype = device_and_dtype(device, dtype)
    return torch, transformers, source, identity, device, dtype_kwarg(transformers, torch_dtype)


def loaded_identity(prefix: str, source: str, identity: str | None, model: Any) -> str:
    """The identity of a loaded model: as :func:`known_identity` computes it, the snapshot's commit taken
    from the model on its first download."""
    if identity is None:
        commit = getattr(model.config, "_commit_hash", None) or _hub_commit(source)
        identity = f"hf:{source}@{commit or 'unknown'}"
    return template_identity(prefix, source, identity)


def pad_left(tokenizer: Any) -> None:
    """Left padding (so that every prompt of a batch ends where generation starts), eos as pad if none."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def sampling(params: DecodeParams, torch: Any) -> dict[str, Any]:
    """``generate`` keywords for the decoding settings: greedy, or seeded sampling."""
    if params.greedy:
        return dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    torch.manual_seed(params.seed)
    return dict(do_sample=True, temperature=params.temperature, top_p=params.top_p)


def plain_chat_prompt(messages: Sequence[Message]) -> str:
    """Prompt for tokenizers without a chat template (base models): role-prefixed turns."""
    parts = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(f"{m['role'].capitalize()}: {content}")
    return "\n".join(parts) + "\nAssistant:"


class _TokenTrie:
    """Token sequences of the allowed answers, walked during constrained greedy decoding."""

    def __init__(self, sequences: Mapping[str, Sequence[int]]) -> None:
        self.root: dict[int, Any] = {}
        self.ends: dict[tuple[int, ...], str] = {}
        for choice, seq in sequences.items():
            node = self.root
            for t in seq:
                node = node.setdefault(int(t), {})
            self.ends.setdefault(tuple(int(t) for t in seq), choice)

    def allowed(self, prefix: Sequence[int], eos: int) -> list[int]:
        node = self.root
        for t in prefix:
            if t not in node:
                return [eos]
            node = node[t]
        nxt = list(node.keys())
        if tuple(prefix) in self.ends:
            nxt.append(eos)
        return nxt or [eos]


class TransformersGenerator(TextGenerator):
    """A transformers causal LM (``AutoModelForCausalLM``) prompted through its chat template.

    Constrained requests decode greedily through a token trie of the choices (the transformers
    equivalent of a grammar), so answers are always one of them.
    """

    def __init__(
        self,
        spec: str | os.PathLike[str],
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 1,
        default_params: DecodeParams | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        torch, transformers, source, identity, self.device, dtype_kw = open_pretrained(spec, device, dtype)
        self.batch_size = max(1, batch_size)
        self.default_params = default_params or DecodeParams()
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(
                source, trust_remote_code=trust_remote_code, **dtype_kw,
            ).to(self.device)
        except OSError as e:
            raise InputError(f"could not load transformers model {spec}: {e}") from e
        self.model.eval()
        pad_left(self.tokenizer)
        self.has_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.identity = loaded_identity("transformers", source, identity, self.model)
        self.name = str(spec)
        self._torch = torch
        self._lock = threading.Lock()

    def prompt_text(self, messages: Sequence[Message]) -> str:
        if self.has_template:
            return self.tokenizer.apply_chat_template(
                [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
            )
        return plain_chat_prompt(messages)

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        return [int(i) for i in ids if i is not None]

    def _batch(self, requests: Sequence[GenerationRequest], params: DecodeParams) -> list[str]:
        torch = self._torch
        texts = [self.prompt_text(r.messages) for r in requests]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        prompt_len = enc["input_ids"].shape[1]
        eos_ids = self._eos_ids()
        eos = eos_ids[0] if eos_ids else self.tokenizer.pad_token_id
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=params.max_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=eos_ids or None,
        )
        gen_kwargs.update(sampling(params, torch))
        tries: list[_TokenTrie | None] = []
        for r in requests:
            if r.choices is None:
                tries.append(None)
            else:
                seqs = {c: self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in r.choices}
                tries.append(_TokenTrie(seqs))
        if any(t is not None for t in tries):
            vocab = list(range(len(self.tokenizer)))
            longest = max(
                (max(len(s) for s in t.ends) for t in tries if t is not None), default=1
            )
            if all(t is not None for t in tries):
                gen_kwargs["max_new_tokens"] = longest + 1

            def allowed(batch_id: int, input_ids: Any) -> list[int]:
                trie = tries[batch_id]
                if trie is None:
                    return vocab
                return trie.allowed([int(t) for t in input_ids[prompt_len:]], eos)

            gen_kwargs["prefix_allowed_tokens_fn"] = allowed
            if not params.greedy:  # sampling inside the trie is fine, but keep it reproducible
                torch.manual_seed(params.seed)
        with torch.no_grad():
            out = self.model.generate(**enc, **gen_kwargs)
        results = []
        for row, (r, trie) in enumerate(zip(requests, tries)):
            gen = [int(t) for t in out[row, prompt_len:]]
            while gen and (gen[-1] in eos_ids or gen[-1] == self.tokenizer.pad_token_id):
                gen.pop()
            if trie is not None and tuple(gen) in trie.ends:
                results.append(trie.ends[tuple(gen)])
            else:
                results.append(self.tokenizer.decode(gen, skip_special_tokens=True).strip())
        return results

    def generate(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> list[str]:
        return [t for _, t in sorted(self.generate_iter(requests, params))]

    def generate_iter(
        self, requests: Sequence[GenerationRequest], params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        params = params or self.default_params
        return serial_batches(requests, self.batch_size, self._lock, lambda batch: self._batch(batch, params))

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


def has_chat_template(source: str) -> bool:
    """Whether a transformers model folder (or cached hub snapshot) ships a chat template."""
    folder = Path(source)
    if not folder.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

            cached = try_to_load_from_cache(source, "config.json")
        except Exception:  # noqa: BLE001
            cached = None
        if not isinstance(cached, str):
            return False
        folder = Path(cached).parent
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    for name in ("tokenizer_config.json", "processor_config.json"):
        try:
            config = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(config, dict) and config.get("chat_template"):
            return True
    return False
