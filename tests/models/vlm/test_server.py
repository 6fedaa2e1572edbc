"""Describers behind an OpenAI-compatible server: the payload (checked on a fake server) and its errors."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from PIL import Image

from clipclust.errors import ClipclustError
from clipclust.models.vlm import OpenAIDescriber, load_describer

from ..conftest import chat_reply
from .conftest import MODELS_REPLY, solid


def test_openai_describer_sends_images_as_data_url_parts(fake_server: Any) -> None:
    def handler(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if path.endswith("/models"):
            return 200, MODELS_REPLY
        return 200, chat_reply(f"seen {len(json.dumps(body))}")

    srv = fake_server(handler)
    d = load_describer(srv.url, concurrency=2)
    assert isinstance(d, OpenAIDescriber) and d.identity == f"openai-vlm:{srv.url}#vlm"
    images = [solid((255, 0, 0), (50, 20)), solid((0, 255, 0), (10, 10)), solid((0, 0, 255))]
    out = d.describe(images, "Describe the flower.")
    assert len(out) == 3 and all(o.startswith("seen ") for o in out)
    bodies = [b for m, p, b in srv.requests if p.endswith("/chat/completions")]
    sizes = set()
    for b in bodies:
        parts = b["messages"][0]["content"]
        assert {p["type"] for p in parts} == {"image_url", "text"}
        assert next(p["text"] for p in parts if p["type"] == "text") == "Describe the flower."
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        assert url.startswith("data:image/png;base64,")
        sizes.add(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size)
        assert b["max_tokens"] == 100 and b["temperature"] == 0
    assert sizes == {(50, 20), (10, 10), (40, 30)}


def test_a_server_without_vision_says_so_in_one_line(fake_server: Any) -> None:
    def handler(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if path.endswith("/models"):
            return 200, MODELS_REPLY
        return 400, {"error": {"message": "image input is not supported"}}

    d = load_describer(fake_server(handler).url, retries=0)
    with pytest.raises(ClipclustError, match="failed on an image \\(HTTP 400: image input is not supported\\); "
                                             "does the server load a vision model") as caught:
        d.describe([solid((1, 2, 3))], "Describe it.")
    assert "\n" not in str(caught.value) and "--" not in str(caught.value)
    d.close()
