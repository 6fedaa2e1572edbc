"""Vision-language describers: images + prompt in, one text per image out.

Backends mirror :mod:`clipclust.models.llm`: a GGUF model with its mmproj vision projector through
llama-cpp-python (chat handler picked from the GGUF metadata or named explicitly), an
OpenAI-compatible server (images sent as base64 data-URL content parts), and transformers
image-text-to-text models. :class:`CachedDescriber` caches every description in the same
:class:`~clipclust.models.llm.CallStore` as the text calls, keyed by the item's content hash and the
prompt, and only decodes the images it has to describe.
"""

from __future__ import annotations

import os
import random
import re
import threading
from abc import ABC
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from clipclust.methods.latteclip.collage import CANVAS, GAP, collage, collage_id
from clipclust.errors import ClipclustError, InputError
from clipclust.models.llm import (
    KEY_VERSION,
    CacheStats,
    CallStore,
    DecodeParams,
    OpenAIClient,
    ProgressFn,
    HTTPStatusError,
    import_llama_cpp,
    import_transformers,
    pick_options,
    canonical_key,
    check_gguf_path,
    dtype_kwarg,
    file_sha256,
    image_data_url,
    load_llama,
    resolve_device,
    resolve_dtype,
    run_cached,
    spec_kind,
    has_chat_template,
    transformers_source,
    pool_iter,
)

DESCRIBE_PARAMS = DecodeParams(max_tokens=100)
"""Default decoding for descriptions: greedy, 100 new tokens (the IC|TC paper's LLaVA budget)."""

ITEM_PROMPT = "Describe the {domain} in the photo concisely, less than 20 words."
"""LatteCLIP's per-image description prompt."""

GROUP_PROMPT = (
    "Describe the common visual attributes of the {domain} in all the photos concisely, "
    "less than 20 words."
)
"""LatteCLIP's group (collage) description prompt."""


def latteclip_prompt(domain: str, group: bool = False) -> str:
    """LatteCLIP's image or group prompt for a domain such as "flower" or "food"."""
    return (GROUP_PROMPT if group else ITEM_PROMPT).replace("{domain}", domain)


# --------------------------------------------------------------------------------------------------
# Interface and cache
# --------------------------------------------------------------------------------------------------


