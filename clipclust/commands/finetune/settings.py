"""What a fine-tuning run is asked for: the settings every method shares, the method's own options, and
the prompts they imply.  The trainer and the run both read these, so they sit apart from either."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from clipclust.core.progress import Reporter
from clipclust.core.templates import check_template
from clipclust.errors import InputError
from clipclust.methods.contrastive import CLASS_TEMPLATE, ENSEMBLE_TEMPLATES, with_domain
from clipclust.methods.finetuning import FinetuneMethod, get_finetune_method, resolve_finetune_options
from clipclust.models.clip import DEFAULT_MODEL
from clipclust.store import Workspace


@dataclass
class FinetuneOptions:
    """Everything `finetune` can be asked for; the defaults are LatteCLIP's paper's (Appendix B).

    ``options`` holds the method's own settings (LatteCLIP: ``texts``, ``alpha``, ...), checked against
    what the method declares; :meth:`of` sorts keywords into the two.
    """

    method: str = "latteclip"
    classes: Sequence[str] = ()
    model: str | None = None  # None: the model the workspace's images were embedded with, else DEFAULT_MODEL
    domain: str | None = None  # what the images show: "a photo of a <>, a type of DOMAIN."
    class_template: str | None = None  # default "a photo of a <>." (+ ", a type of DOMAIN.")
    templates: Sequence[str] | None = None  # zero-shot ensemble (default ENSEMBLE_TEMPLATES, + domain)
    split: str | None = None
    epochs: int = 50
    steps: int | None = 2000  # the paper trains for min(2000 iterations, 50 epochs)
    lr: float = 1e-7
    batch_size: int = 512
    warmup: int | None = None  # default: a tenth of the steps
    weight_decay: float = 0.2
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None
    save_every: int | None = None  # also a checkpoint every N steps inside an epoch (long epochs)
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, **fields: Any) -> "FinetuneOptions":
        """Options from keywords; names that are not shared settings are the method's (``alpha=0.9``)."""
        common = {f.name for f in dataclasses.fields(cls)}
        options = dict(fields.pop("options", None) or {})
        options.update({key: fields.pop(key) for key in list(fields) if key not in common})
        return cls(**fields, options=options)


def base_model(workspace: Workspace, model: str | None, reporter: Reporter) -> str:
    """The model to fine-tune: the one asked for, else the one the workspace's image sets were embedded with
    (said, since it was not asked for), else the default; with several such models the user must choose."""
    if model is not None:
        return model
    specs = sorted({str(json.loads(info.attrs.get("provenance") or "{}").get("model_spec") or info.model)
                    for info in workspace.list_sets() if info.kind == "image"})
    if len(specs) > 1:
        raise InputError(f"the workspace's images were embedded with {len(specs)} models ({', '.join(specs)}); "
                         "name the one to fine-tune", option="model")
    if not specs:
        return DEFAULT_MODEL
    reporter.warn(f"fine-tuning {specs[0]}, the model the workspace's images were embedded with")
    return specs[0]


def class_template(opts: FinetuneOptions) -> str:
    """The class description asked for (an empty one is refused by :func:`validate`), or the default."""
    return opts.class_template if opts.class_template is not None else with_domain(CLASS_TEMPLATE, opts.domain)


def templates(opts: FinetuneOptions) -> list[str]:
    return list(opts.templates) if opts.templates else [with_domain(t, opts.domain) for t in ENSEMBLE_TEMPLATES]


def validate(opts: FinetuneOptions) -> tuple[FinetuneMethod, dict[str, Any]]:
    """The method and its resolved options; bad shared settings are input errors naming the setting."""
    spec = get_finetune_method(opts.method)
    method_options = resolve_finetune_options(spec, dict(opts.options))
    if len(set(opts.classes)) < 2 or len(set(opts.classes)) != len(opts.classes):
        raise InputError("fine-tuning needs at least two distinct class names")
    check_template(class_template(opts), option="class_template")
    for template in templates(opts):
        check_template(template, option="templates")
    checks = [("epochs", opts.epochs >= 1, "must be at least 1"),
              ("steps", opts.steps is None or opts.steps >= 1, "must be at least 1"),
              ("lr", 0 < opts.lr < float("inf"), "the learning rate must be a positive finite number"),
              ("batch_size", opts.batch_size >= 2, "must be at least 2"),
              ("weight_decay", 0 <= opts.weight_decay < float("inf"), "must be a finite number of 0 or more"),
              ("warmup", opts.warmup is None or opts.warmup >= 0, "warm-up steps cannot be negative"),
              ("save_every", opts.save_every is None or opts.save_every >= 1, "must be at least 1")]
    for name, ok, message in checks:
        if not ok:
            raise InputError(message, option=name)
    return spec, method_options
