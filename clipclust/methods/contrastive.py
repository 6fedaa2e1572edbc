"""What every CLIP fine-tuning method shares: the class prompts, cosine pseudo-labels and OpenCLIP's
symmetric contrastive loss.

The training loop (clipclust.commands.finetune) labels the items zero-shot with these prompts before any
method runs, and LatteCLIP and FLYP both train with this loss, so they live beside the methods rather
than inside one of them.  Pure tensor functions; torch is imported where it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch

CLASS_TEMPLATE = "a photo of a <>."
# Zero-shot pseudo-labels average these templates' text embeddings (open_clip's short ImageNet ensemble).
ENSEMBLE_TEMPLATES = (
    "a photo of a <>.", "itap of a <>.", "a bad photo of the <>.", "a origami <>.", "a photo of the large <>.",
    "a <> in a video game.", "art of the <>.", "a photo of the small <>.",
)


def with_domain(template: str, domain: str | None) -> str:
    """'a photo of a <>.' -> 'a photo of a <>, a type of flower.' (LatteCLIP's released dataset prompts)."""
    if not domain:
        return template
    return template.rstrip(". ") + f", a type of {domain}."


def class_prompts(template: str, classes: Sequence[str]) -> list[str]:
    return [template.replace("<>", c) for c in classes]


def contrastive_loss(images: "torch.Tensor", texts: "torch.Tensor", logit_scale: "torch.Tensor") -> "torch.Tensor":
    """Eq. 3 of LatteCLIP as OpenCLIP computes it: mean of image->text and text->image cross-entropy over the
    batch, on L2-normalised features, scaled by exp(logit_scale) (clamped by the caller at ln 100)."""
    import torch

    img = torch.nn.functional.normalize(images.float(), dim=-1)
    txt = torch.nn.functional.normalize(texts.float(), dim=-1)
    logits = logit_scale.float().exp() * img @ txt.T
    target = torch.arange(len(img), device=img.device)
    ce = torch.nn.functional.cross_entropy
    return (ce(logits, target) + ce(logits.T, target)) / 2


def pseudo_labels(images: "torch.Tensor", classifier: "torch.Tensor") -> "torch.Tensor":
    """argmax of cosine similarity to the class vectors (prototypes or class text embeddings)."""
    import torch

    with torch.no_grad():
        img = torch.nn.functional.normalize(images.detach().float(), dim=-1)
        cls = torch.nn.functional.normalize(classifier.detach().float(), dim=-1)
        return (img @ cls.T).argmax(-1)
