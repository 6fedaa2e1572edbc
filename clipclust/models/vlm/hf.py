"""transformers image-text-to-text models (LLaVA and the like), prompted through the processor's chat
template with one image and the prompt, in batches."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from PIL import Image

from clipclust.errors import InputError
from clipclust.models.llm.generator import serial_batches
from clipclust.models.llm.hf import loaded_identity, open_pretrained, pad_left, sampling
from clipclust.models.llm.requests import DecodeParams
from clipclust.models.vlm.describer import DESCRIBE_PARAMS, Describer


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
        torch, transformers, source, identity, self.device, dtype_kw = open_pretrained(spec, device, dtype)
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
                source, trust_remote_code=trust_remote_code, **dtype_kw,
            ).to(self.device)
        except (OSError, ValueError) as e:
            raise InputError(
                f"could not load {spec} as an image-text-to-text model ({e}); pass a VLM such as "
                "hf:llava-hf/llava-1.5-7b-hf or a directory saved with save_pretrained"
            ) from e
        self.model.eval()
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            pad_left(tok)
        self.has_template = bool(getattr(self.processor, "chat_template", None))
        self.identity = loaded_identity("transformers-vlm", source, identity, self.model)
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
        gen_kwargs.update(sampling(params, torch))
        with torch.no_grad():
            out = self.model.generate(**inputs, **gen_kwargs)
        start = inputs["input_ids"].shape[1]
        return [tok.decode(row[start:], skip_special_tokens=True).strip() for row in out]

    def describe_iter(
        self, images: Sequence[Image.Image], prompt: str, params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        params = params or self.default_params
        return serial_batches(images, self.batch_size, self._lock, lambda batch: self._batch(batch, prompt, params))

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
