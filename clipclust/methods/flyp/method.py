"""FLYP + pseudo-labels as a fine-tuning method: the CLIP contrastive loss between each image and the class
description of its pseudo-label, labelled every step by the model being tuned (no prototypes, no
descriptions); the tuned model's class-text features are the classifier it leaves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clipclust.methods.contrastive import contrastive_loss, pseudo_labels
from clipclust.methods.finetuning import FinetuneMethod, TextEncoder, register_finetune_method

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch


class FlypObjective:
    """Stateless between steps: the pseudo-labels come from the current text encoder."""

    def __init__(self, options: dict[str, Any]):
        pass

    def start(self, texts: TextEncoder) -> None:
        pass

    def loss(self, texts: TextEncoder, images: "torch.Tensor", zs_labels: "torch.Tensor", rows: list[int]
             ) -> tuple["torch.Tensor", "torch.Tensor"]:
        import torch

        with torch.no_grad():
            labels = pseudo_labels(images, texts.encode_texts(texts.class_texts))
        (class_texts,), _, _ = texts.text_targets([labels], [])
        return contrastive_loss(images, class_texts, texts.logit_scale), labels

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        pass

    def classifier(self, texts: TextEncoder) -> tuple["np.ndarray", str]:
        return texts.frozen_class_features(texts.class_texts).cpu().numpy(), "class-texts"


FLYP = register_finetune_method(FinetuneMethod(
    name="flyp",
    title="FLYP + pseudo-labels",
    summary='contrastive on "a photo of a {c}."',
    objective=FlypObjective,
))
