"""CLIP encoders behind one small interface: open_clip (registry names, hf-hub, local checkpoints) and transformers.

Torch, open_clip and transformers are imported only when a model is really loaded, so that a fully
cached run (nothing to encode) never pays for those imports.  A model's *identity* (what cache keys are
built from) is known without loading it: a registry name, a hub id, or a hash of the local weight files.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from clipclust.errors import ClipclustError, InputError, opt
from clipclust.models.devices import resolve_device, resolve_precision, torch_dtype
from clipclust.models.hub import hub_offline, hub_offline_reason, is_cached
from clipclust.models.registry import Backend, ModelRef, Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

DEFAULT_MODEL = "ViT-B-32/laion2b_s34b_b79k"
OPEN_CLIP_CONFIG = "open_clip_config.json"
TRANSFORMERS_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
LOCAL_HINT = (
    f"pass a local path instead: {opt('model')} DIR (a transformers CLIP folder, or a folder with "
    f"{OPEN_CLIP_CONFIG} and open_clip weights) or {opt('model')} ARCH/CHECKPOINT.pt"
)


@dataclass(frozen=True)
class ModelSpec:
    """What --model named, parsed without loading anything."""

    raw: str
    backend: str  # "open_clip" | "transformers"
    arch: str = ""  # open_clip architecture name, "hf-hub:..." or "" for local config dirs
    pretrained: str = ""  # open_clip pretrained tag, or ""
    path: str = ""  # local directory or checkpoint file, or ""
    hub_id: str = ""  # transformers hub id


def _open_clip_folder(ref: ModelRef) -> bool:
    return ref.form != "dir" or (ref.path is not None and (ref.path / OPEN_CLIP_CONFIG).is_file())


def _transformers_folder(ref: ModelRef) -> bool:
    return ref.form != "dir" or (ref.path is not None and (ref.path / "config.json").is_file())


def _checkpoint_beside_config(ref: ModelRef) -> bool:
    return ref.form != "file" or (ref.path is not None and (ref.path.parent / OPEN_CLIP_CONFIG).is_file())


ENCODERS = Registry(
    "CLIP", f"use ARCH/PRETRAINED (e.g. {DEFAULT_MODEL}), hf-hub:ORG/NAME, hf:ORG/NAME, or a path",
    refusals={
        "dir": lambda ref: f"{ref.raw}: folder has neither {OPEN_CLIP_CONFIG} (open_clip) nor config.json (transformers)",
        "file": lambda ref: f"{ref.raw}: an open_clip checkpoint needs its architecture: {opt('model')} ARCH/{ref.raw}",
    },
)
"""CLIP encoders by model string: open_clip (its registry names, hf-hub:, its folders and checkpoints) and
transformers (hf:, folders with config.json).  A folder with both configs is open_clip's."""

ENCODERS.register(Backend("open_clip", frozenset({"name", "hf-hub", "local-dir", "dir", "file"}),
                          lambda spec: _load_open_clip(parse_model_spec(spec)),
                          takes=lambda ref: _open_clip_folder(ref) and _checkpoint_beside_config(ref)))
ENCODERS.register(Backend("transformers", frozenset({"hf", "dir"}),
                          lambda spec: _load_transformers(parse_model_spec(spec)), takes=_transformers_folder))


