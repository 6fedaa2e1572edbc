"""The describer interface: images and one prompt in, one text per image out; the description's cache key,
the chat message that carries an image, and :class:`CachedDescriber`, which answers from the call store.

A describer takes a list of images and describes each on its own; whoever wants several images seen
together (LatteCLIP's collages) makes them one image first.
"""

from __future__ import annotations

import base64
import io
from abc import ABC
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from PIL import Image

from clipclust.errors import InputError
from clipclust.models.llm import KEY_VERSION, CacheStats, CallStore, DecodeParams, Message, ProgressFn, canonical_key, run_cached

DESCRIBE_PARAMS = DecodeParams(max_tokens=100)
"""Default decoding for descriptions: greedy, 100 new tokens (the IC|TC paper's LLaVA budget)."""


def image_data_url(image: Image.Image, fmt: str = "PNG") -> str:
    """A PIL image as a ``data:`` URL (how images travel to llama.cpp handlers and servers)."""
    buf = io.BytesIO()
    img = image if image.mode in ("RGB", "L") else image.convert("RGB")
    img.save(buf, format=fmt)
    mime = "image/png" if fmt.upper() == "PNG" else f"image/{fmt.lower()}"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def vision_messages(prompt: str, image: Image.Image) -> list[Message]:
    """One user turn holding the image (as a data URL) and the prompt: what llama.cpp and servers take."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_data_url(image)}},
                {"type": "text", "text": prompt},
            ],
        }
    ]


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


def open_image(src: ImageSource) -> Image.Image:
    """The image itself: loaded now if ``src`` is a loader."""
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
                imgs = [open_image(images[p]) for p in chunk]
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
