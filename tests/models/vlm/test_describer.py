"""Vision-language describers: chat-handler selection, GGUF errors, a tiny self-built LLaVA through
transformers, the OpenAI-compatible payload, the description cache and group (collage) descriptions."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from clipclust.methods.latteclip.collage import collage_id
from clipclust.errors import InputError
from clipclust.models.llm import DecodeParams, MemoryCallStore
from clipclust.models.vlm import (
    CHAT_HANDLERS,
    CachedDescriber,
    Describer,
    LlamaCppDescriber,
    OpenAIDescriber,
    TransformersDescriber,
    describe_groups,
    describe_key,
    group_indices,
    latteclip_prompt,
    load_describer,
    select_chat_format,
)

from ..conftest import chat_reply

MODELS_REPLY = {"object": "list", "data": [{"id": "vlm", "object": "model"}]}



def solid(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


# ------------------------------------------------------------------------------------------------
# Chat handler selection
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "filename", "expected"),
    [
        ({"general.architecture": "llama", "general.name": "LLaMA v2"}, "ggml-model-q4_k.gguf", "llava-1-5"),
        ({"general.architecture": "llama"}, "llava-v1.6-mistral-7b.Q4_K_M.gguf", "llava-1-6"),
        ({"general.architecture": "llama", "general.name": "llava-v1.5-7b"}, "model.gguf", "llava-1-5"),
        ({"general.architecture": "qwen2vl", "general.name": "Qwen2.5 VL 7B Instruct", "tokenizer.chat_template": "x"}, "m.gguf", "qwen2.5-vl"),
        ({"general.architecture": "qwen2", "general.name": "MiniCPM-V-2_6"}, "m.gguf", "minicpm-v-2.6"),
        ({"general.name": "moondream2"}, "m.gguf", "moondream"),
        ({"general.name": "nanoLLaVA"}, "m.gguf", "nanollava"),
        ({"general.architecture": "gemma3", "tokenizer.chat_template": "{{ bos_token }}..."}, "gemma-3-4b-it-Q4_K_M.gguf", "mtmd"),
        ({"general.architecture": "llama", "general.name": "SmolVLM 256M", "tokenizer.chat_template": "..."}, "m.gguf", "mtmd"),
        ({"general.architecture": "llama"}, "mystery.gguf", "llava-1-5"),
    ],
)
def test_chat_format_from_metadata(metadata: dict[str, str], filename: str, expected: str) -> None:
    assert select_chat_format(metadata, Path(filename)) == expected


def test_explicit_chat_format_wins_and_is_validated() -> None:
    assert select_chat_format({"general.name": "moondream2"}, None, "llava-1-6") == "llava-1-6"
    with pytest.raises(InputError, match="unknown VLM chat format"):
        select_chat_format({}, None, "llava-9")
    assert set(CHAT_HANDLERS) >= {"llava-1-5", "llava-1-6", "moondream", "minicpm-v-2.6", "qwen2.5-vl", "mtmd"}


def test_every_named_handler_exists_in_the_installed_llama_cpp() -> None:
    import llama_cpp.llama_chat_format as fmt

    assert all(hasattr(fmt, cls) for cls in CHAT_HANDLERS.values())


# ------------------------------------------------------------------------------------------------
# GGUF describer: the errors a user meets first (a real VLM GGUF cannot be installed here)
# ------------------------------------------------------------------------------------------------


def test_gguf_vlm_without_mmproj_says_what_to_pass(gguf_path: Path) -> None:
    with pytest.raises(InputError, match="needs its vision projector: pass --mmproj"):
        load_describer(gguf_path)


def test_gguf_vlm_missing_or_wrong_mmproj(gguf_path: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="mmproj file not found: .*mmproj-x.gguf"):
        load_describer(gguf_path, mmproj=tmp_path / "mmproj-x.gguf")
    # A GGUF that is not a vision projector fails at load time, naming both files.
    with pytest.raises(InputError, match=r"could not load mmproj .*SmolLM2.*for SmolLM2"):
        LlamaCppDescriber(gguf_path, gguf_path, n_ctx=512, n_threads=1)
    with pytest.raises(InputError, match="only applies to GGUF"):
        load_describer("http://127.0.0.1:9/v1", mmproj=gguf_path)


@pytest.mark.skipif(
    not (os.environ.get("CLIPCLUST_TEST_VLM_GGUF") and os.environ.get("CLIPCLUST_TEST_VLM_MMPROJ")),
    reason="needs a real VLM GGUF + mmproj (none installs here); set CLIPCLUST_TEST_VLM_GGUF and "
    "CLIPCLUST_TEST_VLM_MMPROJ to run it",
)
def test_gguf_vlm_describes_images() -> None:
    d = load_describer(os.environ["CLIPCLUST_TEST_VLM_GGUF"], mmproj=os.environ["CLIPCLUST_TEST_VLM_MMPROJ"], n_ctx=4096)
    assert isinstance(d, LlamaCppDescriber) and d.chat_format in CHAT_HANDLERS
    images = [solid((255, 0, 0), (64, 64)), solid((0, 0, 255), (64, 64))]
    params = DecodeParams(max_tokens=16)
    out = d.describe(images, "What colour is this image? Answer in one word.", params)
    assert len(out) == 2 and all(out)
    assert out == d.describe(images, "What colour is this image? Answer in one word.", params)


# ------------------------------------------------------------------------------------------------
# transformers (tiny LLaVA built in the test)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_vlm(tiny_vlm_dir: Path) -> TransformersDescriber:
    d = load_describer(tiny_vlm_dir, device="cpu")
    assert isinstance(d, TransformersDescriber)
    return d


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


# ------------------------------------------------------------------------------------------------
# The description cache
# ------------------------------------------------------------------------------------------------


class CountingDescriber(Describer):
    identity = "counting-vlm"

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def describe(self, images: Any, prompt: str, params: DecodeParams | None = None) -> list[str]:
        self.seen.extend(im.size for im in images)
        return [f"{prompt}:{im.size[0]}x{im.size[1]}:{im.getpixel((0, 0))}" for im in images]


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


# ------------------------------------------------------------------------------------------------
# Group descriptions
# ------------------------------------------------------------------------------------------------


def test_group_indices_partition_each_label_deterministically() -> None:
    labels = ["cat"] * 10 + ["dog"] * 3 + [None] * 2
    groups = group_indices(labels, 4, seed=0)
    assert groups == group_indices(labels, 4, seed=0)
    assert sorted(i for g in groups for i in g) == list(range(13))  # unlabeled items left out
    assert [len(g) for g in groups] == [4, 4, 2, 3]
    assert all(len({labels[i] for i in g}) == 1 for g in groups)
    assert group_indices(labels, 4, seed=1) != groups
    # Ordering by content hash makes the groups independent of input order.
    ids = [f"h{i:02d}" for i in range(15)]
    perm = list(reversed(range(15)))
    g1 = {frozenset(ids[i] for i in g) for g in group_indices(labels, 4, ids=ids)}
    g2 = {frozenset([ids[p] for p in perm][i] for i in g) for g in group_indices([labels[p] for p in perm], 4, ids=[ids[p] for p in perm])}
    assert g1 == g2


def test_describe_groups_builds_collages_only_on_a_miss() -> None:
    inner = CountingDescriber()
    cached = CachedDescriber(inner, MemoryCallStore())
    images = [solid((i * 20, 0, 0)) for i in range(6)]
    ids = [f"h{i}" for i in range(6)]
    labels = ["a", "a", "a", "a", "b", "b"]
    prompt = latteclip_prompt("flower", group=True)
    assert prompt == "Describe the common visual attributes of the flower in all the photos concisely, less than 20 words."
    out = describe_groups(cached, images, ids, labels, prompt)
    assert [g.label for g in out] == ["a", "b"] and [len(g.members) for g in out] == [4, 2]
    assert inner.seen == [(672, 672), (672, 672)]  # one collage per group
    assert out[0].input_id == collage_id([ids[i] for i in out[0].members])
    again = describe_groups(cached, images, ids, labels, prompt)
    assert again == out and len(inner.seen) == 2


# ------------------------------------------------------------------------------------------------
# OpenAI-compatible describer (payload checked on a fake server)
# ------------------------------------------------------------------------------------------------


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
