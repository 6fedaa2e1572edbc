"""`finetune` as a library call: unsupervised CLIP fine-tuning with LatteCLIP or FLYP + pseudo-labels.

The base model gives each item a zero-shot pseudo-label once (template ensemble, no augmentation) and the
prototypes start as the class texts' features.  Each step then encodes an augmented batch and its texts
with gradients, computes the method's loss (clipclust.methods.latteclip.objective), and updates both encoders with
AdamW (OpenCLIP's settings: no weight decay on gains, biases and the logit scale), a cosine schedule with
linear warm-up, and AMP on GPU.  A checkpoint is written at the end of every epoch; ``resume`` continues
from the last one exactly as the uninterrupted run would have gone on.

The warm-up defaults to a tenth of the steps: the paper keeps OpenCLIP's defaults, whose 10000 warm-up
steps exceed its whole 2000-step run (the learning rate would never reach its peak).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from clipclust.version import __version__
from clipclust.store import Workspace, library_versions
from clipclust.errors import ClipclustError, InputError
from clipclust.methods.latteclip import objective as lc
from clipclust.models.clip import DEFAULT_MODEL, ClipEncoder, load_clip, model_identity, parse_model_spec
from clipclust.models.devices import resolve_device, resolve_precision
from clipclust.core.progress import Reporter, SilentReporter
from clipclust.core.templates import check_template
from clipclust.models import checkpoint
from clipclust.commands.finetune.batches import AUGMENTATION, collect_items, epoch_batches, loader, parse_texts
from clipclust.commands.finetune.trainer import BETAS, EPS, Trainer, class_template, lr_at, templates, train_dataset

METHODS = ("latteclip", "flyp")
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
        "texts": list(texts), "class_template": class_template(opts), "templates": templates(opts),
        "domain": opts.domain or "", "split": opts.split or "", "epochs": opts.epochs, "steps": opts.steps,
        "total_steps": total_steps, "lr": opts.lr, "batch_size": opts.batch_size, "warmup": warmup,
        "weight_decay": opts.weight_decay, "betas": list(BETAS), "eps": EPS, "alpha": opts.alpha,
        "momentum": opts.momentum, "augment": opts.augment, "augmentation": AUGMENTATION if opts.augment else None,
        "seed": opts.seed, "image_descriptions": sources.get("image", ""), "group_descriptions": sources.get("group", ""),
        "max_logit_scale": lc.MAX_LOGIT_SCALE,
    }


def _validate(opts: FinetuneOptions) -> None:
    if opts.method not in METHODS:
        raise InputError(f"unknown fine-tuning method '{opts.method}': expected latteclip or flyp")
    if len(set(opts.classes)) < 2 or len(set(opts.classes)) != len(opts.classes):
        raise InputError("fine-tuning needs at least two distinct class names")
    for template in [class_template(opts), *templates(opts)]:
        check_template(template)
    checks = [(opts.epochs >= 1, "epochs must be at least 1"), (opts.steps is None or opts.steps >= 1, "steps must be at least 1"),
              (opts.lr > 0, "the learning rate must be positive"), (opts.batch_size >= 2, "the batch size must be at least 2"),
              (opts.warmup is None or opts.warmup >= 0, "warm-up steps cannot be negative"),
              (opts.save_every is None or opts.save_every >= 1, "checkpoints can be saved every 1 step or more"),
              (0 <= opts.alpha <= 1 and 0 <= opts.momentum <= 1, "alpha and momentum must lie in [0, 1]")]
    for ok, message in checks:
        if not ok:
            raise InputError(message)


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
    trainer = Trainer(encoder, opts, items, amp_dtype)

    if record is None:
        keys, summary.skipped = trainer.start(reporter, workers)
        steps_per_epoch = len(epoch_batches(len(keys), opts.batch_size, opts.seed, 0))
        total = min(opts.epochs * steps_per_epoch, opts.steps or opts.epochs * steps_per_epoch)
        warmup = opts.warmup if opts.warmup is not None else total // 10
        params = _params(opts, base_identity, texts, items.sources, total, warmup)
        summary.total_steps, summary.n_items = total, len(keys)
    else:
        keys = trainer.restore(out_dir, record)
        params, total, warmup = record["params"], int(record["params"]["total_steps"]), int(record["params"]["warmup"])
    row_of = {k: i for i, k in enumerate(items.keys)}
    missing = [k for k in keys if k not in row_of]
    if missing:
        raise InputError(f"{len(missing)} of the run's items are no longer in the workspace or their files are gone; "
                         "start a new run")
    trainer.items = items.subset([row_of[k] for k in keys])
    steps_per_epoch = len(epoch_batches(len(keys), opts.batch_size, opts.seed, 0))
    dataset = train_dataset(trainer, opts)
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


def _check_same(params: dict[str, Any], opts: FinetuneOptions, base_identity: str, texts: tuple[str, ...],
                sources: dict[str, str]) -> None:
    now = _params(opts, base_identity, texts, sources, int(params.get("total_steps", 0)),
                  int(opts.warmup if opts.warmup is not None else params.get("warmup", 0)))
    for key in SAME_ON_RESUME:
        if key in params and params[key] != now[key]:
            raise InputError(f"the checkpoint was made with {key} = {params[key]!r}, this run asks for {now[key]!r}; "
                             "resume with the same settings or start a new run in another folder")
