"""Hidden states and the logit lens of transformers language models (ESMC).

ESMC reads what an LLM "thinks" right after a criterion prompt ("The color of the car is"): the hidden
state at one (layer, token position), or its logit lens (final norm + output head + softmax).  This
module opens a transformers causal LM (``hf:ORG/NAME``, a saved folder, or a GGUF file that
transformers dequantises, which needs the ``gguf`` and ``accelerate`` packages) or an
image-text-to-text model (LLaVA style: a processor with an image token), runs padded batches and keeps
only the asked layers and positions.

Two details matter for correctness:
* ``hidden_states`` holds ``n_layers + 1`` entries (0 = token embeddings); the last one is already
  passed through the final norm, so the lens applies the norm to every layer except that one
  (re-normalising it gives junk tokens).
* Batches are left-padded so that position -1 is every prompt's last token; explicit position ids
  keep rotary positions independent of the padding, so an item's vector does not depend on its batch.
* A pass that needs only earlier layers stops after the deepest one, and the output head runs on the
  last position only: the vocabulary-sized logits of every position are never made.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clipclust.errors import InputError
from clipclust.models.devices import device_and_dtype
from clipclust.models.registry import Backend, Registry

__all__ = ["READERS", "READER_NAMES", "HiddenModel", "load_hidden_model", "model_source"]


def model_source(spec: str | os.PathLike[str]) -> tuple[str, dict[str, Any], str]:
    """``(what from_pretrained gets, extra from_pretrained keywords, identity)`` for a model spec.

    ``hf:ORG/NAME`` is identified by its name, a folder by the hashes of its files, a ``.gguf`` file
    by its own hash (transformers loads it with ``gguf_file=``).
    """
    from clipclust.models.llm import directory_sha256, file_sha256

    _, ref = READERS.resolve(spec)
    if ref.form == "hf":
        repo = ref.name.strip("/")
        if not re.fullmatch(r"[\w.\-]+/[\w.\-]+", repo):
            raise InputError(f"expected hf:ORG/NAME, got {ref.raw!r}")
        return repo, {}, f"hf:{repo}"
    path = ref.path
    assert path is not None
    if ref.form == "gguf":
        if not path.is_file():
            raise InputError(f"GGUF file not found: {path}")
        return str(path.parent), {"gguf_file": path.name}, f"gguf:sha256:{file_sha256(path)}"
    if not (path / "config.json").exists():
        raise InputError(f"{path} has no config.json: not a transformers model folder")
    return str(path), {}, f"dir:sha256:{directory_sha256(path)}"


class _Enough(Exception):
    """Raised by a hook once the deepest asked layer has run: the rest of the forward pass is skipped."""


def _decoder_layers(model: Any) -> Any:
    """The language model's list of decoder layers (None when the architecture hides it)."""
    import torch

    inner = getattr(model, "model", None)
    for base in (inner, getattr(inner, "language_model", None), getattr(model, "language_model", None)):
        layers = getattr(base, "layers", None) if base is not None else None
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    return None


def _final_norm(model: Any) -> Any:
    """The language model's final norm (the module between the last layer and the output head)."""
    bases = [getattr(model, "model", None), getattr(getattr(model, "model", None), "language_model", None),
             getattr(model, "language_model", None), getattr(model, "transformer", None)]
    for base in bases:
        for name in ("norm", "final_layernorm", "ln_f"):
            module = getattr(base, name, None) if base is not None else None
            if module is not None:
                return module
    raise InputError(f"cannot find the final norm of {type(model).__name__}; the logit lens needs a decoder "
                     "with a final norm and an output head")


