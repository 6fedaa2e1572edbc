"""One fine-tuning run's model, texts, pseudo-labels and optimiser: the zero-shot pass that starts a run,
restoring a checkpoint, and one optimisation step of LatteCLIP or FLYP + pseudo-labels.

The encoders run under autocast on GPU (AMP, with a gradient scaler for fp16); LatteCLIP's arithmetic
(clipclust.methods.latteclip.objective) runs in fp32 on their outputs.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from clipclust.errors import InputError
from clipclust.methods.latteclip import objective as lc
from clipclust.models.clip import ClipEncoder
from clipclust.core.progress import Reporter
from clipclust.models import checkpoint
from clipclust.commands.finetune.batches import AUGMENTATION, ImageDataset, TrainItems, loader

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from clipclust.commands.finetune.train import FinetuneOptions

BETAS = (0.9, 0.98)
EPS = 1e-6


def class_template(opts: "FinetuneOptions") -> str:
    return opts.class_template or lc.with_domain(lc.CLASS_TEMPLATE, opts.domain)


def templates(opts: "FinetuneOptions") -> list[str]:
    return list(opts.templates) if opts.templates else [lc.with_domain(t, opts.domain) for t in lc.ENSEMBLE_TEMPLATES]


def lr_at(step: int, base_lr: float, warmup: int, total: int) -> float:
    """OpenCLIP's cosine_lr: linear warm-up to ``base_lr`` over ``warmup`` steps, then half a cosine to 0."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / span)) * base_lr


def param_groups(model: "torch.nn.Module", weight_decay: float) -> list[dict[str, Any]]:
    """OpenCLIP's split: gains, biases, norms and the logit scale get no weight decay."""
    def exclude(name: str, p: Any) -> bool:
        return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": weight_decay}]


