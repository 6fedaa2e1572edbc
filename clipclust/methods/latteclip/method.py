"""LatteCLIP as a fine-tuning method: its options, the descriptions it reads, and its objective.

Each step mixes the class description of each image's two pseudo-labels (zero-shot and current) with the
image's own and its group's descriptions and the class prototype (objective.dual_step), then moves the
prototypes by momentum; the prototypes are the classifier the tuned model leaves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from clipclust.methods.contrastive import pseudo_labels
from clipclust.methods.finetuning import FinetuneMethod, TextEncoder, register_finetune_method
from clipclust.methods.latteclip import objective
from clipclust.methods.registry import Option

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

TEXT_KINDS = ("class", "image", "group")


def parse_texts(texts: Sequence[str] | str) -> tuple[str, ...]:
    """'class,image,group' -> the text kinds LatteCLIP mixes; the class description is always one of them."""
    parts = [t.strip() for t in (texts.split(",") if isinstance(texts, str) else texts) if t.strip()]
    unknown = [t for t in parts if t not in TEXT_KINDS]
    if unknown:
        raise ValueError(f"unknown text kind '{unknown[0]}': expected class, image and/or group")
    if "class" not in parts:
        raise ValueError("the class description is part of every LatteCLIP text mix; include 'class'")
    return tuple(t for t in TEXT_KINDS if t in parts)


def unit_interval(value: Any) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise ValueError(f"{value}: expected a number from 0 to 1")
    return number


class LatteClipObjective:
    """One run's prototype bank: the class texts' features at the start, moved by momentum each step."""

    def __init__(self, options: dict[str, Any]):
        self.alpha, self.momentum = options["alpha"], options["momentum"]
        self.prototypes: "torch.Tensor" = None  # type: ignore[assignment]  # set by start or restore

    def start(self, texts: TextEncoder) -> None:
        self.prototypes = texts.frozen_class_features(texts.class_texts).cpu()

    def loss(self, texts: TextEncoder, images: "torch.Tensor", zs_labels: "torch.Tensor", rows: list[int]
             ) -> tuple["torch.Tensor", "torch.Tensor"]:
        prototypes = self.prototypes.to(images.device)
        ft_labels = pseudo_labels(images, prototypes)
        (class_zs, class_ft), described, present = texts.text_targets([zs_labels, ft_labels], rows)
        loss, bank = objective.dual_step(images, class_zs, class_ft, described, present, prototypes, zs_labels,
                                         ft_labels, texts.logit_scale, alpha=self.alpha, momentum=self.momentum)
        self.prototypes = bank.detach().cpu()  # a constant of the step: no gradient flows through the bank
        return loss, ft_labels

    def state(self) -> dict[str, Any]:
        return {"prototypes": self.prototypes}

    def restore(self, state: dict[str, Any]) -> None:
        self.prototypes = state["prototypes"]

    def classifier(self, texts: TextEncoder) -> tuple["np.ndarray", str]:
        import numpy as np

        return self.prototypes.numpy().astype(np.float32), "prototypes"


def _descriptions(options: dict[str, Any]) -> dict[str, str | None]:
    return {kind: options[f"{kind}_descriptions"] for kind in options["texts"] if kind != "class"}


def _params(options: dict[str, Any], sources: dict[str, str]) -> dict[str, Any]:
    return {"texts": list(options["texts"]), "alpha": options["alpha"], "momentum": options["momentum"],
            "image_descriptions": sources.get("image", ""), "group_descriptions": sources.get("group", "")}


LATTECLIP = register_finetune_method(FinetuneMethod(
    name="latteclip",
    title="LatteCLIP",
    summary="class, image and group descriptions mixed into class prototypes, dual pseudo-labels",
    objective=LatteClipObjective,
    options=(
        Option("texts", default=TEXT_KINDS, check=parse_texts,
               help="Texts to mix: class, image and/or group (class always)."),
        Option("image_descriptions", help="Image-description set (name or id; default: the only one)."),
        Option("group_descriptions", help="Group-description set (name or id; default: the only one)."),
        Option("alpha", default=objective.ALPHA, type=float, check=unit_interval,
               help="Prototype weight in the mixed text."),
        Option("momentum", default=objective.MOMENTUM, type=float, check=unit_interval, help="Prototype momentum."),
    ),
    descriptions=_descriptions,
    params=_params,
))