def parse_model_spec(spec: str) -> ModelSpec:
    """Decide which backend and loading path a --model string means; bad names are input errors."""
    spec = spec.strip()
    if not spec:
        raise InputError(f"empty {opt('model')}; e.g. {opt('model')} {DEFAULT_MODEL}")
    backend, ref = ENCODERS.resolve(spec)
    if backend.name == "transformers":
        return ModelSpec(spec, "transformers", hub_id=ref.name if ref.form == "hf" else "",
                         path=str(ref.path) if ref.form == "dir" else "")
    if ref.form == "hf-hub":
        if not ref.name.strip("/"):
            raise InputError(f"model '{spec}': name the hub repository, e.g. hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
        return ModelSpec(spec, "open_clip", arch=spec)
    if ref.form == "local-dir" and not (ref.path is not None and (ref.path / OPEN_CLIP_CONFIG).is_file()):
        raise InputError(f"model '{spec}': {ref.path} is not a folder with {OPEN_CLIP_CONFIG} and open_clip weights")
    if ref.form != "name":
        return ModelSpec(spec, "open_clip", path=str(ref.path))
    arch, pretrained = spec.split("/", 1)
    if Path(pretrained).expanduser().is_file():
        return ModelSpec(spec, "open_clip", arch=arch, path=str(Path(pretrained).expanduser()))
    return ModelSpec(spec, "open_clip", arch=arch, pretrained=pretrained)


def _weight_files(spec: ModelSpec) -> list[Path]:
    path = Path(spec.path)
    if path.is_file():
        return [path] + ([path.parent / OPEN_CLIP_CONFIG] if (path.parent / OPEN_CLIP_CONFIG).is_file() else [])
    if spec.backend == "open_clip":
        return _open_clip_dir_weights(path) + [path / OPEN_CLIP_CONFIG]
    files = [path / n for n in TRANSFORMERS_WEIGHTS if (path / n).is_file()]
    if spec.backend == "transformers":
        files += [path / "config.json"]
        files += sorted(path.glob("model-*.safetensors"))
    if not any(f.name != "config.json" and f.name != OPEN_CLIP_CONFIG for f in files):
        raise InputError(f"{spec.path}: no model weights found in the folder")
    return files


def hash_files(files: Sequence[Path], memo: Callable[[str], Any] | None = None, remember: Callable[[str, Any], None] | None = None) -> str:
    """sha256 over files, memoised by (path, size, mtime) so a 600 MB checkpoint is hashed once."""
    stat_key = json.dumps([[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files])
    memo_key = "filehash:" + hashlib.sha256(stat_key.encode()).hexdigest()[:24]
    if memo is not None:
        cached = memo(memo_key)
        if cached:
            return str(cached)
    digest = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    value = digest.hexdigest()
    if remember is not None:
        remember(memo_key, value)
    return value


def model_identity(spec: ModelSpec, memo: Callable[[str], Any] | None = None, remember: Callable[[str, Any], None] | None = None) -> str:
    """The cache identity of a model: its public name, or a content hash of local weights."""
    if not spec.path:
        if spec.backend == "transformers":
            return f"hf:{spec.hub_id}"
        return spec.arch if spec.arch.startswith("hf-hub:") else f"{spec.arch}/{spec.pretrained}"
    digest = hash_files(_weight_files(spec), memo, remember)[:16]
    label = spec.arch or spec.backend
    return f"{label}:{Path(spec.path).name}@sha256:{digest}"


def _input_size(model: Any, backend: str) -> int | None:
    """The square side the model sees (224 for ViT-B/32), so decoding can stop at that resolution."""
    try:
        if backend == "transformers":
            size = model.config.vision_config.image_size
        else:
            size = model.visual.image_size
        return int(min(size)) if isinstance(size, (tuple, list)) else int(size)
    except AttributeError:
        return None


class ClipEncoder:
    """A loaded CLIP model: preprocess one image, encode batches of images and texts (L2-normalised)."""

    def __init__(self, model: Any, preprocess: Callable[[Any], Any], tokenize: Callable[[list[str]], Any], *,
                 identity: str, device: str, precision: str, backend: str, describe: dict[str, Any]):
        self.model = model.eval()
        self._preprocess = preprocess
        self._tokenize = tokenize
        self.identity = identity
        self.device = device
        self.precision = precision
        self.backend = backend
        self.describe = describe
        self.dtype = torch_dtype(precision)
        self.model.to(device=device, dtype=self.dtype)
        self.input_size = _input_size(model, backend)

    def tokenize(self, texts: Sequence[str]) -> Any:
        """Token ids for texts, on the model's device (fine-tuning encodes texts with gradients)."""
        tokens = self._tokenize(list(texts))
        if isinstance(tokens, dict):
            return {k: v.to(self.device) for k, v in tokens.items()}
        return tokens.to(self.device)

    def preprocess(self, image: "Image.Image") -> "torch.Tensor":
        """One RGB image to a model-ready tensor; thread-safe, run in the decode workers."""
        return self._preprocess(image)

    def _image_features(self, pixels: "torch.Tensor") -> "torch.Tensor":
        if self.backend == "transformers":
            out = self.model.get_image_features(pixel_values=pixels)
        else:
            out = self.model.encode_image(pixels)
        return out if not hasattr(out, "pooler_output") else out.pooler_output

    def _text_features(self, tokens: Any) -> "torch.Tensor":
        if self.backend == "transformers":
            out = self.model.get_text_features(**tokens)
        else:
            out = self.model.encode_text(tokens)
        return out if not hasattr(out, "pooler_output") else out.pooler_output

    def encode_images(self, pixels: "torch.Tensor") -> np.ndarray:
        import torch

        with torch.inference_mode():
            feats = self._image_features(pixels.to(self.device, dtype=self.dtype, non_blocking=True))
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return self._finite(feats.cpu().numpy().astype(np.float32), "images")

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = self._tokenize(list(texts[start : start + batch_size]))
                if isinstance(tokens, dict):
                    tokens = {k: v.to(self.device) for k, v in tokens.items()}
                else:
                    tokens = tokens.to(self.device)
                feats = self._text_features(tokens)
                out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy())
        return self._finite(np.concatenate(out).astype(np.float32), "texts") if out else np.zeros((0, 0), np.float32)

    def _finite(self, vectors: np.ndarray, what: str) -> np.ndarray:
        """The vectors, or an error: a model that outputs NaN or inf (a diverged fine-tune) is refused before
        anything it computed can be stored or scored."""
        bad = int((~np.isfinite(vectors.reshape(len(vectors), -1))).any(axis=1).sum())
        if bad:
            raise InputError(f"the CLIP model {self.identity} outputs NaN or inf for {bad} of {len(vectors)} {what}: "
                             "its weights are broken (a fine-tuning run that diverged?) or overflow at "
                             f"{self.precision}; nothing it computed was stored")
        return vectors


def _open_clip_dir_weights(folder: Path) -> list[Path]:
    """Weight files open_clip's local-dir loader would pick up (it only warns when there are none)."""
    return sorted(p for ext in ("*.safetensors", "*.bin", "*.pth", "*.pt") for p in folder.glob(ext))


def _load_open_clip(spec: ModelSpec) -> tuple[Any, Any, Any, dict[str, Any]]:
    import open_clip

    path = Path(spec.path) if spec.path else None
    if path is not None and path.is_dir():
        if not _open_clip_dir_weights(path):
            raise InputError(f"{spec.path}: {OPEN_CLIP_CONFIG} found but no weights (.safetensors/.bin/.pth)")
        name = f"local-dir:{path}"
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        return model, preprocess, open_clip.get_tokenizer(name), {"local_dir": str(path)}
    if path is not None and not spec.arch:
        # A checkpoint file beside its open_clip_config.json: register the config under a private name.
        config = json.loads((path.parent / OPEN_CLIP_CONFIG).read_text())
        model_cfg = config.get("model_cfg", config)
        preprocess_cfg = config.get("preprocess_cfg", {})
        name = "clipclust-" + hashlib.sha256(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()[:12]
        if name not in open_clip.list_models():
            import tempfile

            folder = Path(tempfile.mkdtemp(prefix="clipclust-cfg-"))
            (folder / f"{name}.json").write_text(json.dumps(model_cfg))
            open_clip.add_model_config(folder)
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=str(path), image_mean=preprocess_cfg.get("mean"), image_std=preprocess_cfg.get("std")
        )
        return model, preprocess, open_clip.get_tokenizer(name), {"checkpoint": str(path)}
    if not spec.arch.startswith("hf-hub:") and spec.arch.replace("/", "-") not in open_clip.list_models():
        raise InputError(f"unknown open_clip architecture '{spec.arch}' in {opt('model')} {spec.raw}; "
                         "see open_clip.list_models()")
    pretrained = spec.path or spec.pretrained or None
    model, _, preprocess = open_clip.create_model_and_transforms(spec.arch, pretrained=pretrained)
    return model, preprocess, open_clip.get_tokenizer(spec.arch), {"arch": spec.arch, "pretrained": pretrained or ""}


def _load_transformers(spec: ModelSpec) -> tuple[Any, Any, Any, dict[str, Any]]:
    from transformers import AutoProcessor, CLIPModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress goes to stderr; theirs would interleave with it
    source = spec.path or spec.hub_id
    model = CLIPModel.from_pretrained(source)
    processor = AutoProcessor.from_pretrained(source)

    def preprocess(image: Any) -> Any:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    max_len = int(getattr(model.config.text_config, "max_position_embeddings", 77))

    def tokenize(texts: list[str]) -> dict[str, Any]:
        enc = processor(text=texts, return_tensors="pt", padding=True, truncation=True, max_length=max_len)
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    return model, preprocess, tokenize, {"source": source}


def _hub_config(spec: ModelSpec) -> tuple[str, str] | None:
    """(repository, config file) of a model named by its hub repository, to look for in the local cache."""
    if spec.path:
        return None
    if spec.backend == "transformers":
        return spec.hub_id, "config.json"
    if spec.arch.startswith("hf-hub:"):
        return spec.arch[len("hf-hub:"):].strip("/"), OPEN_CLIP_CONFIG
    return None  # ARCH/PRETRAINED: only open_clip's own table knows where the weights live


def _offline_error(spec: ModelSpec, reason: str) -> InputError:
    return InputError(f"could not load model '{spec.raw}': it is not in the local cache and cannot be downloaded "
                      f"({reason}); download it once where there is network (the Hugging Face cache keeps it) or "
                      f"{LOCAL_HINT}")


def load_clip(spec_text: str, *, device: str = "auto", precision: str = "auto", identity: str | None = None) -> ClipEncoder:
    """Load a CLIP model named the way --model names it; failures say which name failed and what to do.

    A model from the hub is taken from the local cache when the hub cannot be used; when it is not
    cached either, the error comes at once rather than after a minute of retries.
    """
    spec = parse_model_spec(spec_text)
    device = resolve_device(device)
    precision = resolve_precision(precision, device, gpu_default="fp16")
    identity = identity or model_identity(spec)
    offline = "" if spec.path else hub_offline_reason()
    hub_config = _hub_config(spec)
    if offline and hub_config is not None and not is_cached(*hub_config):  # known before torch is imported
        raise _offline_error(spec, offline)
    try:
        with hub_offline(bool(offline)):
            model, preprocess, tokenize, info = ENCODERS.open(spec.raw)
    except (InputError, ClipclustError):
        raise
    except Exception as exc:  # network, missing files, bad checkpoints: all end the same way for the user
        if offline:
            raise _offline_error(spec, offline) from None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"could not load model '{spec.raw}' ({reason[:200]}); {LOCAL_HINT}") from None
    return ClipEncoder(
        model, preprocess, tokenize, identity=identity, device=device, precision=precision,
        backend=spec.backend, describe={"spec": spec.raw, **info},
    )


def offline_env() -> None:
    """Stop transformers/huggingface_hub from waiting on a network that is not there (tests, benches)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
