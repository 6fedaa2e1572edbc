"""IC|TC prompt templates (built-in presets, user overrides) and the request each step sends."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from clipclust.core.textfiles import read_user_text
from clipclust.errors import InputError
from clipclust.models.llm import GenerationRequest, Message

STEPS = ("step1", "step2a", "step2b", "step3")
PLACEHOLDERS = ("criterion", "k", "len", "labels", "names", "description", "extra")
PRESETS = ("generic", "action", "mood", "location", "instrument", "object")
_PRESET_ALIASES = {
    "actions": "action",
    "human action": "action",
    "moods": "mood",
    "locations": "location",
    "instruments": "instrument",
    "musical instrument": "instrument",
    "musical instruments": "instrument",
    "objects": "object",
}

Layout = Literal["instruction_first", "description_first"]
Mode = Literal["generate", "constrained", "embed", "label", "label-embed", "clip"]
MODES: tuple[str, ...] = ("generate", "constrained", "embed", "label", "label-embed", "clip")
NamesMode = Literal["auto", "llm", "frequent", "hybrid", "taxonomy"]
NAMES_MODES: tuple[str, ...] = ("auto", "llm", "frequent", "hybrid", "taxonomy")


def fill(template: str, **values: Any) -> str:
    """Replace the known ``{placeholder}``s given in ``values``; every other brace stays as written.

    ``str.format`` cannot be used: the paper's prompts contain literal braces such as
    ``{ 'a': 15 }`` and ``"{index}: {name}"``.
    """
    out = template
    for name, value in values.items():
        if name not in PLACEHOLDERS:
            raise ValueError(f"unknown placeholder {name!r}")
        out = out.replace("{" + name + "}", str(value))
    return out


@dataclass(frozen=True)
class IctcPrompts:
    """The four step templates (see ``clipclust/methods/ictc/prompt_files/README.md`` for the placeholders)."""

    step1: str
    step2a: str
    step2b: str
    step3: str
    source: str = "generic"

    @classmethod
    def builtin(cls, preset: str = "generic") -> IctcPrompts:
        """A built-in preset: ``generic`` or one of the paper's criteria (action, mood, ...)."""
        if preset not in PRESETS:
            raise InputError(f"unknown IC|TC prompt preset {preset!r}; choose one of {', '.join(PRESETS)}")
        folder = resources.files("clipclust.methods.ictc").joinpath("prompt_files", preset)
        texts = {s: folder.joinpath(f"{s}.txt").read_text(encoding="utf-8").strip() for s in STEPS}
        return cls(**texts, source=f"builtin:{preset}")

    def with_overrides(self, directory: str | Path) -> IctcPrompts:
        """Replace the steps for which ``directory`` holds a file (``step3.txt``, ``step3`` ...)."""
        d = Path(directory).expanduser()
        if not d.is_dir():
            raise InputError(f"prompt directory not found: {d}")
        found: dict[str, str] = {}
        for step in STEPS:
            for name in (f"{step}.txt", step, f"{step}.md"):
                p = d / name
                if p.is_file():
                    text = read_user_text(p).strip()
                    if not text:
                        raise InputError(f"prompt file {p} is empty")
                    found[step] = text
                    break
        if not found:
            raise InputError(
                f"{d} holds none of {', '.join(s + '.txt' for s in STEPS)}; name the files after the step "
                "they replace"
            )
        return replace(self, **found, source=f"{self.source}+{d}")


def preset_for(criterion: str) -> str:
    """The paper's preset for a one-word criterion it used (``mood`` -> mood), else ``generic``."""
    c = re.sub(r"[^\w\s]", "", criterion.strip().lower())
    c = re.sub(r"\s+", " ", c)
    c = _PRESET_ALIASES.get(c, c)
    return c if c in PRESETS and c != "generic" else "generic"


def default_prompts(
    criterion: str, preset: str = "auto", prompt_dir: str | Path | None = None
) -> IctcPrompts:
    """Templates for a criterion: a built-in preset (``auto`` = the paper's when the criterion is one
    of its words, else generic) with the files of ``prompt_dir`` overriding single steps."""
    base = IctcPrompts.builtin(preset_for(criterion) if preset == "auto" else preset)
    return base.with_overrides(prompt_dir) if prompt_dir is not None else base


