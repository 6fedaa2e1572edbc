"""`finetune` as a library call: unsupervised CLIP fine-tuning with LatteCLIP or FLYP + pseudo-labels.

The base model gives each item a zero-shot pseudo-label once (template ensemble, no augmentation) and the
prototypes start as the class texts' features.  Each step then encodes an augmented batch and its texts
with gradients, computes the method's loss (clipclust.methods.latteclip), and updates both encoders with
AdamW (OpenCLIP's settings: no weight decay on gains, biases and the logit scale), a cosine schedule with
linear warm-up, and AMP on GPU.  A checkpoint is written at the end of every epoch; ``resume`` continues
from the last one exactly as the uninterrupted run would have gone on.

The warm-up defaults to a tenth of the steps: the paper keeps OpenCLIP's defaults, whose 10000 warm-up
steps exceed its whole 2000-step run (the learning rate would never reach its peak).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .. import __version__
from ..cache import Workspace, library_versions
from ..errors import ClipclustError, InputError
from ..methods import latteclip as lc
from ..models.clip import DEFAULT_MODEL, ClipEncoder, load_clip, model_identity, parse_model_spec, resolve_device, resolve_precision
from ..progress import Reporter, SilentReporter
from ..prompts import check_template
from . import checkpoint
from .data import AUGMENTATION, ImageDataset, TrainItems, collect_items, epoch_batches, loader, parse_texts

if TYPE_CHECKING:  # pragma: no cover
    import torch

METHODS = ("latteclip", "flyp")
BETAS = (0.9, 0.98)
EPS = 1e-6
# A resumed run must have been started with the same values; device, precision and workers may change.
SAME_ON_RESUME = ("method", "base_model", "classes", "texts", "class_template", "templates", "domain", "split",
                  "epochs", "steps", "lr", "batch_size", "warmup", "weight_decay", "alpha", "momentum", "augment",
                  "seed", "image_descriptions", "group_descriptions")


@dataclass
class FinetuneOptions:
    """Everything `clipclust finetune` can be asked for; the defaults are the paper's (Appendix B)."""

    method: str = "latteclip"
    classes: Sequence[str] = ()
    model: str = DEFAULT_MODEL
    texts: Sequence[str] = ("class", "image", "group")
    image_descriptions: str | None = None  # a description set's name or id (default: the only one stored)
    group_descriptions: str | None = None
    domain: str | None = None
    class_template: str | None = None  # default "a photo of a <>." (+ ", a type of DOMAIN.")
    templates: Sequence[str] | None = None  # zero-shot ensemble (default ENSEMBLE_TEMPLATES, + domain)
    split: str | None = None
    epochs: int = 50
    steps: int | None = 2000  # the paper trains for min(2000 iterations, 50 epochs)
    lr: float = 1e-7
    batch_size: int = 512
    warmup: int | None = None  # default: a tenth of the steps
    weight_decay: float = 0.2
    alpha: float = lc.ALPHA
    momentum: float = lc.MOMENTUM
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None
    save_every: int | None = None  # also a checkpoint every N steps inside an epoch (long epochs)


@dataclass
class StepStats:
    epoch: int
    epochs: int
    step: int
    total_steps: int
    loss: float
    agreement: float  # share of the batch whose two pseudo-label sources agree
    images_per_second: float
    lr: float


@dataclass
class EpochStats:
    epoch: int
    step: int
    loss: float
    agreement: float
    images_per_second: float
    checkpoint: str


@dataclass
class FinetuneSummary:
    """What a run did; the CLI prints it, tests assert on it."""

    out: str = ""
    method: str = ""
    base_model: str = ""
    n_items: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    start_step: int = 0
    step: int = 0
    total_steps: int = 0
    epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    model_loaded: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        out["seconds"] = round(self.seconds, 3)
        return out


def _params(opts: FinetuneOptions, base_identity: str, texts: tuple[str, ...], sources: dict[str, str],
            total_steps: int, warmup: int) -> dict[str, Any]:
    return {
        "method": opts.method, "base_model": base_identity, "base_model_spec": opts.model, "classes": list(opts.classes),
        "texts": list(texts), "class_template": _class_template(opts), "templates": _templates(opts),
        "domain": opts.domain or "", "split": opts.split or "", "epochs": opts.epochs, "steps": opts.steps,
        "total_steps": total_steps, "lr": opts.lr, "batch_size": opts.batch_size, "warmup": warmup,
        "weight_decay": opts.weight_decay, "betas": list(BETAS), "eps": EPS, "alpha": opts.alpha,
        "momentum": opts.momentum, "augment": opts.augment, "augmentation": AUGMENTATION if opts.augment else None,
        "seed": opts.seed, "image_descriptions": sources.get("image", ""), "group_descriptions": sources.get("group", ""),
        "max_logit_scale": lc.MAX_LOGIT_SCALE,
    }