class Trainer:
    """One run's model, texts and pseudo-labels; ``step`` does one optimisation step."""

    def __init__(self, encoder: ClipEncoder, opts: "FinetuneOptions", items: TrainItems, amp_dtype: Any):
        import torch

        self.encoder, self.opts, self.items, self.amp_dtype = encoder, opts, items, amp_dtype
        self.model = encoder.model
        self.device = encoder.device
        self.class_texts = lc.class_prompts(class_template(opts), opts.classes)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, opts.weight_decay), lr=opts.lr, betas=BETAS, eps=EPS)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        self.prototypes: "torch.Tensor" = torch.zeros(0)
        self.zs_labels: "torch.Tensor" = torch.zeros(0, dtype=torch.long)

    def autocast(self) -> Any:
        import contextlib

        import torch

        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda" if self.device.startswith("cuda") else "cpu", dtype=self.amp_dtype)

    def encode_texts(self, texts: Sequence[str], chunk: int = 1024) -> "torch.Tensor":
        """Text features in fp32; the encoder alone runs under autocast, LatteCLIP's arithmetic does not."""
        import torch

        with self.autocast():
            return torch.cat([self.model.encode_text(self.encoder.tokenize(texts[i : i + chunk]))
                              for i in range(0, len(texts), chunk)]).float()

    def encode_images(self, pixels: "torch.Tensor") -> "torch.Tensor":
        with self.autocast():
            return self.model.encode_image(pixels.to(self.device, non_blocking=True)).float()

    def frozen_class_features(self, texts: Sequence[str]) -> "torch.Tensor":
        import torch

        with torch.no_grad():
            return torch.nn.functional.normalize(self.encode_texts(texts), dim=-1)

    def zero_shot(self, reporter: Reporter, workers: int) -> tuple[list[int], list[tuple[str, str]]]:
        """Base-model pseudo-labels (template-ensemble classifier) and the initial prototypes.

        Returns the rows that decoded and the (path, reason) of those that did not."""
        import torch

        self.model.eval()
        per_template = torch.stack([self.frozen_class_features(lc.class_prompts(t, self.opts.classes))
                                    for t in templates(self.opts)])
        ensemble = torch.nn.functional.normalize(per_template.mean(0), dim=-1)
        self.prototypes = self.frozen_class_features(self.class_texts).cpu()
        dataset = ImageDataset(self.items.paths, self.encoder.preprocess, min_size=self.encoder.input_size)
        n = len(self.items)
        batches = [list(range(i, min(n, i + self.opts.batch_size))) for i in range(0, n, self.opts.batch_size)]
        labels = np.full(n, -1, dtype=np.int64)
        bad: list[int] = []
        with reporter.task("zero-shot pseudo-labels", n) as advance, torch.no_grad():
            for pixels, rows, unreadable in loader(dataset, batches, workers, self.device.startswith("cuda")):
                bad += unreadable
                if pixels is not None:
                    labels[rows] = lc.pseudo_labels(self.encode_images(pixels), ensemble).cpu().numpy()
                advance(len(rows) + len(unreadable))
        good = [i for i in range(n) if labels[i] >= 0]
        self.zs_labels = torch.as_tensor(labels[good])
        return good, [(self.items.paths[i], "could not be decoded") for i in bad]

    def start(self, reporter: Reporter, workers: int) -> tuple[list[str], list[tuple[str, str]]]:
        """A new run: zero-shot pseudo-labels and prototypes; returns the keys to train on and the skipped files."""
        good, skipped = self.zero_shot(reporter, workers)
        for path, reason in skipped:
            reporter.warn(f"skipped {path}: {reason}")
        if len(good) < 2:
            raise InputError(f"only {len(good)} of the {len(self.items)} items could be decoded; "
                             "fine-tuning needs two or more")
        return [self.items.keys[i] for i in good], skipped

    def restore(self, out: Path, record: dict[str, Any]) -> list[str]:
        """A resumed run: weights, optimiser, scaler, prototypes and pseudo-labels of the checkpoint."""
        state = checkpoint.load_state(out, record)
        checkpoint.load_weights(out, self.model)
        self.zs_labels, self.prototypes = state["zs_labels"], state["prototypes"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        return list(state["keys"])

    def _texts(self, label_sets: Sequence["torch.Tensor"], rows: list[int]) -> tuple[list["torch.Tensor"], "torch.Tensor", "torch.Tensor"]:
        """Text features with gradients, from one text-encoder call over the batch's distinct texts: the
        class description of each label in each of ``label_sets``, and the (N, K, D) image/group description
        features of ``rows`` with their (N, K) presence mask."""
        import torch

        kinds = [k for k in ("image", "group") if k in self.items.described]
        described = [[self.items.described[k][r] for k in kinds] for r in rows]
        classes = torch.unique(torch.cat(list(label_sets))).tolist()
        order = list(dict.fromkeys([self.class_texts[c] for c in classes] +
                                   [t for row in described for t in row if t is not None]))
        feats = self.encode_texts(order)
        at = {t: i for i, t in enumerate(order)}
        slot = torch.zeros(len(self.class_texts), dtype=torch.long, device=self.device)
        slot[torch.tensor(classes, device=self.device)] = torch.tensor([at[self.class_texts[c]] for c in classes],
                                                                       device=self.device)
        index = torch.tensor([[at[t] if t is not None else 0 for t in row] for row in described], dtype=torch.long,
                             device=self.device)
        present = torch.tensor([[t is not None for t in row] for row in described], dtype=torch.bool,
                               device=self.device).reshape(len(rows), len(kinds))
        return [feats[slot[labels]] for labels in label_sets], feats[index.reshape(len(rows), len(kinds))], present

    def step(self, pixels: "torch.Tensor", rows: list[int], lr: float) -> tuple[float, float]:
        """One optimisation step; returns (loss, agreement of the two pseudo-label sources)."""
        import torch

        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        zs = self.zs_labels[rows].to(self.device)
        prototypes = self.prototypes.to(self.device)
        images = self.encode_images(pixels)
        if self.opts.method == "flyp":
            with torch.no_grad():  # FLYP + pseudo-labels: labels from the current model, every step
                ft = lc.pseudo_labels(images, self.encode_texts(self.class_texts))
            loss = lc.contrastive_loss(images, self._texts([ft], [])[0][0], self.model.logit_scale)
            new_prototypes = None
        else:
            ft = lc.pseudo_labels(images, prototypes)
            (class_zs, class_ft), described, present = self._texts([zs, ft], rows)
            loss, new_prototypes = lc.dual_step(images, class_zs, class_ft, described, present, prototypes, zs, ft,
                                                self.model.logit_scale, alpha=self.opts.alpha, momentum=self.opts.momentum)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, lc.MAX_LOGIT_SCALE)
        if new_prototypes is not None:
            self.prototypes = new_prototypes.detach().cpu()
        return float(loss.detach()), float((zs == ft).float().mean())

    def classifier(self) -> tuple[np.ndarray, str]:
        """What evaluate uses: LatteCLIP's prototypes, or FLYP's class-text features of the tuned model."""
        if self.opts.method == "latteclip":
            return self.prototypes.numpy().astype(np.float32), "prototypes"
        self.model.eval()
        return self.frozen_class_features(self.class_texts).cpu().numpy(), "class-texts"


def train_dataset(trainer: Trainer, opts: "FinetuneOptions") -> ImageDataset:
    if not opts.augment:
        return ImageDataset(trainer.items.paths, trainer.encoder.preprocess, opts.seed, trainer.encoder.input_size)
    import open_clip

    model = trainer.encoder.model
    cfg = open_clip.get_model_preprocess_cfg(model)
    with warnings.catch_warnings():  # open_clip warns that the jitter keys are "unused" while it uses them
        warnings.simplefilter("ignore", UserWarning)
        transform = open_clip.image_transform(model.visual.image_size, is_train=True, mean=cfg.get("mean"),
                                              std=cfg.get("std"), aug_cfg=open_clip.AugmentationCfg(**AUGMENTATION))
    return ImageDataset(trainer.items.paths, transform, opts.seed, trainer.encoder.input_size)
