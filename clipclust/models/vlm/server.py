"""Vision-language models behind an OpenAI-compatible server: each image travels as a base64 data-URL
content part, ``concurrency`` descriptions in flight."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from PIL import Image

from clipclust.errors import ClipclustError
from clipclust.models.llm.client import DEFAULT_TIMEOUT, HTTPStatusError, ServedModel, pool_iter
from clipclust.models.llm.requests import DecodeParams
from clipclust.models.vlm.describer import DESCRIBE_PARAMS, Describer, vision_messages


class OpenAIDescriber(ServedModel, Describer):
    """A VLM behind an OpenAI-compatible server; the identity is ``openai-vlm:<base url>#<model>``."""

    prefix = "openai-vlm"

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 3,
        notice: Callable[[str], None] | None = None,
        default_params: DecodeParams | None = None,
    ) -> None:
        super().__init__(base_url, model, api_key=api_key, concurrency=concurrency, timeout=timeout,
                         retries=retries, notice=notice)
        self.default_params = default_params or DESCRIBE_PARAMS

    def _one(self, image: Image.Image, prompt: str, params: DecodeParams) -> str:
        try:
            return self.client.chat(self.payload(vision_messages(prompt, image), params)).strip()
        except HTTPStatusError as e:
            raise ClipclustError(
                f"{self.client.base_url}/chat/completions failed on an image ({e}); does the server load "
                "a vision model (a llama.cpp server needs the model's mmproj file)?"
            ) from e

    def describe_iter(
        self, images: Sequence[Image.Image], prompt: str, params: DecodeParams | None = None
    ) -> Iterator[tuple[int, str]]:
        params = params or self.default_params
        return pool_iter([lambda im=im: self._one(im, prompt, params) for im in images], self.max_concurrency)
