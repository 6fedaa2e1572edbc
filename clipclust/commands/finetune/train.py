"""`finetune` as a library call: unsupervised CLIP fine-tuning with any registered method (LatteCLIP,
FLYP + pseudo-labels; clipclust.methods.finetuning).

The base model gives each item a zero-shot pseudo-label once (template ensemble, no augmentation).  Each
step then encodes an augmented batch with gradients, asks the method's objective for its loss, and
updates both encoders with AdamW (OpenCLIP's settings: no weight decay on gains, biases and the logit
scale), a cosine schedule with linear warm-up, and AMP on GPU.  A checkpoint is written at the end of
every epoch; ``resume`` continues from the last one exactly as the uninterrupted run would have gone on.

The warm-up defaults to a tenth of the steps: LatteCLIP keeps OpenCLIP's defaults, whose 10000 warm-up
steps exceed its whole 2000-step run (the learning rate would never reach its peak).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clipclust.commands.finetune.batches import AUGMENTATION, collect_items, epoch_batches, loader
from clipclust.commands.finetune.settings import FinetuneOptions, base_model, class_template, templates, validate
from clipclust.commands.finetune.trainer import BETAS, EPS, MAX_LOGIT_SCALE, Trainer, lr_at, train_dataset
from clipclust.core.progress import Reporter, SilentReporter
from clipclust.errors import ClipclustError, InputError, opt
from clipclust.methods.finetuning import FinetuneMethod
from clipclust.models import checkpoint
from clipclust.models.clip import ClipEncoder, load_clip, model_identity, parse_model_spec
from clipclust.models.devices import resolve_device, resolve_precision, torch_dtype
from clipclust.store import Workspace, library_versions
from clipclust.version import __version__

# A resumed run must have been started with the same values (and the same method options, which the method
# records); device, precision and workers may change.
SAME_ON_RESUME = ("method", "base_model", "classes", "class_template", "templates", "domain", "split", "epochs",
                  "steps", "lr", "batch_size", "warmup", "weight_decay", "augment", "seed")


@dataclass
class StepStats:
    """One optimisation step, for progress displays."""

    epoch: int
    epochs: int
    step: int
    total_steps: int
    loss: float
    agreement: float  # share of the batch whose two pseudo-label sources agree
    images_per_second: float
    lr: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpochStats:
    """One finished epoch: its mean loss and agreement; a run's history, also kept in its checkpoint."""

    epoch: int
    step: int
    loss: float
    agreement: float
    images_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FinetuneSummary:
    """What a run did."""

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
    history: list[EpochStats] = field(default_factory=list)
    model_loaded: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        out["seconds"] = round(self.seconds, 3)
        return out


def _params(opts: FinetuneOptions, spec: FinetuneMethod, method_options: dict[str, Any], base_identity: str,
            sources: dict[str, str], total_steps: int, warmup: int) -> dict[str, Any]:
    return {
        "method": opts.method, "base_model": base_identity, "base_model_spec": opts.model, "classes": list(opts.classes),
        "class_template": class_template(opts), "templates": templates(opts), "domain": opts.domain or "",
        "split": opts.split or "", "epochs": opts.epochs, "steps": opts.steps, "total_steps": total_steps,
        "lr": opts.lr, "batch_size": opts.batch_size, "warmup": warmup, "weight_decay": opts.weight_decay,
        "betas": list(BETAS), "eps": EPS, "augment": opts.augment,
        "augmentation": AUGMENTATION if opts.augment else None, "seed": opts.seed, "max_logit_scale": MAX_LOGIT_SCALE,
        **spec.record(method_options, sources),
    }


def _default_workers() -> int:
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def _output_folder(out: Path, resume: bool) -> Path:
    if checkpoint.has_checkpoint(out) and not resume:
        raise InputError(f"{out} already holds a fine-tuning checkpoint; resume it or choose another folder")
    if resume and not checkpoint.has_checkpoint(out):
        raise InputError(f"{out} holds no fine-tuning checkpoint to resume; start without resuming")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; the output must be a folder")
    return out


