"""ESMC criterion states in the workspace: one forward pass per item, then any K, head or name is free.

For a model, a criterion prompt and a (layer, position), three sets are kept:

* ``esmc-hidden`` (item -> D floats): the hidden state the clustering reads;
* ``esmc-lens`` (item -> LENS_TOP x 2): the ids and probabilities of its top logit-lens tokens, for
  the lens features and for cluster names;
* ``esmc-vocab`` (token id -> text): the text of every token that appears in a lens set.

Items are processed in batches and each batch is written at once, so an interrupted run keeps what it
computed and a re-run continues; the model is opened only when an item is missing (or when the
localisation has not been done before; its result is remembered in the workspace).  The sets' ids
come from :func:`state_specs` alone (stored states are found again by them).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from clipclust.store import SetSpec, Workspace, short_hash
from clipclust.errors import InputError
from clipclust.methods.esmc.features import LENS_TOP, Localisation, criterion_prompt, localise
from clipclust.core.progress import Reporter, SilentReporter

__all__ = ["READER_CHOICES", "CriterionStates", "ReaderChoice", "StateRequest", "StateSource", "choose_reader",
           "criterion_states", "state_specs"]

READER_CHOICES = ("auto", "llama.cpp", "transformers")
LLAMA_DTYPE = "gguf"  # llama.cpp computes with the file's own (quantised) weights

WRITE_BATCH = 32  # items per forward-and-store round


@dataclass
class StateSource:
    """What the LLM reads for each item: its description (``texts``) or its image file (``paths``)."""

    set_id: str
    keys: list[str]
    texts: list[str] | None = None
    paths: list[str] | None = None

    @property
    def images(self) -> bool:
        return self.paths is not None


@dataclass
class StateRequest:
    """The model and where to read it.  ``layer``/``position`` None: localise with ``keywords``, or
    (without keywords) the final layer's last token."""

    model: str
    criterion: str
    template: str
    layer: int | None = None
    position: int | None = None
    keywords: list[str] | None = None
    locate_samples: int = 10
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    reader: str = "auto"


@dataclass
class CriterionStates:
    """The states of the asked items (in the source's order) and where they came from."""

    keys: list[str]
    hidden: np.ndarray
    top_ids: np.ndarray
    top_probs: np.ndarray
    token_text: dict[int, str]
    layer: int
    position: int
    model_identity: str
    set_ids: dict[str, str]
    localisation: dict[str, Any] | None = None
    n_computed: int = 0
    forward_seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


class _LazyModel:
    """Opens the model on first use, once."""

    def __init__(self, opener: Callable[[], Any]) -> None:
        self._opener, self.model = opener, None

    def get(self) -> Any:
        if self.model is None:
            self.model = self._opener()
        return self.model

    def close(self) -> None:
        if self.model is not None:
            self.model.close()
            self.model = None


def _n_layers_from_config(source: str, extra: dict[str, Any]) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, **extra)
    text_config = getattr(config, "text_config", None) or config
    return int(text_config.num_hidden_layers)


def _final_layer(workspace: Workspace, identity: str, count: Callable[[], int]) -> int:
    """The model's last layer, remembered in the workspace (reading a GGUF file's config takes seconds)."""
    key = "esmc-layers:" + identity
    remembered = workspace.memo_get(key)
    if remembered is not None:
        return int(remembered)
    n_layers = int(count())
    workspace.memo_put(key, n_layers)
    return n_layers


@dataclass
class ReaderChoice:
    """Which backend reads the states, the identity its states are stored under, and why auto chose it."""

    name: str
    identity: str
    note: str = ""


def choose_reader(workspace: Workspace, req: StateRequest, images: bool) -> ReaderChoice:
    """llama.cpp for a GGUF text model read at its last layer (fast, the file as it is), transformers for the
    rest: hub models and folders, image-text models, earlier layers, localisation (which scans every layer's
    lens) and an explicit dtype.  ``req.reader`` forces one; llama.cpp then refuses what it cannot read.
    States are stored under the reader's identity, so the two readers' states never mix."""
    from clipclust.models.hidden import model_source
    from clipclust.models.registry import model_ref

    if req.reader not in READER_CHOICES:
        raise InputError(f"'{req.reader}': expected one of {', '.join(READER_CHOICES)}", option="reader")
    gguf = model_ref(req.model).form == "gguf"
    if req.reader == "transformers" or (req.reader == "auto" and not gguf):
        return ReaderChoice("transformers", model_source(req.model)[2])
    from clipclust.models.hidden_llama import gguf_identity, gguf_layers

    why = []
    if not gguf:
        why.append("it reads .gguf files only")
    elif images:
        why.append("it reads text, not images")
    else:
        identity = gguf_identity(req.model)
        if req.keywords and (req.layer is None or req.position is None):
            why.append("localising the criterion scans every layer's logit lens")
        elif req.layer is not None:
            final = _final_layer(workspace, identity, lambda: gguf_layers(req.model))
            if int(req.layer) != final:
                why.append(f"it gives the last layer ({final}) only, not layer {req.layer}")
        if req.dtype != "auto":
            why.append(f"it computes with the file's own weights, not in {req.dtype}")
    if not why:
        return ReaderChoice("llama.cpp", identity)
    if req.reader == "llama.cpp":
        raise InputError("llama.cpp cannot read these states: " + "; ".join(why) + " (use transformers)",
                         option="reader")
    return ReaderChoice("transformers", model_source(req.model)[2], note="transformers: " + "; ".join(why))


