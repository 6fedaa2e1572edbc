"""What a workspace holds: its size, items by split and label, each stored set, clusterings, cached calls."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any

from clipclust.errors import InputError, opt, step
from clipclust.store import Workspace

__all__ = ["SetSummary", "WorkspaceInfo", "info"]


@dataclass
class SetSummary:
    """One stored set: what identifies it, its shape and the bytes it takes (or would take, if computed on read)."""

    id: str
    name: str
    kind: str
    shape: list[int]
    model: str
    prompt: str
    keyed_by: str
    created: str
    updated: str
    bytes: int
    derived: bool
    bytes_not_stored: int


@dataclass
class WorkspaceInfo:
    """The workspace at a glance; ``splits`` counts items per split, then per label ("(none)" when blank)."""

    cache: str
    size_on_disk: int
    items: int
    splits: dict[str, dict[str, int]]
    sets: list[SetSummary]
    clusterings: list[str]
    cached_calls: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def info(workspace: Workspace) -> WorkspaceInfo:
    """What ``workspace`` holds, reading no rows: item counts are kept per split and label, set sizes are
    the datasets' storage sizes."""
    if not workspace.exists():
        raise InputError(f"no workspace at {workspace.path}; run {step('embed', 'IMAGES')} first or pass {opt('cache')}")
    set_bytes = workspace.set_storage_bytes()
    by_split: dict[str, Counter[str]] = {}
    for (split, label), n in workspace.item_counts().items():
        by_split.setdefault(split or "(none)", Counter())[label or "(none)"] += n
    sets = [SetSummary(id=s.id, name=s.name, kind=s.kind, shape=list(s.shape), model=s.model, prompt=s.prompt,
                       keyed_by=s.keyed_by, created=s.created, updated=s.updated, bytes=set_bytes.get(s.id, 0),
                       derived=s.derived, bytes_not_stored=s.derived_bytes)
            for s in workspace.list_sets()]
    return WorkspaceInfo(
        cache=str(workspace.path),
        size_on_disk=workspace.path.stat().st_size,
        items=sum(sum(c.values()) for c in by_split.values()),
        splits={s: dict(sorted(c.items())) for s, c in sorted(by_split.items())},
        sets=sets,
        clusterings=workspace.list_clusterings(),
        cached_calls=workspace.count_calls(),
    )
