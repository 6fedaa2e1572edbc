"""LatteCLIP's arithmetic (LatteCLIP, docs/methods.md section 5): prototypes, the dynamic feature mixer, the
momentum update and the dual pseudo-label step.

Pure tensor functions, no model and no data: LatteCLIP's objective (clipclust.methods.latteclip.method)
calls them each training step, and the tests compare them with a direct computation of the paper's
equations.  The contrastive loss and the class prompts it shares with FLYP are in
clipclust.methods.contrastive.

Choices where the paper leaves room or where we differ (all small):
- Eq. 3 is averaged over its two directions, as OpenCLIP's ClipLoss does (the paper writes their sum; a
  factor 2 that AdamW absorbs), on L2-normalised features, so t_bar is normalised inside the loss.
- Both mixed texts of a step use the prototypes as they were at the step's start; the momentum updates
  then run for c_zs, then for c_ft ("repeated for each pseudo-label").
- Zero-shot pseudo-labels are computed once, on the un-augmented images, by the frozen base model with a
  template ensemble (the paper: "frozen zero-shot"; it does not name its ensemble, we use OpenCLIP's
  short ImageNet one plus "a photo of a {c}.").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipclust.methods.contrastive import contrastive_loss

if TYPE_CHECKING:  # pragma: no cover
    import torch

ALPHA = 0.99  # prototype weight in the mixed text embedding (paper, Eq. 2)
MOMENTUM = 0.99  # prototype momentum (paper, Sec. 3.2)
WEIGHT_EPS = 1e-6  # the released code adds this so that a text tied between two prototypes still counts


def mixer_weights(texts: "torch.Tensor", prototypes: "torch.Tensor") -> "torch.Tensor":
    """Eq. 1: top-1 minus top-2 cosine similarity of each text to the prototypes, detached, plus 1e-6.

    ``texts`` is (..., D), ``prototypes`` (C, D); returns (...).  With one class there is no second best
    and every text weighs the same.
    """
    import torch

    t = torch.nn.functional.normalize(texts.detach().float(), dim=-1)
    p = torch.nn.functional.normalize(prototypes.detach().float(), dim=-1)
    sims = t @ p.T
    if sims.shape[-1] < 2:
        return torch.ones(sims.shape[:-1], device=sims.device) + WEIGHT_EPS
    top = sims.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1] + WEIGHT_EPS


def mix(texts: "torch.Tensor", present: "torch.Tensor", prototypes: "torch.Tensor", labels: "torch.Tensor",
        alpha: float = ALPHA) -> "torch.Tensor":
    """Eq. 2: t_bar = (1 - alpha) * weighted mean of the text features + alpha * p_label.

    ``texts`` (N, T, D) holds the T text features of each image (class, image and group description),
    ``present`` (N, T) marks the ones that exist (a missing description gets weight 0).  Gradients reach the
    text encoder through the (1 - alpha) part only: weights and prototypes are constants.
    """
    import torch

    feats = torch.nn.functional.normalize(texts.float(), dim=-1)
    weights = mixer_weights(feats, prototypes) * present.float()
    mean = (weights.unsqueeze(-1) * feats).sum(1) / weights.sum(1, keepdim=True).clamp_min(WEIGHT_EPS)
    return (1 - alpha) * mean + alpha * prototypes.detach().float()[labels]


def momentum_update(prototypes: "torch.Tensor", mixed: "torch.Tensor", labels: "torch.Tensor",
                    momentum: float = MOMENTUM) -> "torch.Tensor":
    """p_c <- normalise(mu * p_c + (1 - mu) * mean of the batch's t_bar with pseudo-label c); other classes stay.

    Returns the new prototype bank (C, D); nothing here carries gradients.
    """
    import torch

    with torch.no_grad():
        mixed = mixed.detach().float()
        n_classes = prototypes.shape[0]
        sums = torch.zeros_like(prototypes, dtype=torch.float32).index_add_(0, labels, mixed)
        counts = torch.bincount(labels, minlength=n_classes).float()
        seen = counts > 0
        out = prototypes.detach().float().clone()
        batch_mean = sums[seen] / counts[seen].unsqueeze(1)
        out[seen] = torch.nn.functional.normalize(momentum * out[seen] + (1 - momentum) * batch_mean, dim=-1)
        return out.to(prototypes.dtype)


def dual_step(images: "torch.Tensor", class_zs: "torch.Tensor", class_ft: "torch.Tensor",
              described: "torch.Tensor", described_present: "torch.Tensor", prototypes: "torch.Tensor",
              zs_labels: "torch.Tensor", ft_labels: "torch.Tensor", logit_scale: "torch.Tensor", *,
              alpha: float = ALPHA, momentum: float = MOMENTUM) -> tuple["torch.Tensor", "torch.Tensor"]:
    """One LatteCLIP step: a mixed text per pseudo-label source, L(x, t_bar_zs) + L(x, t_bar_ft), and the
    momentum updates for c_zs then c_ft.

    ``class_zs``/``class_ft`` (N, D) are the features of "a photo of a {c}." for each image's zero-shot and
    fine-tuned pseudo-label (``ft_labels`` = the pseudo-labels of the images against the prototypes);
    ``described`` (N, K, D) the image/group description features, ``described_present`` (N, K) which exist.
    Both mixed texts use the prototypes as they were at the start of the step.  Returns (loss, prototypes).
    """
    import torch

    loss = images.new_zeros((), dtype=torch.float32)
    bank = prototypes
    mixed_by_source = []
    for labels, class_texts in ((zs_labels, class_zs), (ft_labels, class_ft)):
        texts = torch.cat([class_texts.unsqueeze(1), described], dim=1)
        present = torch.cat([torch.ones_like(labels, dtype=torch.bool).unsqueeze(1), described_present], dim=1)
        mixed = mix(texts, present, prototypes, labels, alpha)
        loss = loss + contrastive_loss(images, mixed, logit_scale)
        mixed_by_source.append((mixed, labels))
    for mixed, labels in mixed_by_source:
        bank = momentum_update(bank, mixed, labels, momentum)
    return loss, bank
