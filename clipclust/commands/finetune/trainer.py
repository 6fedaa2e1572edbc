"""One fine-tuning run's model, texts, pseudo-labels and optimiser: the zero-shot pass that starts a run,
restoring a checkpoint, and one optimisation step of whichever method the run uses.

The trainer is the method's :class:`~clipclust.methods.finetuning.TextEncoder`: it encodes texts and
builds a batch's text targets, the method's objective turns them into a loss.  The encoders run under
autocast on GPU (AMP, with a gradient scaler for fp16); the methods' arithmetic runs in fp32 on their
outputs.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from clipclust.commands.finetune.batches import AUGMENTATION, ImageDataset, TrainItems, loader
from clipclust.commands.finetune.settings import FinetuneOptions, class_template, templates
from clipclust.core.progress import Reporter
from clipclust.errors import InputError
from clipclust.methods.contrastive import class_prompts, pseudo_labels
from clipclust.methods.finetuning import Objective
from clipclust.models import checkpoint
from clipclust.models.clip import ClipEncoder

if TYPE_CHECKING:  # pragma: no cover
    import torch

BETAS = (0.9, 0.98)
EPS = 1e-6
MAX_LOGIT_SCALE = math.log(100.0)  # OpenCLIP clamps the learned temperature at 100


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
    """One run's model, texts, pseudo-labels and method objective; ``step`` does one optimisation step."""

    def __init__(self, encoder: ClipEncoder, opts: FinetuneOptions, items: TrainItems, objective: Objective,
                 amp_dtype: Any):
        import torch

        self.encoder, self.opts, self.items, self.objective, self.amp_dtype = encoder, opts, items, objective, amp_dtype
        self.model = encoder.model
        self.device = encoder.device
        self.class_texts = class_prompts(class_template(opts), opts.classes)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, opts.weight_decay), lr=opts.lr, betas=BETAS, eps=EPS)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        self.zs_labels: "torch.Tensor" = torch.zeros(0, dtype=torch.long)

    @property
    def logit_scale(self) -> "torch.Tensor":
        return self.model.logit_scale

    def autocast(self) -> Any:
        import contextlib

        import torch

        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda" if self.device.startswith("cuda") else "cpu", dtype=self.amp_dtype)

    def encode_texts(self, texts: Sequence[str], chunk: int = 1024) -> "torch.Tensor":
        """Text features in fp32; the encoder alone runs under autocast, the method's arithmetic does not."""
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
        """Base-model pseudo-labels (template-ensemble classifier), then the method's starting state.

        Returns the rows that decoded and the (path, reason) of those that did not."""
        import torch

        self.model.eval()
        per_template = torch.stack([self.frozen_class_features(class_prompts(t, self.opts.classes))
                                    for t in templates(self.opts)])
        ensemble = torch.nn.functional.normalize(per_template.mean(0), dim=-1)
        self.objective.start(self)
        dataset = ImageDataset(self.items.paths, self.encoder.preprocess, min_size=self.encoder.input_size)
        n = len(self.items)
        batches = [list(range(i, min(n, i + self.opts.batch_size))) for i in range(0, n, self.opts.batch_size)]
        labels = np.full(n, -1, dtype=np.int64)
        bad: list[int] = []
        with reporter.task("zero-shot pseudo-labels", n) as advance, torch.no_grad():
            for pixels, rows, unreadable in loader(dataset, batches, workers, self.device.startswith("cuda")):
                bad += unreadable
                if pixels is not None:
                    labels[rows] = pseudo_labels(self.encode_images(pixels), ensemble).cpu().numpy()
                advance(len(rows) + len(unreadable))
        good = [i for i in range(n) if labels[i] >= 0]
        self.zs_labels = torch.as_tensor(labels[good])
        return good, [(self.items.paths[i], "could not be decoded") for i in bad]

    def start(self, reporter: Reporter, workers: int) -> tuple[list[str], list[tuple[str, str]]]:
        """A new run: zero-shot pseudo-labels and the method's state; returns the keys to train on and the
        skipped files."""
        good, skipped = self.zero_shot(reporter, workers)
        for path, reason in skipped:
            reporter.warn(f"skipped {path}: {reason}")
        if len(good) < 2:
            raise InputError(f"only {len(good)} of the {len(self.items)} items could be decoded; "
                             "fine-tuning needs two or more")
        return [self.items.keys[i] for i in good], skipped

    def state(self, step: int, keys: list[str]) -> dict[str, Any]:
        """What a checkpoint keeps to resume: progress, pseudo-labels, optimiser, scaler and the method's state."""
        return {"step": step, "keys": keys, "zs_labels": self.zs_labels, **self.objective.state(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def restore(self, out: Path, record: dict[str, Any]) -> list[str]:
        """A resumed run: weights, optimiser, scaler, pseudo-labels and the method's state of the checkpoint."""
        state = checkpoint.load_state(out, record)
        checkpoint.load_weights(out, self.model)
        self.zs_labels = state["zs_labels"]
        self.objective.restore(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        return list(state["keys"])

    def text_targets(self, label_sets: Sequence["torch.Tensor"], rows: Sequence[int]
                     ) -> tuple[list["torch.Tensor"], "torch.Tensor", "torch.Tensor"]:
        """Text features with gradients, from one text-encoder call over the batch's distinct texts: the
        class description of each label in each of ``label_sets``, and the (N, K, D) description features
        of ``rows`` with their (N, K) presence mask."""
        import torch

        kinds = list(self.items.described)
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
        """One optimisation step; returns (loss, agreement of the zero-shot and the method's pseudo-labels)."""
        import torch

        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        zs = self.zs_labels[rows].to(self.device)
        images = self.encode_images(pixels)
        loss, labels = self.objective.loss(self, images, zs, rows)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        return float(loss.detach()), float((zs == labels).float().mean())

    def classifier(self) -> tuple[np.ndarray, str]:
        """What evaluate uses (the method's class vectors), read from the model in eval mode."""
        self.model.eval()
        return self.objective.classifier(self)


def train_dataset(trainer: Trainer, opts: FinetuneOptions) -> ImageDataset:
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
