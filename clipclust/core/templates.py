"""Prompt templates ('<>' is replaced by a class name), class lists, class maps and built-in prompt sets."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

from clipclust.core.textfiles import read_user_text
from clipclust.errors import InputError, opt

PLACEHOLDER = "<>"

# The 32 class-agnostic prompts of the Dissecting CLIP thesis (section 3.2.1), in its order.
GENERIC_32 = (
    "a photo of an object",
    "a photo of something natural",
    "a photo of something man-made",
    "a blurry photo",
    "a close-up photo",
    "a photo taken during the day",
    "a photo taken outdoors",
    "a photo taken indoors",
    "a small object",
    "a large object",
    "an animal",
    "a machine",
    "a thing that moves",
    "a stationary object",
    "a photo of a living thing",
    "a photo of a synthetic thing",
    "a colorful object",
    "a grayscale image",
    "a smooth surface",
    "a textured object",
    "a plastic object",
    "a metallic object",
    "a flying thing",
    "a photo of something round",
    "a rectangular object",
    "a noisy image",
    "an object with wheels",
    "an object with wings",
    "an underwater object",
    "a photo from a low angle",
    "a photo from a top view",
    "a centered object",
)

BUILTIN_PROMPT_SETS = {"generic-32": GENERIC_32}


def fill(template: str, name: str) -> str:
    """'This is digit <>' + '3' -> 'This is digit 3'.  A template without '<>' is used as is."""
    return template.replace(PLACEHOLDER, name)


def check_template(template: str, option: str = "prompts") -> str:
    """The template itself, or an error naming ``option`` (the setting it came from) if it is empty or has
    no '<>': without one every class would get the same text, and zero-shot scores would mean nothing."""
    if not template.strip():
        raise InputError(f"empty {opt(option)}; give a template such as 'This is digit <>'")
    if PLACEHOLDER not in template:
        raise InputError(f"{opt(option)} {template!r} has no '<>', so every class would get the same text; put "
                         "'<>' where the class name goes, e.g. 'This is digit <>'")
    return template


def parse_classes(text: str | None = None, file: str | None = None) -> list[str] | None:
    """Classes from a comma-separated text or a file (one per line, '#' comments); None if neither."""
    if text and file:
        raise InputError(f"pass either {opt('classes')} or {opt('classes_file')}, not both")
    if file:
        path = Path(file)
        if not path.is_file():
            raise InputError(f"classes file not found: {file}")
        names = [ln.strip() for ln in read_user_text(path).splitlines()]
        names = [n for n in names if n and not n.startswith("#")]
    elif text is not None:
        names = [n.strip() for n in text.split(",") if n.strip()]
    else:
        return None
    if not names:
        raise InputError("the class list is empty; give at least one class name")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"duplicate class names: {', '.join(dupes)}")
    return names


def read_class_map(path: str) -> dict[str, str]:
    """Label -> group from a CSV (label,group) or a JSON object; used for grouped or swapped prompts."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"class map not found: {path}")
    text = read_user_text(file)
    if file.suffix.lower() == ".json":
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc.msg}); expected an object label -> group") from None
        if not isinstance(mapping, dict):
            raise InputError(f"{path}: expected a JSON object label -> group")
        return {str(k): str(v) for k, v in mapping.items()}
    out: dict[str, str] = {}
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as exc:  # a field past csv's size limit
        raise InputError(f"{path}: not readable as CSV ({exc})") from None
    for lineno, row in enumerate(rows, start=1):
        if not row:
            continue
        if len(row) < 2:
            raise InputError(f"{path}:{lineno}: expected 'label,group'")
        if lineno == 1 and row[0].strip().lower() == "label":
            continue
        out[row[0].strip()] = row[1].strip()
    if not out:
        raise InputError(f"{path}: the class map is empty")
    return out


def read_prompt_set(spec: str) -> tuple[str, list[str]]:
    """'builtin:generic-32' or a text file of prompts (one per line) -> (identity, prompts)."""
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name not in BUILTIN_PROMPT_SETS:
            known = ", ".join(f"builtin:{k}" for k in BUILTIN_PROMPT_SETS)
            raise InputError(f"unknown built-in prompt set '{spec}' (known: {known})")
        return spec, list(BUILTIN_PROMPT_SETS[name])
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"prompt set not found: {spec} (a text file with one prompt per line, or builtin:generic-32)")
    prompts = [ln.strip() for ln in read_user_text(path).splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise InputError(f"{spec}: no prompts in the file")
    return f"file:{path.name}", list(dict.fromkeys(prompts))


def prompt_texts(template: str, classes: Sequence[str]) -> list[str]:
    return [fill(template, c) for c in classes]
