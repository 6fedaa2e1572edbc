"""A tiny CLIP with some real skill, built in the test session: trained contrastively on one half of sklearn's
digits against "a photo of the digit {d}.", it classifies the other half zero-shot well above chance but far
from perfectly, so an unsupervised fine-tuning method has something to learn and something to lose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .conftest import build_tiny_open_clip, write_digits

TEMPLATE = "a photo of the digit <>."
CLASSES = [str(d) for d in range(10)]


@dataclass
class DigitsClip:
    model_dir: Path  # open_clip folder (config + safetensors) of the pretrained tiny CLIP
    train_dir: Path  # the half it was trained on (class folders)
    test_dir: Path  # the other half: fine-tuned on without labels, and evaluated on


def _pixels(folder: Path, preprocess) -> tuple["object", np.ndarray]:
    import torch
    from PIL import Image

    files = sorted(folder.glob("*/*.png"))
    x = torch.stack([preprocess(Image.open(f).convert("RGB")) for f in files])
    return x, np.array([int(f.parent.name) for f in files])


def build_digits_clip(root: Path, steps: int = 200, seed: int = 0) -> DigitsClip:
    """Pretrain a tiny open_clip model on the first half of the digits (about 10-20 s on 2 cores)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from sklearn.datasets import load_digits

    n = len(load_digits().target)
    train_dir = write_digits(root / "train", n // 2, 0)
    test_dir = write_digits(root / "test", n - n // 2, n // 2)
    model_dir = build_tiny_open_clip(root / "model", seed=seed)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    x, y = _pixels(train_dir, preprocess)
    tokens = tokenizer([TEMPLATE.replace("<>", c) for c in CLASSES])
    torch.manual_seed(seed)
    # the 49408-row token table stays as initialised: updating it would cost more than the rest of the model
    trained = [p for name, p in model.named_parameters() if name != "token_embedding.weight"]
    optimizer = torch.optim.AdamW(trained, lr=1e-3, weight_decay=0.0)
    target = torch.as_tensor(y)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(x), (64,))
        img = torch.nn.functional.normalize(model.encode_image(x[batch]), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
        loss = torch.nn.functional.cross_entropy(model.logit_scale.exp() * img @ txt.T, target[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    (model_dir / "open_clip_pytorch_model.bin").unlink()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(model_dir / "open_clip_model.safetensors"))
    return DigitsClip(model_dir, train_dir, test_dir)


def zero_shot_accuracy(model_dir: Path, folder: Path, template: str = TEMPLATE, classifier: np.ndarray | None = None) -> float:
    """Top-1 accuracy on ``folder`` of the model in ``model_dir``, against its class texts or ``classifier``."""
    import open_clip
    import torch

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    model.eval()
    x, y = _pixels(folder, preprocess)
    with torch.no_grad():
        img = torch.nn.functional.normalize(model.encode_image(x), dim=-1)
        if classifier is None:
            cls = model.encode_text(tokenizer([template.replace("<>", c) for c in CLASSES]))
        else:
            cls = torch.as_tensor(classifier)
        cls = torch.nn.functional.normalize(cls.float(), dim=-1)
    return float((np.argmax((img @ cls.T).numpy(), axis=1) == y).mean())


def read_prototypes(model_dir: Path) -> np.ndarray:
    meta = json.loads((model_dir / "prototypes.json").read_text())
    assert meta["classes"] == CLASSES
    return np.load(model_dir / "prototypes.npy")


def vlm_like_descriptions(folder: Path, seed: int) -> dict[str, dict[str, str]]:
    """Stand-ins for LMM output, by description kind and item key: an image description naming the right
    digit 70% of the time (a random one otherwise), a group description naming it half the time.  Made from
    the file's folder as a VLM would read the image; the training code itself never sees a label."""
    import hashlib

    rng = np.random.default_rng(seed)
    image, group = {}, {}
    for f in sorted(folder.glob("*/*.png")):
        key = hashlib.sha256(f.read_bytes()).hexdigest()
        digit = int(f.parent.name)
        seen = digit if rng.random() < 0.7 else int(rng.integers(10))
        image[key] = f"a photo of the digit {seen}, handwritten in thick grey strokes."
        shared = digit if rng.random() < 0.5 else int(rng.integers(10))
        group[key] = f"several handwritten digits, mostly the digit {shared}."
    return {"description": image, "group-description": group}
