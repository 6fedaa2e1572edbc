"""GGUF describers: chat-handler selection from the metadata, and the errors a user meets first (a real VLM
GGUF cannot be installed here; set CLIPCLUST_TEST_VLM_GGUF and CLIPCLUST_TEST_VLM_MMPROJ to describe with one)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clipclust.cli.common import describe_error
from clipclust.errors import InputError
from clipclust.models.llm import DecodeParams
from clipclust.models.vlm import CHAT_HANDLERS, LlamaCppDescriber, load_describer, select_chat_format

from .conftest import solid


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


def test_gguf_vlm_without_mmproj_says_what_to_pass(gguf_path: Path) -> None:
    with pytest.raises(InputError, match="needs its vision projector: pass mmproj FILE.gguf") as caught:
        load_describer(gguf_path)
    assert "needs its vision projector: pass --mmproj FILE.gguf (the mmproj-" in describe_error(caught.value)


def test_gguf_vlm_missing_or_wrong_mmproj(gguf_path: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="mmproj file not found: .*mmproj-x.gguf"):
        load_describer(gguf_path, mmproj=tmp_path / "mmproj-x.gguf")
    # A GGUF that is not a vision projector fails at load time, naming both files.
    with pytest.raises(InputError, match=r"could not load mmproj .*SmolLM2.*for SmolLM2"):
        LlamaCppDescriber(gguf_path, gguf_path, n_ctx=512, n_threads=1)
    with pytest.raises(InputError, match="only applies to GGUF") as caught:
        load_describer("http://127.0.0.1:9/v1", mmproj=gguf_path)
    assert describe_error(caught.value).startswith("--mmproj: only applies to GGUF models; http://127.0.0.1:9/v1 is a server")


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
