"""What CLIP fine-tuning methods share: OpenCLIP's symmetric contrastive loss against a direct computation,
cosine pseudo-labels and the class prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipclust.methods import contrastive


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_contrastive_loss_is_symmetric_infonce():
    rng = np.random.default_rng(0)
    img, txt = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
    scale = np.log(20.0)
    got = float(contrastive.contrastive_loss(torch.tensor(img), torch.tensor(txt), torch.tensor(scale)))
    logits = 20.0 * _unit(img) @ _unit(txt).T
    i2t = -np.mean([logits[i, i] - np.log(np.exp(logits[i]).sum()) for i in range(6)])
    t2i = -np.mean([logits[i, i] - np.log(np.exp(logits[:, i]).sum()) for i in range(6)])
    assert got == pytest.approx((i2t + t2i) / 2, rel=1e-5)


def test_pseudo_labels_are_the_most_similar_class_by_cosine_not_by_dot_product():
    images = torch.tensor([[0.5, 1.0], [1.0, 0.1]])
    classes = torch.tensor([[10.0, 0.0], [0.0, 1.0]])  # by dot product the first image would be class 0
    assert contrastive.pseudo_labels(images, classes).tolist() == [1, 0]


def test_domain_prompts():
    assert contrastive.with_domain("a photo of a <>.", "flower") == "a photo of a <>, a type of flower."
    assert contrastive.with_domain("a photo of a <>.", None) == "a photo of a <>."
    assert contrastive.class_prompts(contrastive.CLASS_TEMPLATE, ["cat", "dog"]) == ["a photo of a cat.", "a photo of a dog."]
