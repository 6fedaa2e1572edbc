"""What the describer tests share: solid-colour images, a describer that counts what it sees, the tiny LLaVA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from clipclust.models.llm import DecodeParams
from clipclust.models.vlm import Describer, TransformersDescriber, load_describer

MODELS_REPLY = {"object": "list", "data": [{"id": "vlm", "object": "model"}]}


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


class CountingDescriber(Describer):
    identity = "counting-vlm"

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def describe(self, images: Any, prompt: str, params: DecodeParams | None = None) -> list[str]:
        self.seen.extend(im.size for im in images)
        return [f"{prompt}:{im.size[0]}x{im.size[1]}:{im.getpixel((0, 0))}" for im in images]


@pytest.fixture(scope="package")
def tiny_vlm(tiny_vlm_dir: Path) -> TransformersDescriber:
    d = load_describer(tiny_vlm_dir, device="cpu")
    assert isinstance(d, TransformersDescriber)
    return d
