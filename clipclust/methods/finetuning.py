"""The fine-tuning method registry: how LatteCLIP, FLYP or a further method plugs into `finetune`.

The training loop (clipclust.commands.finetune) owns what every method shares: the items, the base
model's zero-shot pseudo-labels, the optimiser and its schedule, AMP and the checkpoints.  A method is one
:class:`FinetuneMethod` registered under its name from its own package's ``method`` module: the options
it declares, the descriptions it reads, what its run records, and an :class:`Objective` that turns a
batch's image features into a loss.  The loop never names a method, so a new one is one more package and
one more entry in ``BUILTIN_FINETUNE_METHODS``.

Errors name options (``alpha``), never command-line flags; the CLI makes each declared option a flag.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from clipclust.errors import InputError
from clipclust.methods.registry import Option, resolve_options

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

__all__ = [
    "BUILTIN_FINETUNE_METHODS",
    "FINETUNE_METHODS",
    "FinetuneMethod",
    "Objective",
    "TextEncoder",
    "finetune_methods",
    "get_finetune_method",
    "register_finetune_method",
    "resolve_finetune_options",
]

# The fine-tuning packages shipped with clipclust, in the order help lists them.
BUILTIN_FINETUNE_METHODS = ("latteclip", "flyp")


class TextEncoder(Protocol):
    """What the training loop lends an objective: the run's class texts and its text encoder."""

    class_texts: list[str]

    @property
    def logit_scale(self) -> "torch.Tensor": ...

    def encode_texts(self, texts: Sequence[str]) -> "torch.Tensor":
        """fp32 features with gradients (the encoder runs under the run's autocast)."""

    def frozen_class_features(self, texts: Sequence[str]) -> "torch.Tensor":
        """Unit-length features without gradients."""

    def text_targets(self, label_sets: Sequence["torch.Tensor"], rows: Sequence[int]
                     ) -> tuple[list["torch.Tensor"], "torch.Tensor", "torch.Tensor"]:
        """One encoder call for a batch: the class-text features of each label in each of ``label_sets``,
        and the (N, K, D) description features of ``rows`` with their (N, K) presence mask."""


class Objective(Protocol):
    """One run of a method: the state it starts from, its loss per step, what a checkpoint keeps of it,
    and the classifier the tuned model leaves for evaluate."""

    def start(self, texts: TextEncoder) -> None:
        """A new run, after the zero-shot pass (the model in eval mode, no gradients needed)."""

    def loss(self, texts: TextEncoder, images: "torch.Tensor", zs_labels: "torch.Tensor", rows: list[int]
             ) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(loss to minimise, the batch's pseudo-labels now) for image features with gradients and their
        zero-shot pseudo-labels; the loop compares the two label sources as 'agreement'."""

    def state(self) -> dict[str, Any]:
        """Tensors a checkpoint saves so that a resumed run goes on exactly."""

    def restore(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state` saved."""

    def classifier(self, texts: TextEncoder) -> tuple["np.ndarray", str]:
        """(C, D) class vectors and their kind ("prototypes", "class-texts"), the model in eval mode."""


def _no_descriptions(options: dict[str, Any]) -> dict[str, str | None]:
    return {}


@dataclass(frozen=True)
class FinetuneMethod:
    """One fine-tuning method.

    ``objective(options)`` makes a run's :class:`Objective`; ``descriptions(options)`` says
    which description kinds ("image", "group") the run reads, each with the set asked for (None: the only
    one stored); ``params(options, sources)``, when given, is what the run records in its checkpoint
    instead of its options marked ``identity`` (``sources``: kind -> the set used).  A resumed run must record
    the same.  ``options`` are the registry's :class:`~clipclust.methods.registry.Option`, as a clustering
    method's are, so the CLI makes them flags the same way.
    """

    name: str
    title: str  # the method's name in prose: "LatteCLIP"
    summary: str  # what it does, one phrase
    objective: Callable[[dict[str, Any]], Objective]
    options: tuple[Option, ...] = ()
    descriptions: Callable[[dict[str, Any]], dict[str, str | None]] = _no_descriptions
    params: Callable[[dict[str, Any], dict[str, str]], dict[str, Any]] | None = None

    def record(self, options: dict[str, Any], sources: dict[str, str]) -> dict[str, Any]:
        """What a run of this method records (JSON values) and a resumed run must repeat."""
        if self.params is not None:
            return self.params(options, sources)
        return {o.name: list(options[o.name]) if isinstance(options[o.name], tuple) else options[o.name]
                for o in self.options if o.identity}


FINETUNE_METHODS: dict[str, FinetuneMethod] = {}


def register_finetune_method(spec: FinetuneMethod) -> FinetuneMethod:
    """Add (or replace) a method; each method package's ``method`` module registers itself when imported."""
    FINETUNE_METHODS[spec.name] = spec
    return spec


def finetune_methods() -> dict[str, FinetuneMethod]:
    """Every registered method, after importing the built-in packages (which register themselves)."""
    for package in BUILTIN_FINETUNE_METHODS:
        importlib.import_module(f"clipclust.methods.{package}.method")
    return FINETUNE_METHODS


def get_finetune_method(name: str) -> FinetuneMethod:
    methods = finetune_methods()
    if name not in methods:
        names = list(methods)
        expected = " or ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " or " + names[-1]
        raise InputError(f"unknown fine-tuning method '{name}': expected {expected}", option="method")
    return methods[name]


def resolve_finetune_options(spec: FinetuneMethod, given: dict[str, Any]) -> dict[str, Any]:
    """The method's options: given values checked, defaults filled; an option of another fine-tuning method,
    or of none, is refused (the clustering registry's rules, checked against this registry)."""
    own, _ = resolve_options(spec, given, finetune_methods())
    return own
