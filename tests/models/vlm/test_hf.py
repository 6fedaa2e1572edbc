"""transformers image-text-to-text describers, on a tiny LLaVA built in the test."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from clipclust.models.llm import DecodeParams
from clipclust.models.vlm import TransformersDescriber

from .conftest import solid


def test_transformers_describer_loads_from_a_directory(tiny_vlm: TransformersDescriber) -> None:
    assert tiny_vlm.identity.startswith("transformers-vlm:dir:sha256:")
    images = [solid((255, 0, 0)), solid((0, 0, 255), (20, 60)), Image.new("L", (16, 16), 128)]
    params = DecodeParams(max_tokens=5)
    a = tiny_vlm.describe(images, "describe the image", params)
    assert len(a) == 3 and all(isinstance(t, str) for t in a)
    assert a == tiny_vlm.describe(images, "describe the image", params)  # greedy: deterministic
    assert [t for _, t in sorted(tiny_vlm.describe_iter(images, "describe the image", params))] == a


def test_batched_transformers_descriptions_match_single(tiny_vlm_dir: Path, tiny_vlm: TransformersDescriber) -> None:
    batched = TransformersDescriber(tiny_vlm_dir, device="cpu", batch_size=2)
    images = [solid((255, 0, 0)), solid((0, 255, 0)), solid((0, 0, 255))]
    params = DecodeParams(max_tokens=4)
    assert batched.describe(images, "describe the image", params) == tiny_vlm.describe(images, "describe the image", params)