class Describer(ABC):
    """A VLM: ``describe(images, prompt, params)`` returns one text per image, in order."""

    identity: str
    name: str = ""
    default_params: DecodeParams = DESCRIBE_PARAMS
    max_concurrency: int = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.describe is Describer.describe and cls.describe_iter is Describer.describe_iter:
            raise TypeError(f"{cls.__name__} must define describe() or describe_iter()")

    def describe(
        self, images: Sequence[Image.Image], prompt: str, params: DecodeParams | None = None
    ) -> list[str]:
        """Describe every image with the same prompt; one text per image, in input order."""
        out = dict(self.describe_iter(images, prompt, params))
        return [out[i] for i in range(len(images))]

    def describe_iter(
        self, images: Sequence[Image.Image], prompt: str, params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        """Yield ``(index, text)`` as each description finishes (backends override one of the two)."""
        for i, img in enumerate(images):
            yield i, self.describe([img], prompt, params)[0]

    def close(self) -> None:
        """Release the model."""

    def __enter__(self) -> Describer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe_key(identity: str, params: DecodeParams, prompt: str, input_id: str) -> str:
    """Cache key of one description: model, decoding, full prompt and the image's content hash."""
    return canonical_key(
        {
            "v": KEY_VERSION,
            "kind": "describe",
            "model": identity,
            "params": params.to_dict(),
            "prompt": prompt,
            "input": input_id,
        }
    )


ImageSource = Image.Image | Callable[[], Image.Image]
"""An image, or a function that loads it (only called when the description is not cached)."""


def _load(src: ImageSource) -> Image.Image:
    return src if isinstance(src, Image.Image) else src()


class CachedDescriber:
    """Describes through a :class:`CallStore`: cached descriptions cost no model call, no decode.

    ``describe`` takes the items' content hashes (``input_ids``) because the key must identify the
    image without reading it; images may be given as loader callables so that cache hits never open
    the file.
    """

    def __init__(
        self,
        describer: Describer,
        store: CallStore,
        *,
        flush_every: int = 1,
        chunk_size: int | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        self.describer = describer
        self.store = store
        self.flush_every = max(1, flush_every)
        self.chunk_size = chunk_size or max(8, 4 * describer.max_concurrency)
        self.progress = progress
        self.stats = CacheStats()
        self.last_stats = CacheStats()

    @property
    def identity(self) -> str:
        return self.describer.identity

    @property
    def default_params(self) -> DecodeParams:
        return self.describer.default_params

    def describe(
        self,
        images: Sequence[ImageSource],
        prompt: str,
        params: DecodeParams | None = None,
        *,
        input_ids: Sequence[str],
    ) -> list[str]:
        if len(images) != len(input_ids):
            raise InputError(f"{len(images)} images but {len(input_ids)} input ids")
        params = params or self.default_params
        keys = [describe_key(self.identity, params, prompt, i) for i in input_ids]
        before = self.stats.copy()

        def compute(positions: list[int]) -> Iterator[tuple[int, str]]:
            for start in range(0, len(positions), self.chunk_size):
                chunk = positions[start : start + self.chunk_size]
                imgs = [_load(images[p]) for p in chunk]
                for j, text in self.describer.describe_iter(imgs, prompt, params):
                    yield chunk[j], text

        try:
            return run_cached(
                keys, compute, self.store, self.stats,
                flush_every=self.flush_every, progress=self.progress,
            )
        finally:
            self.last_stats = self.stats - before

    def close(self) -> None:
        self.describer.close()


# --------------------------------------------------------------------------------------------------
# Group descriptions (collages of items sharing a label)
# --------------------------------------------------------------------------------------------------


def group_indices(
    labels: Sequence[Hashable | None],
    group_size: int = 4,
    seed: int = 0,
    ids: Sequence[str] | None = None,
) -> list[list[int]]:
    """Partition items sharing a label into groups of ``group_size`` (the last one may be smaller).

    Deterministic: members of a label are ordered by ``ids`` (content hashes; else by position) and
    shuffled with a generator seeded by ``(seed, label)``, so adding items of one label never
    reshuffles another. Items whose label is ``None`` are left out.
    """
    if group_size < 1:
        raise InputError(f"group size must be >= 1, got {group_size}")
    if ids is not None and len(ids) != len(labels):
        raise InputError(f"{len(labels)} labels but {len(ids)} ids")
    by_label: dict[Hashable, list[int]] = {}
    for i, lab in enumerate(labels):
        if lab is not None:
            by_label.setdefault(lab, []).append(i)
    groups: list[list[int]] = []
    for lab in sorted(by_label, key=str):
        members = by_label[lab]
        if ids is not None:
            members = sorted(members, key=lambda i: (ids[i], i))
        random.Random(f"{seed}:{lab}").shuffle(members)
        groups.extend(members[s : s + group_size] for s in range(0, len(members), group_size))
    return groups


@dataclass(frozen=True)
class GroupDescription:
    """One collage description: the label, member positions, the collage's id and the text."""

    label: Hashable
    members: tuple[int, ...]
    input_id: str
    text: str


def describe_groups(
    describer: CachedDescriber,
    images: Sequence[ImageSource],
    input_ids: Sequence[str],
    labels: Sequence[Hashable | None],
    prompt: str,
    params: DecodeParams | None = None,
    *,
    group_size: int = 4,
    seed: int = 0,
    canvas: int = CANVAS,
    gap: int = GAP,
) -> list[GroupDescription]:
    """Describe collages of items sharing a label (LatteCLIP's group descriptions).

    Each group's collage is cached under an id derived from its members' content hashes and the
    layout; collages are only assembled for groups whose description is not cached yet.
    """
    if not (len(images) == len(input_ids) == len(labels)):
        raise InputError("images, input_ids and labels must have the same length")
    groups = group_indices(labels, group_size, seed, ids=input_ids)
    gids = [collage_id([input_ids[i] for i in g], canvas, gap) for g in groups]

    def loader(members: list[int]) -> Callable[[], Image.Image]:
        return lambda: collage([_load(images[i]) for i in members], canvas, gap)

    texts = describer.describe(
        [loader(g) for g in groups], prompt, params, input_ids=gids
    )
    return [
        GroupDescription(labels[g[0]], tuple(g), gid, text)  # type: ignore[arg-type]
        for g, gid, text in zip(groups, gids, texts)
    ]


# --------------------------------------------------------------------------------------------------
# llama.cpp (GGUF + mmproj)
# --------------------------------------------------------------------------------------------------

CHAT_HANDLERS: dict[str, str] = {
    "llava-1-5": "Llava15ChatHandler",
    "llava-1-6": "Llava16ChatHandler",
    "obsidian": "ObsidianChatHandler",
    "moondream": "MoondreamChatHandler",
    "nanollava": "NanoLlavaChatHandler",
    "llama-3-vision-alpha": "Llama3VisionAlphaChatHandler",
    "minicpm-v-2.6": "MiniCPMv26ChatHandler",
    "qwen2.5-vl": "Qwen25VLChatHandler",
    "gemma4": "Gemma4ChatHandler",
    "mtmd": "MTMDChatHandler",
}
"""llama-cpp-python multimodal chat handlers by the names its server uses for ``--chat_format``.
``mtmd`` is the generic handler that renders the model's own GGUF chat template."""

_NAME_HINTS: list[tuple[tuple[str, ...], str]] = [
    (("qwen2.5-vl", "qwen2.5vl", "qwen2-5-vl", "qwen25vl", "qwen2-vl", "qwen2vl"), "qwen2.5-vl"),
    (("minicpm",), "minicpm-v-2.6"),
    (("moondream",), "moondream"),
    (("nanollava",), "nanollava"),
    (("llama-3-vision-alpha",), "llama-3-vision-alpha"),
    (("obsidian",), "obsidian"),
    (("gemma-4", "gemma4"), "gemma4"),
    (("llava-v1.6", "llava-1.6", "llava-v1-6", "llava-1-6", "llava-next"), "llava-1-6"),
    (("llava",), "llava-1-5"),
]


def select_chat_format(
    metadata: Mapping[str, Any], model_path: str | os.PathLike[str] | None = None,
    explicit: str | None = None,
) -> str:
    """Pick the multimodal chat handler for a GGUF VLM.

    An explicit format wins (and must be known). Otherwise name hints in the metadata
    (general.name, general.basename, general.architecture, general.finetune) and the file name
    select a dedicated handler (llava-1.5/1.6, moondream, minicpm-v, qwen2.5-vl...); a model with its
    own ``tokenizer.chat_template`` and no dedicated handler (Gemma 3, SmolVLM, ...) gets the generic
    ``mtmd`` handler that renders that template; anything else is treated as LLaVA-1.5, the format
    of the early llava GGUFs that carry no template.
    """
    if explicit:
        fmt = explicit.strip().lower()
        if fmt not in CHAT_HANDLERS:
            raise InputError(
                f"unknown VLM chat format {explicit!r}; choose one of {', '.join(CHAT_HANDLERS)}"
            )
        return fmt
    fields = ("general.name", "general.basename", "general.architecture", "general.finetune")
    parts = [str(metadata.get(f, "")) for f in fields]
    if model_path is not None:
        parts.append(Path(model_path).name)
    hint = re.sub(r"[\s_]+", "-", " ".join(parts).lower())
    for needles, fmt in _NAME_HINTS:
        if any(n in hint for n in needles):
            return fmt
    if str(metadata.get("tokenizer.chat_template", "")).strip():
        return "mtmd"
    return "llava-1-5"


def _vision_messages(prompt: str, image: Image.Image) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_data_url(image)}},
                {"type": "text", "text": prompt},
            ],
        }
    ]