def _known_final_layer(workspace: Workspace, identity: str, count: Callable[[], int]) -> int | None:
    """The last layer when the memo or the model's config says it (None: the config cannot be read here, and
    loading the model will say why)."""
    try:
        return _final_layer(workspace, identity, count)
    except (OSError, ValueError, KeyError):
        return None


def _dtype_name(device: str, dtype: str) -> str:
    """The dtype a run computes in (part of the sets' identity: bf16 states differ from fp32 ones)."""
    from clipclust.models.devices import resolve_device, resolve_precision

    return dtype if dtype != "auto" else resolve_precision("auto", resolve_device(device))


def state_specs(identity: str, dtype: str, source_set: str, template: str, criterion: str, layer: int,
                position: int, localisation: Localisation | None = None) -> dict[str, SetSpec]:
    """The three sets that hold a model's criterion states read at (layer, position), by role.

    The ids derive from every part that changes the rows, so a later run with the same parts finds them.
    """
    base = (identity, dtype, source_set, template, criterion, int(layer), int(position))
    prompt = criterion_prompt(template, criterion)
    provenance = {"model": identity, "dtype": dtype, "source_set": source_set, "template": template,
                  "criterion": criterion, "layer": int(layer), "position": int(position)}
    label = f"{criterion} L{layer}@{position}"
    # the choice and its evidence travel with the set (the workspace listing shows a set's attrs)
    attrs = {} if localisation is None else {"localisation": json.dumps(localisation.to_dict())}
    return {
        "hidden": SetSpec.of(("esmc-hidden", *base), name=f"esmc-hidden:{label}", kind="esmc-hidden",
                             model=identity, prompt=prompt, provenance=provenance, attrs=attrs),
        "lens": SetSpec.of(("esmc-lens", LENS_TOP, *base), name=f"esmc-lens:{label}", kind="esmc-lens",
                           model=identity, prompt=prompt, provenance=provenance),
        "vocab": SetSpec.of(("esmc-vocab", identity), name=f"esmc-vocab:{identity[:24]}", kind="esmc-vocab",
                            model=identity, keyed_by="token", dtype="str", provenance={"model": identity}),
    }


def _prompts(source: StateSource, req: StateRequest, rows: Sequence[int]) -> tuple[list[str], list[Any] | None]:
    from clipclust.core.images import decode_image

    if source.texts is not None:
        return [criterion_prompt(req.template, req.criterion, source.texts[i]) for i in rows], None
    prompt = criterion_prompt(req.template, req.criterion)
    images = []
    for i in rows:
        path = Path(source.paths[i])  # type: ignore[index]
        try:
            images.append(decode_image(path.read_bytes()))
        except OSError as exc:
            raise InputError(f"cannot read image {path}: {exc.strerror or exc}") from None
    return [prompt] * len(rows), images


def _locate(workspace: Workspace, lazy: _LazyModel, source: StateSource, req: StateRequest, identity: str,
            reporter: Reporter) -> Localisation:
    memo_key = "esmc-locate:" + short_hash(identity, source.set_id, req.template, req.criterion,
                                           req.keywords, req.locate_samples, req.seed)
    stored = workspace.memo_get(memo_key)
    if stored is not None:
        return Localisation(**stored)
    rng = np.random.default_rng(req.seed)
    n = len(source.keys)
    rows = sorted(rng.choice(n, size=min(req.locate_samples, n), replace=False).tolist())
    with reporter.task(f"localising the criterion on {len(rows)} sampled items", None):
        model = lazy.get()
        prompts, images = _prompts(source, req, rows)
        found = localise(model, prompts, req.keywords or [], images=images)
    workspace.memo_put(memo_key, found.to_dict())
    return found


