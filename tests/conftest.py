"""Shared fixtures: tiny CLIP models built here and saved to disk, image folders, and a CLI runner.

Nothing is downloaded: the models have random weights (they prove plumbing and arithmetic, not quality)
and are loaded back through the same --model PATH code users hit.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def build_tiny_open_clip(folder: Path, seed: int = 0) -> Path:
    """An open_clip model folder (open_clip_config.json + weights) as open_clip's hf-hub format lays it out."""
    import open_clip
    import torch

    cfg = {
        "model_cfg": {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
        },
        "preprocess_cfg": {"mean": OPENAI_MEAN, "std": OPENAI_STD},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**cfg["model_cfg"])
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map (the base alphabet of a byte-level BPE)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return dict(zip(range(256), chars))


def build_tiny_hf_clip(folder: Path, seed: int = 0) -> Path:
    """A transformers CLIPModel folder with a byte-level vocabulary written here (no merges needed)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = {tok: i for i, tok in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=OPENAI_MEAN, image_std=OPENAI_STD
    )
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 77,
                     "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
                     "pad_token_id": vocab["<|endoftext|>"]},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture()
def single_thread():
    """One BLAS/OpenMP and torch thread for small sklearn/torch fits (see tests/workspaces.one_thread)."""
    from .workspaces import one_thread

    with one_thread():
        yield


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_open_clip(tmp_path_factory.mktemp("models") / "tiny-open-clip")


@pytest.fixture(scope="session")
def tiny_hf_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_hf_clip(tmp_path_factory.mktemp("models") / "tiny-hf-clip")


@pytest.fixture(scope="session")
def open_clip_encoder(tiny_open_clip: Path):
    """The tiny open_clip model loaded once, for library tests that pass encoder= to skip reloading."""
    from clipclust.models.clip import load_clip

    return load_clip(str(tiny_open_clip), device="cpu")


def write_digits(folder: Path, n: int = 40, offset: int = 0) -> Path:
    """sklearn's 8x8 digits as PNG files in class folders folder/<digit>/<i>.png."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(offset, offset + n):
        sub = folder / str(digits.target[i])
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 15).astype(np.uint8), "L").resize((24, 24)).save(sub / f"{i:04d}.png")
    return folder


@pytest.fixture()
def digits_dir(tmp_path: Path) -> Path:
    return write_digits(tmp_path / "digits", 40)


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (20, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def json(self):
        return json.loads(self.out)


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    """Run `clipclust ARGS` in-process against a workspace in tmp_path; returns code, stdout, stderr."""
    from clipclust.cli.app import main

    def run(*args: str, cache: Path | None = None) -> CliResult:
        capsys.readouterr()
        code = main(["--cache", str(cache or tmp_path / "ws.h5"), *args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def digits_clip(tmp_path_factory: pytest.TempPathFactory):
    """A tiny CLIP pretrained in this session on half of sklearn's digits (tests/digits_clip.py), shared by the
    fine-tuning tests; nothing is kept on disk between sessions."""
    from .digits_clip import build_digits_clip
    from .workspaces import one_thread

    with one_thread():
        return build_digits_clip(tmp_path_factory.mktemp("digits-clip"))


def unit_rows(X: np.ndarray) -> np.ndarray:
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """240 points in 16 dimensions around 4 well-separated centres (ids 0-3)."""
    X, y = make_blobs(n_samples=240, n_features=16, centers=4, cluster_std=1.0, random_state=7)
    return X, y


@pytest.fixture(scope="session")
def clip_like_blobs() -> tuple[np.ndarray, np.ndarray]:
    """600 unit vectors in 64 dimensions, 5 groups: the geometry of CLIP image embeddings."""
    X, y = make_blobs(n_samples=600, n_features=64, centers=5, cluster_std=3.0, center_box=(-10, 10), random_state=3)
    return unit_rows(X), y