class LlamaCppDescriber(Describer):
    """A GGUF VLM with its mmproj projector, run in-process by llama-cpp-python."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        mmproj: str | os.PathLike[str] | None,
        *,
        chat_format: str | None = None,
        n_ctx: int = 4096,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        seed: int = 0,
        default_params: DecodeParams | None = None,
        verbose: bool = False,
    ) -> None:
        self.path = check_gguf_path(model_path, "VLM")
        if mmproj is None:
            raise InputError(
                f"{self.path.name} needs its vision projector: pass --mmproj FILE.gguf (the "
                "mmproj-*.gguf file published next to the model)"
            )
        self.mmproj = check_gguf_path(mmproj, "mmproj")
        if chat_format:
            select_chat_format({}, None, chat_format)  # validate before the slow load
        llama_cpp = import_llama_cpp()
        self.llama = load_llama(
            self.path, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads, seed=seed,
            chat_format=None, verbose=verbose,
        )
        self.chat_format = select_chat_format(self.llama.metadata, self.path, chat_format)
        handler_cls = getattr(llama_cpp.llama_chat_format, CHAT_HANDLERS[self.chat_format], None)
        if handler_cls is None:
            raise InputError(
                f"the installed llama-cpp-python has no {CHAT_HANDLERS[self.chat_format]} for "
                f"{self.path.name}: upgrade it (pip install -U llama-cpp-python) or pick another "
                "--chat-format"
            )
        handler = handler_cls(clip_model_path=str(self.mmproj), verbose=verbose)
        self.llama.chat_handler = handler
        init = getattr(handler, "_init_mtmd_context", None)
        if init is not None:  # load the projector now, so a wrong mmproj fails here, not mid-run
            try:
                init(self.llama)
            except ValueError as e:
                self.llama.close()
                raise InputError(
                    f"could not load mmproj {self.mmproj} for {self.path.name} ({e}); pass the "
                    "mmproj file made for this model"
                ) from e
        self.default_params = default_params or DESCRIBE_PARAMS
        self.identity = _gguf_vlm_identity(self.path, self.mmproj, self.chat_format)
        self.name = f"{self.path.name} + {self.mmproj.name}"
        self._lock = threading.Lock()

    def _one(self, image: Image.Image, prompt: str, params: DecodeParams) -> str:
        try:
            out = self.llama.create_chat_completion(
                messages=_vision_messages(prompt, image),
                temperature=params.temperature, top_p=params.top_p,
                max_tokens=params.max_tokens, seed=params.seed, repeat_penalty=1.0,
            )
        except ValueError as e:
            msg = str(e)
            if "exceed context window" in msg:
                raise InputError(
                    f"image + prompt do not fit the context window of {self.path.name} ({msg}); "
                    "raise n_ctx (--n-ctx)"
                ) from e
            if "mtmd" in msg or "clip" in msg.lower() or "vision" in msg.lower():
                raise InputError(
                    f"could not use mmproj {self.mmproj} with {self.path.name} ({msg}); pass the "
                    "mmproj file made for this model, or set --chat-format"
                ) from e
            raise ClipclustError(f"llama.cpp failed on {self.path.name}: {msg}") from e
        return (out["choices"][0]["message"].get("content") or "").strip()

    def describe_iter(
        self, images: Sequence[Image.Image], prompt: str, params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        params = params or self.default_params
        for i, img in enumerate(images):
            with self._lock:
                text = self._one(img, prompt, params)
            yield i, text

    def close(self) -> None:
        llama = getattr(self, "llama", None)
        if llama is not None and hasattr(llama, "close"):
            llama.close()


# --------------------------------------------------------------------------------------------------
# OpenAI-compatible servers
# --------------------------------------------------------------------------------------------------


class OpenAIDescriber(Describer):
    """A VLM behind an OpenAI-compatible server; images travel as base64 data-URL content parts."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout: float = 600.0,
        retries: int = 3,
        default_params: DecodeParams | None = None,
    ) -> None:
        if concurrency < 1:
            raise InputError(f"concurrency must be >= 1, got {concurrency}")
        self.client = OpenAIClient(base_url, api_key=api_key, timeout=timeout, retries=retries)
        self.model = self.client.resolve_model(model)
        self.identity = f"openai-vlm:{self.client.base_url}#{self.model}"
        self.name = f"{self.model} @ {self.client.base_url}"
        self.max_concurrency = concurrency
        self.default_params = default_params or DESCRIBE_PARAMS

    def _one(self, image: Image.Image, prompt: str, params: DecodeParams) -> str:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": _vision_messages(prompt, image),
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
            "seed": params.seed,
        }
        if not params.greedy:
            payload["top_p"] = params.top_p
        try:
            return self.client.chat(payload).strip()
        except HTTPStatusError as e:
            raise ClipclustError(
                f"{self.client.base_url}/chat/completions failed on an image ({e}); does the "
                "server load a vision model (llama.cpp: --mmproj)?"
            ) from e

    def describe_iter(
        self, images: Sequence[Image.Image], prompt: str, params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        params = params or self.default_params
        yield from pool_iter(
            [lambda im=im: self._one(im, prompt, params) for im in images], self.max_concurrency
        )


# --------------------------------------------------------------------------------------------------
# transformers image-text-to-text
# --------------------------------------------------------------------------------------------------


class TransformersDescriber(Describer):
    """A transformers VLM (``AutoProcessor`` + ``AutoModelForImageTextToText``) prompted through the
    processor's chat template with one image and the prompt."""

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
        torch, transformers = import_transformers()
        source, identity = transformers_source(spec)
        self.device = resolve_device(device, torch)
        self.batch_size = max(1, batch_size)
        self.default_params = default_params or DESCRIBE_PARAMS
        model_cls = getattr(transformers, "AutoModelForImageTextToText", None) or getattr(
            transformers, "AutoModelForVision2Seq"
        )
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(
                source, trust_remote_code=trust_remote_code
            )
            self.model = model_cls.from_pretrained(
                source, trust_remote_code=trust_remote_code,
                **dtype_kwarg(transformers, resolve_dtype(dtype, self.device, torch)),
            ).to(self.device)
        except (OSError, ValueError) as e:
            raise InputError(
                f"could not load {spec} as an image-text-to-text model ({e}); pass a VLM such as "
                "hf:llava-hf/llava-1.5-7b-hf or a directory saved with save_pretrained"
            ) from e
        self.model.eval()
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
        self.has_template = bool(getattr(self.processor, "chat_template", None))
        if identity is None:  # first download: the snapshot's commit is known now
            identity = f"hf:{source}@{getattr(self.model.config, '_commit_hash', None) or 'unknown'}"
        # From the files, as known_describer_identity() computes it without loading.
        self.identity = f"transformers-vlm:{identity}" + ("" if has_chat_template(source) else ":plain-template")
        self.name = str(spec)
        self._torch = torch
        self._lock = threading.Lock()

    def prompt_text(self, prompt: str) -> str:
        if self.has_template:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        image_token = getattr(self.processor, "image_token", None) or "<image>"
        return f"USER: {image_token}\n{prompt} ASSISTANT:"

    def _batch(self, images: Sequence[Image.Image], prompt: str, params: DecodeParams) -> list[str]:
        torch = self._torch
        text = self.prompt_text(prompt)
        inputs = self.processor(
            images=[im.convert("RGB") for im in images], text=[text] * len(images),
            return_tensors="pt", padding=True,
        ).to(self.device)
        floating = {k: v for k, v in inputs.items() if torch.is_tensor(v) and v.is_floating_point()}
        for k, v in floating.items():
            inputs[k] = v.to(self.model.dtype)
        tok = getattr(self.processor, "tokenizer", self.processor)
        gen_kwargs: dict[str, Any] = dict(max_new_tokens=params.max_tokens, pad_token_id=tok.pad_token_id)
        if params.greedy:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            torch.manual_seed(params.seed)
            gen_kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        with torch.no_grad():
            out = self.model.generate(**inputs, **gen_kwargs)
        start = inputs["input_ids"].shape[1]
        return [tok.decode(row[start:], skip_special_tokens=True).strip() for row in out]

    def describe_iter(
        self, images: Sequence[Image.Image], prompt: str, params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        params = params or self.default_params
        for start in range(0, len(images), self.batch_size):
            chunk = list(images[start : start + self.batch_size])
            with self._lock:
                texts = self._batch(chunk, prompt, params)
            for j, t in enumerate(texts):
                yield start + j, t

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


# --------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------

_GGUF_OPTS = {"chat_format", "n_ctx", "n_gpu_layers", "n_threads", "seed", "default_params", "verbose"}
_HTTP_OPTS = {"model", "api_key", "concurrency", "timeout", "retries", "default_params"}
_HF_OPTS = {"device", "dtype", "batch_size", "default_params", "trust_remote_code"}


def _gguf_vlm_identity(path: Path, mmproj: Path, chat_format: str) -> str:
    return f"llama.cpp-vlm:sha256:{file_sha256(path)}:mmproj-sha256:{file_sha256(mmproj)}:{chat_format}"


def load_describer(
    spec: str | os.PathLike[str], mmproj: str | os.PathLike[str] | None = None, *, lazy: bool = False, **opts: Any
) -> Describer:
    """Open a describer: ``FILE.gguf`` (+ ``mmproj``), ``http(s)://.../v1``, ``hf:ORG/NAME`` or a
    transformers directory. Options the chosen backend does not use are ignored. ``lazy`` returns a
    :class:`LazyDescriber`: the identity now, the weights on the first call."""
    kind = spec_kind(spec)
    if kind != "gguf" and mmproj is not None:
        raise InputError(
            f"--mmproj only applies to GGUF models; {spec} is "
            + ("a server (it loads its own projector)" if kind == "http" else "a transformers model")
        )
    if lazy and kind != "http":
        return LazyDescriber(spec, mmproj, **opts)
    if kind == "gguf":
        return LlamaCppDescriber(spec, mmproj, **pick_options(opts, _GGUF_OPTS))
    if kind == "http":
        return OpenAIDescriber(str(spec), **pick_options(opts, _HTTP_OPTS))
    return TransformersDescriber(spec, **pick_options(opts, _HF_OPTS))


def known_describer_identity(
    spec: str | os.PathLike[str], mmproj: str | os.PathLike[str] | None = None, **opts: Any
) -> str | None:
    """The identity the describer for ``spec`` will have, when known without loading the weights (a
    GGUF's chat format comes from its metadata, read without the tensors); None for a hub model not
    downloaded yet or a server."""
    kind = spec_kind(spec)
    if kind == "gguf":
        path = check_gguf_path(spec, "VLM")
        if mmproj is None:
            return None  # the loader says what is missing
        projector = check_gguf_path(mmproj, "mmproj")
        explicit = opts.get("chat_format")
        if explicit:
            return _gguf_vlm_identity(path, projector, select_chat_format({}, None, explicit))
        llama_cpp = import_llama_cpp()
        vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        try:
            metadata = dict(vocab.metadata)
        finally:
            vocab.close()
        return _gguf_vlm_identity(path, projector, select_chat_format(metadata, path, None))
    if kind == "transformers":
        source, identity = transformers_source(spec)
        if identity is None:
            return None
        return f"transformers-vlm:{identity}" + ("" if has_chat_template(source) else ":plain-template")
    return None


class LazyDescriber(Describer):
    """A local VLM opened on its first call, so a describe run whose answers are all stored loads
    nothing. Where the identity cannot be known without loading, asking for it loads the model."""

    def __init__(self, spec: str | os.PathLike[str], mmproj: str | os.PathLike[str] | None = None, **opts: Any) -> None:
        self.spec, self.mmproj, self.opts = spec, mmproj, opts
        self._known = known_describer_identity(spec, mmproj, **opts)
        self._inner: Describer | None = None
        self._lock = threading.Lock()
        self.name = Path(str(spec)).name if spec_kind(spec) == "gguf" else str(spec)
        self.default_params = opts.get("default_params") or DESCRIBE_PARAMS

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    def _load(self) -> Describer:
        with self._lock:
            if self._inner is None:
                self._inner = load_describer(self.spec, self.mmproj, **self.opts)
                if self._known is not None and self._inner.identity != self._known:
                    raise ClipclustError(
                        f"{self.name}: the loaded model's identity {self._inner.identity} differs from "
                        f"{self._known}, computed before loading"
                    )
                self.name = self._inner.name
            return self._inner

    @property
    def identity(self) -> str:  # type: ignore[override]
        return self._known if self._known is not None else self._load().identity

    def describe(self, images: Sequence[Image.Image], prompt: str, params: DecodeParams | None = None) -> list[str]:
        return self._load().describe(images, prompt, params)

    def describe_iter(
        self, images: Sequence[Image.Image], prompt: str, params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        return self._load().describe_iter(images, prompt, params)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


__all__ = [
    "CHAT_HANDLERS",
    "DESCRIBE_PARAMS",
    "GROUP_PROMPT",
    "ITEM_PROMPT",
    "CachedDescriber",
    "Describer",
    "GroupDescription",
    "ImageSource",
    "LazyDescriber",
    "LlamaCppDescriber",
    "OpenAIDescriber",
    "TransformersDescriber",
    "describe_groups",
    "describe_key",
    "group_indices",
    "latteclip_prompt",
    "known_describer_identity",
    "load_describer",
    "select_chat_format",
]