def criterion_states(workspace: Workspace, source: StateSource, req: StateRequest,
                     reporter: Reporter | None = None, opener: Callable[[], Any] | None = None) -> CriterionStates:
    """The hidden state and lens tokens of every item of ``source``, computing only the missing ones.

    ``opener`` opens the model (default: :func:`clipclust.models.hidden.load_hidden_model` on ``req.model``
    with the reader :func:`choose_reader` picks); it is called at most once and only when something must be
    computed.
    """
    from clipclust.models.hidden import load_hidden_model, model_source

    reporter = reporter or SilentReporter()
    if not source.keys:
        raise InputError("there is nothing to cluster: the chosen set holds no item")
    if req.locate_samples < 1:
        raise InputError(f"locate_samples {req.locate_samples}: expected 1 or more")
    criterion_prompt(req.template, req.criterion, "" if source.texts is not None else None)  # checks the template
    choice = choose_reader(workspace, req, source.images)
    if choice.name == "llama.cpp":
        from clipclust.models.hidden_llama import gguf_layers

        lazy = _LazyModel(opener or (lambda: load_hidden_model(req.model, reader="llama.cpp")))
        count, dtype = (lambda: gguf_layers(req.model)), LLAMA_DTYPE
    else:
        load_from, extra, _ = model_source(req.model)
        lazy = _LazyModel(opener or (lambda: load_hidden_model(req.model, images=source.images, device=req.device,
                                                                  dtype=req.dtype, batch_size=req.batch_size)))
        count = (lambda: lazy.model.n_layers if lazy.model is not None else _n_layers_from_config(load_from, extra))
        dtype = _dtype_name(req.device, req.dtype)
    try:
        return _states(workspace, source, req, reporter, lazy, choice, dtype, count)
    finally:
        lazy.close()


def _states(workspace: Workspace, source: StateSource, req: StateRequest, reporter: Reporter, lazy: _LazyModel,
            choice: ReaderChoice, dtype: str, count: Callable[[], int]) -> CriterionStates:
    identity = choice.identity
    localisation = None
    layer, position = req.layer, req.position
    if layer is not None:  # refused before any weight is loaded: the count comes from the memo or the config
        last = _known_final_layer(workspace, identity, count)
        if last is not None and not 0 <= layer <= last:
            raise InputError(f"{layer}: there is no such layer; {req.model} has layers 0..{last} (0 = the token "
                             "embeddings)", option="layer")
    if layer is None or position is None:
        if req.keywords:
            localisation = _locate(workspace, lazy, source, req, identity, reporter)
            layer = localisation.layer if layer is None else layer
            position = localisation.position if position is None else position
        else:
            position = -1 if position is None else position
            if layer is None:
                layer = _final_layer(workspace, identity, count)
    if position >= 0:
        raise InputError(f"position {position}: positions count from the end of the prompt (-1 = last token)")
    specs = state_specs(identity, dtype, source.set_id, req.template, req.criterion, int(layer), int(position),
                        localisation)
    ids = {role: spec.id for role, spec in specs.items()}
    have = workspace.set_keys(ids["hidden"]) & workspace.set_keys(ids["lens"])
    missing = [i for i, key in enumerate(source.keys) if key not in have]
    forward_seconds = 0.0
    if missing:
        with reporter.task(f"criterion states ({len(missing)} items, layer {layer}, position {position}, "
                           f"{choice.name})", len(missing)) as advance:
            model = lazy.get()
            known_tokens = workspace.set_keys(ids["vocab"])
            for start in range(0, len(missing), WRITE_BATCH):
                rows = missing[start:start + WRITE_BATCH]
                prompts, images = _prompts(source, req, rows)
                began = time.perf_counter()
                states, top_ids, top_probs = model.read(prompts, int(layer), int(position), LENS_TOP, images=images)
                forward_seconds += time.perf_counter() - began
                new_tokens = sorted({int(t) for t in top_ids.reshape(-1)} - {int(t) for t in known_tokens})
                known_tokens |= {str(t) for t in new_tokens}
                keys = [source.keys[i] for i in rows]
                workspace.write_batch(rows=[
                    (specs["hidden"], keys, states),
                    (specs["lens"], keys, np.stack([top_ids.astype(np.float32), top_probs], axis=-1)),
                    (specs["vocab"], [str(t) for t in new_tokens], model.token_texts(new_tokens)),
                ])
                advance(len(rows))
    hidden = _rows(workspace, ids["hidden"], source.keys)
    lens = _rows(workspace, ids["lens"], source.keys)
    vocab_keys, vocab_texts = workspace.read_set(ids["vocab"])
    details = {"dtype": dtype, "prompt": specs["hidden"].prompt, "reader": choice.name}
    if choice.note:
        details["reader_note"] = choice.note
    return CriterionStates(
        keys=list(source.keys), hidden=hidden, top_ids=lens[..., 0].astype(np.int64), top_probs=lens[..., 1],
        token_text={int(k): str(t) for k, t in zip(vocab_keys, vocab_texts)}, layer=int(layer),
        position=int(position), model_identity=identity, set_ids=ids,
        localisation=None if localisation is None else localisation.to_dict(), n_computed=len(missing),
        forward_seconds=forward_seconds, details=details,
    )


def _rows(workspace: Workspace, set_id: str, keys: Sequence[str]) -> np.ndarray:
    stored_keys, data = workspace.read_set(set_id)
    row_of = {k: i for i, k in enumerate(stored_keys)}
    return data[[row_of[k] for k in keys]]