def describe_prompt(
    criterion: str | None = None,
    prompts: IctcPrompts | None = None,
) -> str:
    """The step-1 (VLM) prompt for a criterion; the default follows the paper:
    "Characterize the image using a well-detailed description." + the criterion."""
    if not criterion and prompts is None:
        raise InputError("a description prompt needs a criterion or an explicit prompt")
    crit = (criterion or "").strip()
    prompts = prompts or default_prompts(crit)
    return fill(prompts.step1, criterion=crit)


def _instruction_request(
    template: str, description: str, layout: Layout, choices: Sequence[str] | None = None, **values: Any
) -> GenerationRequest:
    """System = shared instruction, user = description (the authors' layout, and a prefix the model's
    prompt cache reuses across items); ``description_first`` puts the description before the
    instruction in one user turn; a template with ``{description}`` is sent as one user turn."""
    if "{description}" in template:
        msgs: tuple[Message, ...] = ({"role": "user", "content": fill(template, description=description, **values)},)
    elif layout == "instruction_first":
        msgs = (
            {"role": "system", "content": fill(template, **values)},
            {"role": "user", "content": description},
        )
    elif layout == "description_first":
        msgs = ({"role": "user", "content": f"{description}\n\n{fill(template, **values)}"},)
    else:
        raise InputError(f"unknown layout {layout!r}; choose instruction_first or description_first")
    return GenerationRequest(msgs, tuple(choices) if choices is not None else None)


def label_request(
    description: str, criterion: str, prompts: IctcPrompts, layout: Layout = "instruction_first"
) -> GenerationRequest:
    """The step-2a call for one description."""
    return _instruction_request(prompts.step2a, description, layout, criterion=criterion)


def format_label_dict(dictionary: Mapping[str, int]) -> str:
    """The dictionary as the authors' code printed it: ``{'cat': 12, 'dog': 9}``."""
    return repr(dict(dictionary))


def names_messages(
    kept: Mapping[str, int], k: int, criterion: str, prompts: IctcPrompts, extra: str | None = None
) -> tuple[Message, ...]:
    """The step-2b conversation: the template as system message (``extra`` instructions appended or
    put at ``{extra}``) and the dictionary as ``list of labels: {...}`` / ``num_classes: K``."""
    labels = format_label_dict(kept)
    values = dict(criterion=criterion, k=k, len=len(kept))
    template = prompts.step2b
    if "{extra}" in template:
        template = fill(template, extra=extra or "")
    elif extra:
        template = f"{template}\n\n{extra.strip()}"
    if "{labels}" in template:
        return ({"role": "user", "content": fill(template, labels=labels, **values)},)
    return (
        {"role": "system", "content": fill(template, **values)},
        {"role": "user", "content": f"list of labels: {labels}\nnum_classes: {k}"},
    )


REPAIR_PROMPT = (
    'Your answer contains {m} distinct names ({found}), but exactly {k} are required. Reply with '
    'exactly {k} distinct category names for the criterion "{criterion}", one per line, in the '
    'format "{index}: {name}" with {index} from 1 to {k}, and nothing else.'
)
"""Follow-up turn when step 2b gave the wrong number of names ({m}, {found}, {k}, {criterion} are
filled; {index} and {name} stay literal)."""


def repair_message(found: Sequence[str], k: int, criterion: str) -> Message:
    text = (
        REPAIR_PROMPT.replace("{m}", str(len(found)))
        .replace("{found}", ", ".join(found) if found else "none")
        .replace("{k}", str(k))
        .replace("{criterion}", criterion)
    )
    return {"role": "user", "content": text}


def names_literal(names: Sequence[str]) -> str:
    """The names as the authors' code put them in the step-3 prompt: ``['cat', 'dog']``."""
    return repr(list(names))


def assign_request(
    description: str,
    names: Sequence[str],
    criterion: str,
    prompts: IctcPrompts,
    *,
    constrained: bool = False,
    layout: Layout = "instruction_first",
) -> GenerationRequest:
    """The step-3 call for one description (restricted to ``names`` when ``constrained``)."""
    return _instruction_request(
        prompts.step3, description, layout, choices=names if constrained else None,
        criterion=criterion, names=names_literal(names), k=len(names),
    )
