"""The describer interface's pieces: the image message, the description cache and its key."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

from clipclust.errors import InputError
from clipclust.models.llm import DecodeParams, MemoryCallStore
from clipclust.models.vlm import CachedDescriber, TransformersDescriber, describe_key

from .conftest import CountingDescriber, solid


def test_cached_describer_never_loads_cached_images() -> None:
    store = MemoryCallStore()
    inner = CountingDescriber()
    cached = CachedDescriber(inner, store)
    loads: list[int] = []

    def loader(i: int) -> Any:
        def load() -> Image.Image:
            loads.append(i)
            return solid((i, 0, 0))
        return load

    ids = [f"sha-{i}" for i in range(4)]
    first = cached.describe([loader(i) for i in range(4)], "p", input_ids=ids)
    assert loads == [0, 1, 2, 3] and cached.last_stats.misses == 4
    second = cached.describe([loader(i) for i in range(4)], "p", input_ids=ids)
    assert second == first and loads == [0, 1, 2, 3] and cached.last_stats.hits == 4
    # A new prompt is a new call; the key is (model, params, prompt, item hash).
    cached.describe([loader(0)], "q", input_ids=ids[:1])
    assert loads[-1] == 0 and len(store) == 5
    assert describe_key("counting-vlm", DecodeParams(max_tokens=100), "p", "sha-0") in store.entries
    with pytest.raises(InputError):
        cached.describe([loader(0)], "p", input_ids=[])


def test_cached_tiny_vlm_rerun_costs_nothing(tiny_vlm: TransformersDescriber) -> None:
    cached = CachedDescriber(tiny_vlm, MemoryCallStore())
    imgs = [solid((255, 0, 0)), solid((0, 255, 0))]
    a = cached.describe(imgs, "describe the image", DecodeParams(max_tokens=4), input_ids=["a", "b"])
    b = cached.describe(imgs, "describe the image", DecodeParams(max_tokens=4), input_ids=["a", "b"])
    assert a == b and cached.last_stats.misses == 0


def test_the_description_key_is_pinned() -> None:
    """Stored descriptions are found by this key: it must not move (computed before vlm/ was a package)."""
    from clipclust.models.vlm import DESCRIBE_PARAMS

    assert describe_key("openai-vlm:http://h/v1#m", DESCRIBE_PARAMS, "Describe the flower.", "ab" * 32) == (
        "32c35dde8b14ebccecd99582fda23aa01e5c124684e9bb8156dc85ef4b6d3611")


def test_an_image_travels_as_a_png_data_url_beside_the_prompt() -> None:
    import base64
    import io

    from clipclust.models.vlm.describer import image_data_url, vision_messages

    rgba = Image.new("RGBA", (3, 2), (255, 0, 0, 128))
    [message] = vision_messages("What is it?", rgba)
    image, text = message["content"]
    assert message["role"] == "user" and text == {"type": "text", "text": "What is it?"}
    url = image["image_url"]["url"]
    assert url == image_data_url(rgba) and url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (3, 2) and decoded.mode == "RGB"