def _class_template(opts: FinetuneOptions) -> str:
    return opts.class_template or lc.with_domain(lc.CLASS_TEMPLATE, opts.domain)


def _templates(opts: FinetuneOptions) -> list[str]:
    return list(opts.templates) if opts.templates else [lc.with_domain(t, opts.domain) for t in lc.ENSEMBLE_TEMPLATES]


def _validate(opts: FinetuneOptions) -> None:
    if opts.method not in METHODS:
        raise InputError(f"unknown fine-tuning method '{opts.method}': expected latteclip or flyp")
    if len(set(opts.classes)) < 2 or len(set(opts.classes)) != len(opts.classes):
        raise InputError("fine-tuning needs at least two distinct class names")
    for template in [_class_template(opts), *_templates(opts)]:
        check_template(template)
    checks = [(opts.epochs >= 1, "epochs must be at least 1"), (opts.steps is None or opts.steps >= 1, "steps must be at least 1"),
              (opts.lr > 0, "the learning rate must be positive"), (opts.batch_size >= 2, "the batch size must be at least 2"),
              (opts.warmup is None or opts.warmup >= 0, "warm-up steps cannot be negative"),
              (opts.save_every is None or opts.save_every >= 1, "checkpoints can be saved every 1 step or more"),
              (0 <= opts.alpha <= 1 and 0 <= opts.momentum <= 1, "alpha and momentum must lie in [0, 1]")]
    for ok, message in checks:
        if not ok:
            raise InputError(message)


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


class _Trainer:
    """One run's model, texts and pseudo-labels; ``step`` does one optimisation step."""

    def __init__(self, encoder: ClipEncoder, opts: FinetuneOptions, items: TrainItems, amp_dtype: Any):
        import torch

        self.encoder, self.opts, self.items, self.amp_dtype = encoder, opts, items, amp_dtype
        self.model = encoder.model
        self.device = encoder.device
        self.class_texts = lc.class_prompts(_class_template(opts), opts.classes)
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
        templates = _templates(self.opts)
        per_template = torch.stack([self.frozen_class_features(lc.class_prompts(t, self.opts.classes)) for t in templates])
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