def _check_same(params: dict[str, Any], now: dict[str, Any], keys: tuple[str, ...]) -> None:
    """A resumed run asks for what its checkpoint was made with (a key one of the two lacks is not compared)."""
    for key in keys:
        if key in params and key in now and params[key] != now[key]:
            raise InputError(f"the checkpoint was made with {key} = {params[key]!r}, this run asks for {now[key]!r}; "
                             "resume with the same settings or start a new run in another folder")


def finetune(workspace: Workspace, out: str | os.PathLike[str], options: FinetuneOptions | None = None, *,
             resume: bool = False, reporter: Reporter | None = None, encoder: ClipEncoder | None = None,
             on_step: Callable[[StepStats], None] | None = None,
             on_epoch: Callable[[EpochStats], None] | None = None) -> FinetuneSummary:
    """Fine-tune ``options.model`` on the workspace's items (their labels are never read) into ``out``."""
    import torch

    opts = options or FinetuneOptions()
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    method, method_options = validate(opts)
    opts = dataclasses.replace(opts, model=base_model(workspace, opts.model, reporter))
    out_dir = _output_folder(Path(out), resume)
    items = collect_items(workspace, split=opts.split, descriptions=method.descriptions(method_options),
                          domain=opts.domain)
    spec = parse_model_spec(opts.model)
    checkpoint.require_open_clip(spec)
    base_identity = encoder.identity if encoder is not None else model_identity(spec, workspace.memo_get, workspace.memo_put)
    summary = FinetuneSummary(out=str(out_dir), method=opts.method, base_model=base_identity, texts=dict(items.sources))

    def params_for(total: int, warmup: int) -> dict[str, Any]:
        return _params(opts, method, method_options, base_identity, items.sources, total, warmup)

    record = checkpoint.read_record(out_dir) if resume else None
    if record is not None:
        params = record["params"]
        now = params_for(int(params.get("total_steps", 0)),
                         int(opts.warmup if opts.warmup is not None else params.get("warmup", 0)))
        _check_same(params, now, SAME_ON_RESUME + tuple(method.record(method_options, items.sources)))
        summary.start_step = summary.step = int(record["step"])
        summary.total_steps, summary.n_items = int(params["total_steps"]), int(record["n_items"])
        summary.history = [EpochStats(**h) for h in record.get("history", [])]
        if summary.step >= summary.total_steps:  # finished: nothing to compute, no model to load
            summary.epochs = int(record["epoch"])
            summary.seconds = time.perf_counter() - started
            return summary

    device = resolve_device(opts.device)
    precision = resolve_precision(opts.precision, device, gpu_default="fp16")  # auto: AMP fp16 on CUDA, fp32 on CPU
    amp_dtype = None if precision == "fp32" else torch_dtype(precision)
    workers = _default_workers() if opts.workers is None else opts.workers
    torch.manual_seed(opts.seed)
    if encoder is None:
        with reporter.task(f"loading {opts.model}", None):
            encoder = load_clip(opts.model, device=device, precision="fp32", identity=base_identity)
    summary.model_loaded = True
    trainer = Trainer(encoder, opts, items, method.objective(method_options), amp_dtype)

    if record is None:
        keys, summary.skipped = trainer.start(reporter, workers)
        steps_per_epoch = len(epoch_batches(len(keys), opts.batch_size, opts.seed, 0))
        total = min(opts.epochs * steps_per_epoch, opts.steps or opts.epochs * steps_per_epoch)
        params = params_for(total, opts.warmup if opts.warmup is not None else total // 10)
        summary.total_steps, summary.n_items = total, len(keys)
    else:
        keys = trainer.restore(out_dir, record)
    row_of = {k: i for i, k in enumerate(items.keys)}
    missing = [k for k in keys if k not in row_of]
    if missing:
        raise InputError(f"{len(missing)} of the run's items are no longer in the workspace or their files are gone; "
                         "start a new run")
    trainer.items = items.subset([row_of[k] for k in keys])
    writer = _Checkpoints(out_dir, trainer, params, keys, checkpoint.base_config(spec, encoder.model), base_identity)
    _train(trainer, writer, summary, workers, on_step, on_epoch)
    summary.seconds = time.perf_counter() - started
    return summary


class _Checkpoints:
    """Writes a run's checkpoint: weights, classifier, resume state and the record that makes them valid."""

    def __init__(self, out: Path, trainer: Trainer, params: dict[str, Any], keys: list[str], config: dict[str, Any],
                 base_identity: str):
        self.out, self.trainer, self.params, self.keys = out, trainer, params, keys
        self.config, self.base_identity = config, base_identity

    def save(self, step: int, epoch_done: int, history: list[EpochStats]) -> None:
        trainer, opts = self.trainer, self.trainer.opts
        if not all(bool(p.isfinite().all()) for p in trainer.model.parameters()):
            raise self.diverged(step, "the weights are no longer finite numbers")
        classifier, kind = trainer.classifier()
        record = {"method": opts.method, "params": self.params, "step": step, "epoch": epoch_done,
                  "n_items": len(self.keys), "history": [h.to_dict() for h in history],
                  "base_model": self.base_identity, "clipclust": __version__, "versions": library_versions(),
                  "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        checkpoint.save(self.out, model=trainer.model, config=self.config, classes=list(opts.classes),
                        classifier=classifier, classifier_kind=kind, state=trainer.state(step, self.keys),
                        record=record)


    def diverged(self, step: int, what: str) -> ClipclustError:
        """Training blew up: nothing non-finite is saved, the last checkpoint (if any) stays as it was."""
        kept = (f"the last checkpoint in {self.out} (step {checkpoint.read_record(self.out)['step']}) is kept; "
                "start again in a new folder" if checkpoint.has_checkpoint(self.out)
                else "nothing was saved; start again")
        return ClipclustError(f"training diverged at step {step} ({what}); {kept} with a smaller {opt('lr')}")


def _train(trainer: Trainer, writer: _Checkpoints, summary: FinetuneSummary, workers: int,
           on_step: Callable[[StepStats], None] | None, on_epoch: Callable[[EpochStats], None] | None) -> None:
    """The epochs from ``summary.step`` to the end, a checkpoint after each (and every ``save_every`` steps)."""
    opts, keys = trainer.opts, writer.keys
    total, warmup = int(writer.params["total_steps"]), int(writer.params["warmup"])
    steps_per_epoch = len(epoch_batches(len(keys), opts.batch_size, opts.seed, 0))
    dataset = train_dataset(trainer, opts)
    step = summary.step
    epoch = step // steps_per_epoch
    epochs = -(-total // steps_per_epoch)
    while step < total:
        batches = epoch_batches(len(keys), opts.batch_size, opts.seed, epoch)[step - epoch * steps_per_epoch :]
        batches = batches[: total - step]
        dataset.epoch = epoch
        losses, agreements, seen, epoch_started = [], [], 0, time.perf_counter()
        tick = time.perf_counter()
        for pixels, rows, broken in loader(dataset, batches, workers, trainer.device.startswith("cuda")):
            if broken:
                raise ClipclustError(f"{trainer.items.paths[broken[0]]} can no longer be decoded; the last checkpoint "
                                     f"in {writer.out} is kept: restore the file and resume")
            loss, agreement = trainer.step(pixels, rows, lr_at(step, opts.lr, warmup, total))
            step += 1
            if not math.isfinite(loss):
                raise writer.diverged(step, f"the loss is {loss}")
            now = time.perf_counter()
            losses.append(loss)
            agreements.append(agreement)
            seen += len(rows)
            if on_step is not None:
                on_step(StepStats(epoch + 1, epochs, step, total, loss, agreement, len(rows) / max(now - tick, 1e-9),
                                  lr_at(step - 1, opts.lr, warmup, total)))
            if opts.save_every and step % opts.save_every == 0 and step % steps_per_epoch and step < total:
                writer.save(step, epoch, summary.history)  # mid-epoch: resuming skips this epoch's first batches
            tick = time.perf_counter()
        epoch += 1
        summary.history.append(EpochStats(epoch, step, float(np.mean(losses)), float(np.mean(agreements)),
                                          seen / max(time.perf_counter() - epoch_started, 1e-9)))
        writer.save(step, epoch, summary.history)
        if on_epoch is not None:
            on_epoch(summary.history[-1])
    summary.step, summary.epochs = step, epoch
