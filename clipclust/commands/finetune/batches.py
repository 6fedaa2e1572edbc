"""What fine-tuning trains on: the workspace's image items (never their labels), the image and group
descriptions a method reads (made by `describe`), and a dataset that decodes and augments them reproducibly.

Augmentation is seeded per (run seed, epoch, item), so a run resumed from a checkpoint sees exactly the
images an uninterrupted run would have seen, whatever the number of loader workers.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from clipclust.errors import step
from clipclust.methods.contrastive import CLASS_TEMPLATE
from clipclust.store import SetInfo, Workspace
from clipclust.core.images import UnreadableImage, decode_image
from clipclust.errors import InputError
from clipclust.methods.latteclip.prompts import latteclip_prompt

if TYPE_CHECKING:  # pragma: no cover
    import torch

DESCRIPTION_KIND = {"image": "description", "group": "group-description"}
# LatteCLIP's augmentation: OpenCLIP's random resized crop plus SimCLR colour jitter and grayscale.
AUGMENTATION = {"scale": (0.9, 1.0), "color_jitter": (0.4, 0.4, 0.4, 0.1), "color_jitter_prob": 0.8,
                "gray_scale_prob": 0.2}


class DescriptionsError(InputError):
    """Image or group descriptions missing, ambiguous or describing nothing.

    The message says how to make them with the describe step's settings; it is rendered when shown, so
    that each caller spells those settings its own way (the CLI as flags), from ``kind`` and ``domain``.
    """

    def __init__(self, problem: str, kind: str, reason: str, domain: str | None):
        super().__init__(problem)
        self.kind, self.reason, self.domain = kind, reason, domain

    def render(self, option: Callable[[str], str], command: Callable[[str, str], str]) -> str:
        problem = super().render(option, command)
        if self.reason == "ambiguous":
            return f"{problem}; name the one to use ({option(self.kind + '_descriptions')} NAME)"
        hint = _describe_hint(self.kind, self.domain, option, command)
        if self.reason == "missing":
            return f"{problem}; {hint}; or train with class descriptions only ({option('texts')} class)"
        return f"{problem}; {hint}"


@dataclass
class TrainItems:
    """The items to train on, in workspace order, with their descriptions (None where an item has none)."""

    keys: list[str]
    paths: list[str]
    described: dict[str, list[str | None]] = field(default_factory=dict)  # "image"/"group" -> text per item
    sources: dict[str, str] = field(default_factory=dict)  # "image"/"group" -> "name (id)" of the set used
    missing_files: int = 0

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, rows: Sequence[int]) -> "TrainItems":
        return TrainItems([self.keys[i] for i in rows], [self.paths[i] for i in rows],
                          {k: [v[i] for i in rows] for k, v in self.described.items()}, dict(self.sources),
                          self.missing_files)


def _describe_hint(kind: str, domain: str | None, option: Callable[[str], str],
                   command: Callable[[str, str], str]) -> str:
    what = domain or "object"
    if kind == "image":
        made = command("describe", f'{option("vlm")} VLM {option("prompt")} "{latteclip_prompt(what)}"')
        return f"make them with: {made} (or import them with {command('describe', option('from_file') + ' FILE')})"
    made = command("describe", f"{option('vlm')} VLM {option('criterion')} {what} {option('group_size')} 4 "
                               f"{option('group_by')} zeroshot")
    zero_shot = command("embed", f'{option("prompt")} "{CLASS_TEMPLATE}"')
    return f"make them with: {made} (after {zero_shot})"


def find_descriptions(workspace: Workspace, kind: str, name: str | None, domain: str | None) -> SetInfo:
    """The description set to read for 'image' or 'group' texts: the named one, else the only one stored
    (preferring those made for ``domain``); missing or ambiguous sets are errors that say what to do."""
    wanted = DESCRIPTION_KIND[kind]
    if name:
        info = workspace.resolve_set(name)
        if info.kind != wanted:
            raise InputError(f"set '{info.name}' holds {info.kind} rows, not {wanted} rows")
        return info
    sets = [s for s in workspace.list_sets() if s.kind == wanted and s.keyed_by == "item"]
    if domain and len(sets) > 1:
        sets = [s for s in sets if s.name.startswith(f"{wanted}:{domain}")] or sets
    if not sets:
        raise DescriptionsError(f"the workspace holds no {kind} descriptions", kind, "missing", domain)
    if len(sets) > 1:
        listing = "; ".join(f"{s.name} (id {s.id})" for s in sets)
        raise DescriptionsError(f"several {kind} description sets are stored ({listing})", kind, "ambiguous", domain)
    return sets[0]


def collect_items(workspace: Workspace, *, split: str | None, descriptions: Mapping[str, str | None],
                  domain: str | None) -> TrainItems:
    """Items with an image file (optionally of one split) and their descriptions of each kind in
    ``descriptions`` ("image", "group"; the set's name, or None for the only one stored).

    Reads only keys, paths and splits from the item table: labels are never looked at.
    """
    if not workspace.exists():
        raise InputError(f"no workspace at {workspace.path}; run {step('embed', 'IMAGES')} first")
    table = workspace.items()
    keys: list[str] = []
    paths: list[str] = []
    missing = 0
    for i, (key, path) in enumerate(zip(table.sha256, table.path)):
        if split and table.split[i] != split:
            continue
        if not path or not Path(path).is_file():
            missing += 1
            continue
        keys.append(key)
        paths.append(path)
    if not keys:
        where = f" of split '{split}'" if split else ""
        raise InputError(f"the workspace holds no image item{where} whose file exists; run {step('embed', 'IMAGES')}")
    items = TrainItems(keys, paths, missing_files=missing)
    for kind, name in descriptions.items():
        info = find_descriptions(workspace, kind, name, domain)
        set_keys, rows = workspace.read_set(info.id)
        text_of = {k: str(t) for k, t in zip(set_keys, rows) if str(t).strip()}
        items.described[kind] = [text_of.get(k) for k in keys]
        items.sources[kind] = f"{info.name} (id {info.id})"
        if not any(t is not None for t in items.described[kind]):
            raise DescriptionsError(f"'{info.name}' describes none of the {len(keys)} items to train on", kind,
                                    "empty", domain)
    return items


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Python's and torch's CPU random state set to ``seed`` inside, restored after (open_clip's colour
    jitter draws from ``random``, its crops from torch)."""
    import torch

    state = random.getstate()
    random.seed(seed)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        random.setstate(state)


def item_seed(seed: int, epoch: int, row: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + row) % (2**31 - 1)


class ImageDataset:
    """Decoded, transformed images by row; ``epoch`` and ``seed`` fix each item's augmentation.

    An unreadable file comes back as None (the caller decides: skip it or stop), so that a loader worker
    never raises a multi-line wrapped exception."""

    def __init__(self, paths: Sequence[str], transform: Callable[[Any], "torch.Tensor"], seed: int = 0,
                 min_size: int | None = None):
        self.paths = list(paths)
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.min_size = min_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> tuple["torch.Tensor | None", int]:
        try:
            image = decode_image(Path(self.paths[row]).read_bytes(), self.min_size)
        except (OSError, UnreadableImage):
            return None, row
        with seeded(item_seed(self.seed, self.epoch, row)):
            return self.transform(image), row


def collate(batch: list[tuple[Any, int]]) -> tuple["torch.Tensor | None", list[int], list[int]]:
    """Stack the decodable images; also return the rows that were and were not decodable."""
    import torch

    good = [(x, r) for x, r in batch if x is not None]
    bad = [r for x, r in batch if x is None]
    pixels = torch.stack([x for x, _ in good]) if good else None
    return pixels, [r for _, r in good], bad


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's shuffled batches; the last partial batch is dropped (as OpenCLIP does) unless it is the only one."""
    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    size = min(batch_size, n)
    return [order[i : i + size] for i in range(0, n - size + 1, size)]


def loader(dataset: ImageDataset, batches: list[list[int]], workers: int, pin_memory: bool = False) -> Any:
    import torch

    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate,
                                       pin_memory=pin_memory)
