"""The plan of a run: which sets it writes and which texts it encodes, decided before any model is loaded.

Each set is a :class:`~clipclust.store.SetSpec` whose id hashes the model identity, the kind, the prompt
and what else changes its rows (classes, class map, prompt set), so a later run finds what an earlier
one stored.  Every template gives a class-keyed text set and the item-keyed sets derived from it
(zero-shot similarities, fused vectors); an agnostic prompt set gives its text set and similarities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from clipclust.commands.embed.options import FUSE_MODES, EmbedOptions
from clipclust.core.templates import check_template, prompt_texts, read_prompt_set
from clipclust.errors import InputError, opt
from clipclust.store import SetSpec

FUSE_NOTE = "mean of L2-normalised image and text embeddings"
AGNOSTIC_NOTE = "raw cosine similarities; temperature is applied where they are used"


@dataclass
class TextSet:
    """A class-keyed set of prompt embeddings, and the item-keyed sets derived from it."""

    kind: str  # "prompt" or "agnostic"
    template: str  # the template, or the prompt-set identity for agnostic prompts
    classes: list[str]
    texts: list[str]
    spec: SetSpec
    derived: list[SetSpec]
    vectors: np.ndarray | None = None  # the text vectors in class order, once encoded or read


@dataclass(frozen=True)
class WantedTexts:
    """The texts a run asks for, checked before the model is identified: bad input costs nothing."""

    classes: list[str] = field(default_factory=list)  # what each template is filled with
    templates: list[str] = field(default_factory=list)
    agnostic: tuple[str, list[str]] | None = None  # (prompt-set identity, prompts)


@dataclass
class EmbedPlan:
    """Every set a run writes, and the class each item's fused-label row is fused with."""

    image: SetSpec
    texts: list[TextSet]
    item_class: Callable[[str], str | None]

    def stamp(self, run: Mapping[str, Any]) -> None:
        """Add what the loaded model says about this run (precision, device, loader) to every provenance."""
        self.image = _stamped(self.image, run)
        for ts in self.texts:
            ts.spec = _stamped(ts.spec, run)
            ts.derived = [_stamped(d, run) for d in ts.derived]

    def set_names(self) -> list[str]:
        return [self.image.name] + [ts.spec.name for ts in self.texts] + [d.name for ts in self.texts for d in ts.derived]


def _stamped(spec: SetSpec, run: Mapping[str, Any]) -> SetSpec:
    return spec.replace_fields(provenance={**spec.provenance, **run})


def _prompt_classes(opts: EmbedOptions, labels: dict[str, str]) -> list[str]:
    """The class names prompts are filled with: as given, else the labels (through the class map)."""
    if opts.classes:
        classes = list(opts.classes)
    else:
        found = sorted({lab for lab in labels.values() if lab})
        if opts.class_map:
            found = sorted({opts.class_map.get(lab, "") for lab in found} - {""})
        if not found:
            raise InputError(f"{opt('prompts')} needs class names: pass {opt('classes')} a,b,c or "
                             f"{opt('classes_file')}, or use label folders")
        classes = found
    if opts.class_map and opts.classes is None:
        unmapped = sorted({lab for lab in labels.values() if lab and lab not in opts.class_map})
        if unmapped:
            raise InputError(f"{opt('class_map')} has no group for label(s) {', '.join(unmapped[:5])}")
    return classes


def wanted_texts(opts: EmbedOptions, labels: dict[str, str]) -> WantedTexts:
    """Classes, templates and agnostic prompts of a run; ``labels`` maps each item's sha256 to its label."""
    classes = _prompt_classes(opts, labels) if opts.prompts else []
    templates = [check_template(t) for t in opts.prompts]
    return WantedTexts(classes, templates, read_prompt_set(opts.agnostic) if opts.agnostic else None)


def _spec(model_id: str, opts: EmbedOptions, kind: str, name: str, prompt: str, keyed_by: str,
          provenance: dict[str, Any], key_parts: Sequence[Any] = (), attrs: Mapping[str, Any] | None = None) -> SetSpec:
    return SetSpec.for_model(
        model=model_id, kind=kind, prompt=prompt, key_parts=key_parts, name=name, keyed_by=keyed_by,
        dtype=provenance.get("storage", "float32"), attrs=attrs or {},
        provenance={"model_spec": opts.model, "model_identity": model_id, "kind": kind, **provenance},
    )


def _prompt_set(model_id: str, opts: EmbedOptions, template: str, classes: list[str], base: dict[str, Any]) -> TextSet:
    suffix = f" [map:{opts.class_map_name}]" if opts.class_map else ""
    parts = (classes, sorted((opts.class_map or {}).items()))
    texts = prompt_texts(template, classes)
    prov = {**base, "template": template, "classes": classes, "prompts": texts, "class_map": opts.class_map or {}}
    attrs = {"classes": json.dumps(classes)}
    text = _spec(model_id, opts, "text", f"text:{template}{suffix}", template, "class", prov, parts)
    derived = [_spec(model_id, opts, "zeroshot", f"zeroshot:{template}{suffix}", template, "item", prov, parts, attrs)]
    for mode in FUSE_MODES:
        if mode in opts.fuse:
            kind = f"fused-{mode}"
            derived.append(_spec(model_id, opts, kind, f"{kind}:{template}{suffix}", template, "item",
                                 {**prov, "fuse": FUSE_NOTE}, parts, attrs))
    return TextSet("prompt", template, classes, texts, text, derived)


def _agnostic_set(model_id: str, opts: EmbedOptions, identity: str, prompts: list[str], base: dict[str, Any]) -> TextSet:
    prov = {**base, "prompt_set": identity, "prompts": prompts, "note": AGNOSTIC_NOTE}
    text = _spec(model_id, opts, "text", f"text:{identity}", identity, "class", prov, (prompts,))
    derived = [_spec(model_id, opts, "agnostic", f"agnostic:{identity}", identity, "item", prov, (prompts,))]
    return TextSet("agnostic", identity, prompts, prompts, text, derived)


def plan_sets(model_id: str, opts: EmbedOptions, wanted: WantedTexts, labels: dict[str, str]) -> EmbedPlan:
    """The run's sets for the model ``model_id``: the image set, then each template's, then the agnostic ones."""
    base = {"precision": opts.precision, "batch_size": opts.batch_size, "storage": opts.store_dtype}
    image = _spec(model_id, opts, "image", "image", "", "item", base)
    texts = [_prompt_set(model_id, opts, t, wanted.classes, base) for t in wanted.templates]
    if wanted.agnostic is not None:
        texts.append(_agnostic_set(model_id, opts, *wanted.agnostic, base))

    def item_class(sha: str) -> str | None:
        label = labels.get(sha, "")
        if not label:
            return None
        return opts.class_map.get(label, None) if opts.class_map else label

    return EmbedPlan(image, texts, item_class)