@dataclass
class HiddenModel:
    """An open model that turns prompts into hidden states and hidden states into lens probabilities.

    ``n_layers`` counts decoder layers: valid layers are 0..n_layers (0 = embeddings, n_layers = the
    final, normalised state).  ``images`` is True for image-text-to-text models, whose prompts carry
    one image each.
    """

    model: Any
    tokenizer: Any
    processor: Any
    identity: str
    name: str
    device: str
    n_layers: int
    images: bool = False
    batch_size: int = 8
    _norm: Any = field(default=None, repr=False)
    _head: Any = field(default=None, repr=False)

    # ------------------------------------------------------------------ forward
    def _inputs(self, prompts: Sequence[str], images: Sequence[Any] | None) -> dict[str, Any]:
        if self.images:
            if images is None or len(images) != len(prompts):
                raise ValueError("an image-text-to-text model needs one image per prompt")
            text = [f"{self.image_token}\n{p}" for p in prompts]
            batch = self.processor(images=list(images), text=text, return_tensors="pt", padding=True)
        else:
            batch = self.tokenizer(list(prompts), return_tensors="pt", padding=True)
        return dict(batch)

    @property
    def image_token(self) -> str:
        token = getattr(self.processor, "image_token", None)
        if not token:
            raise InputError(f"{self.name}: its processor names no image token; it is not a LLaVA-style model")
        return str(token)

    def states(self, prompts: Sequence[str], layers: Sequence[int], positions: Sequence[int],
               images: Sequence[Any] | None = None) -> np.ndarray:
        """Hidden states ``(N, len(layers), len(positions), D)`` in float32.

        ``positions`` are offsets from the end of each prompt (-1 = its last token).  One forward pass
        per batch of ``batch_size`` prompts; only the asked rows leave the device.
        """
        import torch

        self._check_layers(layers)
        if any(p >= 0 for p in positions):
            raise ValueError("positions count from the end of the prompt: -1 is the last token")
        out: list[np.ndarray] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start:start + self.batch_size]
            inputs = self._inputs(chunk, None if images is None else images[start:start + self.batch_size])
            mask = inputs["attention_mask"]
            if int(mask.sum(dim=1).min()) < max(-p for p in positions):
                raise ValueError(f"a prompt is shorter than {max(-p for p in positions)} tokens")
            inputs = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in inputs.items()}
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            position_ids = (inputs["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
            hidden = self._forward(inputs, position_ids, layers)
            picked = torch.stack([hidden[layer][:, list(positions), :] for layer in layers], dim=1)
            out.append(picked.float().cpu().numpy())
            del hidden
        return np.concatenate(out) if out else np.zeros((0, len(layers), len(positions), 0), np.float32)

    def _forward(self, inputs: dict[str, Any], position_ids: Any, layers: Sequence[int]) -> Any:
        """Hidden states by layer number.  When every asked layer lies before the last, the pass stops after
        the deepest one (hooks on the decoder layers): the layers above it are never computed."""
        import torch

        stack = _decoder_layers(self.model)
        deepest = max(layers)
        if stack is None or min(layers) < 1 or deepest >= self.n_layers:
            with torch.inference_mode():
                result = self.model(**inputs, position_ids=position_ids, output_hidden_states=True,
                                    logits_to_keep=1, use_cache=False)
            return result.hidden_states
        captured: dict[int, Any] = {}

        def keep(layer: int) -> Any:
            def hook(module: Any, args: Any, output: Any) -> None:
                captured[layer] = output[0] if isinstance(output, tuple) else output
                if layer == deepest:
                    raise _Enough
            return hook

        handles = [stack[layer - 1].register_forward_hook(keep(layer)) for layer in set(layers)]
        try:
            with torch.inference_mode():
                self.model(**inputs, position_ids=position_ids, use_cache=False, logits_to_keep=1)
        except _Enough:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return captured

    def _check_layers(self, layers: Sequence[int]) -> None:
        bad = [layer for layer in layers if not 0 <= layer <= self.n_layers]
        if bad:
            raise InputError(f"layer {bad[0]} does not exist: {self.name} has layers 0..{self.n_layers}")

    # ------------------------------------------------------------------ logit lens
    def lens(self, hidden: np.ndarray, layer: int) -> Any:
        """Vocabulary probabilities ``(..., V)`` (a float32 torch tensor) of hidden states from ``layer``.

        The final norm is applied unless ``layer`` is the last one, which transformers already normalised.
        """
        import torch

        self._check_layers([layer])
        if self._norm is None:
            self._norm = _final_norm(self.model)
            self._head = self.model.get_output_embeddings()
        param = next(self._head.parameters())
        with torch.inference_mode():
            h = torch.as_tensor(np.asarray(hidden), device=param.device).to(param.dtype)
            if layer < self.n_layers:
                h = self._norm(h)
            return torch.softmax(self._head(h).float(), dim=-1).cpu()

    def read(self, prompts: Sequence[str], layer: int, position: int, top: int,
             images: Sequence[Any] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(states (N, D), top lens ids (N, top), their probabilities)`` at one (layer, position): what ESMC
        stores per item (the llama.cpp reader computes the same in one pass)."""
        states = self.states(prompts, [int(layer)], [int(position)], images=images)[:, 0, 0, :]
        ids, probs = self.lens_top(states, int(layer), top)
        return states, ids, probs

    def lens_top(self, hidden: np.ndarray, layer: int, top: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``top`` most probable tokens of each hidden state's lens: ``(ids int64, probs float32)``."""
        chunks_ids, chunks_probs = [], []
        flat = np.asarray(hidden).reshape(-1, np.asarray(hidden).shape[-1])
        for start in range(0, flat.shape[0], 64):
            probs = self.lens(flat[start:start + 64], layer)
            values, ids = probs.topk(min(top, probs.shape[-1]), dim=-1)
            chunks_ids.append(ids.numpy())
            chunks_probs.append(values.numpy())
        shape = np.asarray(hidden).shape[:-1]
        k = min(top, self._head.weight.shape[0])
        return (np.concatenate(chunks_ids).reshape(*shape, k).astype(np.int64),
                np.concatenate(chunks_probs).reshape(*shape, k).astype(np.float32))

    # ------------------------------------------------------------------ tokens
    def token_texts(self, ids: Sequence[int]) -> list[str]:
        """Each token id as the text it stands for (leading spaces kept)."""
        return [self.tokenizer.decode([int(i)]) for i in ids]

    def keyword_tokens(self, words: Sequence[str]) -> list[int]:
        """The first token of each keyword as it follows a prompt: ' red', ' Red', 'red' (deduplicated)."""
        found: dict[int, None] = {}
        for word in words:
            word = word.strip()
            if not word:
                continue
            for variant in (" " + word, " " + word.capitalize(), word):
                ids = self.tokenizer.encode(variant, add_special_tokens=False)
                if ids:
                    found[int(ids[0])] = None
        return list(found)

    def close(self) -> None:
        self.model = None
        self._norm = self._head = None


def _count_layers(model: Any) -> int:
    config = model.config
    text_config = getattr(config, "text_config", None) or config
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(text_config, name, None)
        if isinstance(value, int):
            return value
    raise InputError(f"cannot tell how many layers {type(model).__name__} has")


def _from_pretrained(transformers: Any, source: Any, extra: dict[str, Any], torch_dtype: Any,
                     images: bool) -> tuple[Any, Any, Any]:
    """(model, tokenizer, processor): an image-text-to-text model with its processor, or a causal LM."""
    if images:
        processor = transformers.AutoProcessor.from_pretrained(source, **extra)
        model = transformers.AutoModelForImageTextToText.from_pretrained(source, dtype=torch_dtype, **extra)
        return model, processor.tokenizer, processor
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, **extra)
    return transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **extra), tokenizer, None


@contextlib.contextmanager
def _quiet_gguf_conversion() -> Any:
    """transformers converts GGUF tensors under a plain tqdm bar that its progress-bar switch does not reach;
    silence that one bar while loading (it would be interleaved with clipclust's own output)."""
    try:
        module = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    except ImportError:  # pragma: no cover - another transformers layout
        yield
        return
    original = getattr(module, "tqdm", None)
    if original is None:  # pragma: no cover
        yield
        return
    module.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        module.tqdm = original


def _open(spec: str, *, images: bool = False, device: str = "auto", dtype: str = "auto",
          batch_size: int = 8) -> HiddenModel:
    try:
        import transformers
    except ImportError as exc:
        raise InputError("ESMC needs torch and transformers: pip install torch transformers") from exc
    source, extra, identity = model_source(spec)
    if "gguf_file" in extra:
        for package in ("gguf", "accelerate"):
            try:
                __import__(package)
            except ImportError:
                raise InputError(f"loading a GGUF file in transformers needs the {package} package: "
                                 f"pip install gguf accelerate") from None
    device, torch_dtype = device_and_dtype(device, dtype)
    transformers.utils.logging.disable_progress_bar()  # our own progress goes to stderr; theirs would interleave
    try:
        with _quiet_gguf_conversion() if "gguf_file" in extra else contextlib.nullcontext():
            model, tokenizer, processor = _from_pretrained(transformers, source, extra, torch_dtype, images)
    except (OSError, ValueError, KeyError) as exc:
        what = "an image-text-to-text (LLaVA-style)" if images else "a causal language"
        raise InputError(f"cannot load {spec} as {what} model: {str(exc).splitlines()[0]}") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.to(device).eval()
    if model.get_output_embeddings() is None:
        raise InputError(f"{spec} has no output head; the logit lens needs one")
    name = Path(str(spec)).name if not str(spec).startswith("hf:") else str(spec)[3:]
    return HiddenModel(model=model, tokenizer=tokenizer, processor=processor, identity=identity, name=name,
                       device=device, n_layers=_count_layers(model), images=images, batch_size=batch_size)


def _open_llama(spec: str, *, n_threads: int | None = None) -> Any:
    from clipclust.models.hidden_llama import LlamaHiddenReader

    return LlamaHiddenReader(spec, n_threads=n_threads)


def _llama_identity(spec: str, **_: Any) -> str:
    from clipclust.models.hidden_llama import gguf_identity

    return gguf_identity(spec)


READERS = Registry("hidden-state", "pass hf:ORG/NAME, a folder saved with save_pretrained, or a .gguf file")
"""Hidden-state readers by model string: transformers opens hub models, folders and (dequantised) GGUF files
at any layer; llama.cpp runs a GGUF file as it is, for its last layer (ESMC picks it when that layer is asked:
:mod:`clipclust.models.hidden_llama`)."""

READERS.register(Backend("transformers", frozenset({"hf", "dir", "gguf"}), _open,
                         options=frozenset({"images", "device", "dtype", "batch_size"}),
                         identity=lambda spec, **_: model_source(spec)[2]))
READERS.register(Backend("llama.cpp", frozenset({"gguf"}), _open_llama, options=frozenset({"n_threads"}),
                         identity=_llama_identity))

READER_NAMES = ("transformers", "llama.cpp")


def load_hidden_model(spec: str | os.PathLike[str], *, images: bool = False, device: str = "auto",
                      dtype: str = "auto", batch_size: int = 8, reader: str = "transformers") -> Any:
    """Open a text LLM (``images=False``) or an image-text-to-text model for hidden states and the lens, with
    ``reader`` (transformers: any layer; llama.cpp: a GGUF file's last layer)."""
    return READERS.open(spec, backend=reader, images=images, device=device, dtype=dtype, batch_size=batch_size)