def _default_workers() -> int:
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def finetune(workspace: Workspace, out: str | os.PathLike[str], options: FinetuneOptions | None = None, *,
             resume: bool = False, reporter: Reporter | None = None, encoder: ClipEncoder | None = None,
             on_step: Callable[[StepStats], None] | None = None,
             on_epoch: Callable[[EpochStats], None] | None = None) -> FinetuneSummary:
    """Fine-tune ``options.model`` on the workspace's items (their labels are never read) into ``out``."""
    import torch

    opts = options or FinetuneOptions()
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    _validate(opts)
    out_dir = Path(out)
    if checkpoint.has_checkpoint(out_dir) and not resume:
        raise InputError(f"{out_dir} already holds a fine-tuning checkpoint; resume it or choose another folder")
    if resume and not checkpoint.has_checkpoint(out_dir):
        raise InputError(f"{out_dir} holds no fine-tuning checkpoint to resume; start without resuming")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} is a file; the output must be a folder")
    texts = parse_texts(opts.texts) if opts.method == "latteclip" else ("class",)
    items = collect_items(workspace, split=opts.split, texts=texts,
                          descriptions={"image": opts.image_descriptions, "group": opts.group_descriptions},
                          domain=opts.domain)
    spec = parse_model_spec(opts.model)
    checkpoint.require_open_clip(spec)
    base_identity = encoder.identity if encoder is not None else model_identity(spec, workspace.memo_get, workspace.memo_put)
    summary = FinetuneSummary(out=str(out_dir), method=opts.method, base_model=base_identity, texts=dict(items.sources))

    record = checkpoint.read_record(out_dir) if resume else None
    if record is not None:
        params = record["params"]
        _check_same(params, opts, base_identity, texts, items.sources)
        summary.start_step = summary.step = int(record["step"])
        summary.total_steps, summary.n_items = int(params["total_steps"]), int(record["n_items"])
        summary.history = list(record.get("history", []))
        if summary.step >= summary.total_steps:  # finished: nothing to compute, no model to load
            summary.epochs = int(record["epoch"])
            summary.seconds = time.perf_counter() - started
            return summary

    device = resolve_device(opts.device)
    precision = resolve_precision(opts.precision, device)
    amp_dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    workers = _default_workers() if opts.workers is None else opts.workers
    torch.manual_seed(opts.seed)
    if encoder is None:
        with reporter.task(f"loading {opts.model}", None):
            encoder = load_clip(opts.model, device=device, precision="fp32", identity=base_identity)
    summary.model_loaded = True
    config = checkpoint.base_config(spec, encoder.model)
    trainer = _Trainer(encoder, opts, items, amp_dtype)

    if record is None:
        good, summary.skipped = trainer.zero_shot(reporter, workers)
        for path, reason in summary.skipped:
            reporter.warn(f"skipped {path}: {reason}")
        keys = [items.keys[i] for i in good]
        if len(keys) < 2:
            raise InputError(f"only {len(keys)} of the {len(items)} items could be decoded; fine-tuning needs two or more")
        steps_per_epoch = len(epoch_batches(len(keys), opts.batch_size, opts.seed, 0))
        total = min(opts.epochs * steps_per_epoch, opts.steps or opts.epochs * steps_per_epoch)
        warmup = opts.warmup if opts.warmup is not None else total // 10
        params = _params(opts, base_identity, texts, items.sources, total, warmup)
        summary.total_steps, summary.n_items = total, len(keys)
    else:
        state = checkpoint.load_state(out_dir, record)
        checkpoint.load_weights(out_dir, encoder.model)
        keys = list(state["keys"])
        trainer.zs_labels, trainer.prototypes = state["zs_labels"], state["prototypes"]
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scaler.load_state_dict(state["scaler"])
        params, total, warmup = record["params"], int(record["params"]["total_steps"]), int(record["params"]["warmup"])
    row_of = {k: i for i, k in enumerate(items.keys)}
    missing = [k for k in keys if k not in row_of]
    if missing:
        raise InputError(f"{len(missing)} of the run's items are no longer in the workspace or their files are gone; "
                         "start a new run")
    trainer.items = items.subset([row_of[k] for k in keys])
    steps_per_epoch = len(epoch_batches(len(keys), opts.batch_size, opts.seed, 0))
    dataset = _train_dataset(trainer, opts)
    step = summary.step
    epoch = step // steps_per_epoch
    epochs = -(-total // steps_per_epoch)

    def save(epoch_done: int) -> None:
        classifier, kind = trainer.classifier()
        rec = {"method": opts.method, "params": params, "step": step, "epoch": epoch_done, "n_items": len(keys),
               "history": summary.history, "base_model": base_identity, "clipclust": __version__,
               "versions": library_versions(), "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        state = {"step": step, "keys": keys, "zs_labels": trainer.zs_labels, "prototypes": trainer.prototypes,
                 "optimizer": trainer.optimizer.state_dict(), "scaler": trainer.scaler.state_dict()}
        checkpoint.save(out_dir, model=encoder.model, config=config, classes=list(opts.classes), classifier=classifier,
                        classifier_kind=kind, state=state, record=rec)

    while step < total:
        batches = epoch_batches(len(keys), opts.batch_size, opts.seed, epoch)[step - epoch * steps_per_epoch :]
        batches = batches[: total - step]
        dataset.epoch = epoch
        losses, agreements, seen, epoch_started = [], [], 0, time.perf_counter()
        tick = time.perf_counter()
        for pixels, rows, broken in loader(dataset, batches, workers, encoder.device.startswith("cuda")):
            if broken:
                raise ClipclustError(f"{trainer.items.paths[broken[0]]} can no longer be decoded; the last checkpoint "
                                     f"in {out_dir} is kept: restore the file and resume")
            loss, agreement = trainer.step(pixels, rows, lr_at(step, opts.lr, warmup, total))
            step += 1
            now = time.perf_counter()
            losses.append(loss)
            agreements.append(agreement)
            seen += len(rows)
            if on_step is not None:
                on_step(StepStats(epoch + 1, epochs, step, total, loss, agreement, len(rows) / max(now - tick, 1e-9),
                                  lr_at(step - 1, opts.lr, warmup, total)))
            if opts.save_every and step % opts.save_every == 0 and step % steps_per_epoch and step < total:
                save(epoch)  # mid-epoch: resuming skips this epoch's first batches, the augmentation is per item
            tick = time.perf_counter()
        epoch += 1
        summary.history.append({"epoch": epoch, "step": step, "loss": float(np.mean(losses)),
                                "agreement": float(np.mean(agreements)),
                                "images_per_second": seen / max(time.perf_counter() - epoch_started, 1e-9)})
        save(epoch)
        if on_epoch is not None:
            h = summary.history[-1]
            on_epoch(EpochStats(epoch, step, h["loss"], h["agreement"], h["images_per_second"], str(out_dir)))
    summary.step, summary.epochs = step, epoch
    summary.seconds = time.perf_counter() - started
    return summary


def _train_dataset(trainer: _Trainer, opts: FinetuneOptions) -> ImageDataset:
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


def _check_same(params: dict[str, Any], opts: FinetuneOptions, base_identity: str, texts: tuple[str, ...],
                sources: dict[str, str]) -> None:
    now = _params(opts, base_identity, texts, sources, int(params.get("total_steps", 0)),
                  int(opts.warmup if opts.warmup is not None else params.get("warmup", 0)))
    for key in SAME_ON_RESUME:
        if key in params and params[key] != now[key]:
            raise InputError(f"the checkpoint was made with {key} = {params[key]!r}, this run asks for {now[key]!r}; "
                             "resume with the same settings or start a new run in another folder")
