"""Deterministic shares of a job: shard i of n takes the items whose content hash falls in its share.

The share depends on nothing but the item's sha256 (the workspace key), so every machine decides alone,
adding files later never moves an item to another shard, a renamed or duplicated file stays in the
shard of its content, and the shards' workspaces merge (``clipclust merge``) into what one run makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

from clipclust.errors import InputError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based, as SLURM array ids and GNU parallel's {#} count) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise InputError(f"shard {self.index}/{self.count}: expected i/n with 1 <= i <= n, e.g. 1/4")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, sha256: str) -> bool:
        """Whether this shard takes the item with this content hash (hex)."""
        return self.count == 1 or int(sha256[:16], 16) % self.count == self.index - 1

    def take(self, items: Iterable[T], key: Callable[[T], str]) -> list[T]:
        return [item for item in items if self.holds(key(item))]


def parse_shard(text: str | None) -> Shard | None:
    """'i/n' (e.g. '2/8') as a Shard; None or '' means the whole job."""
    if not text:
        return None
    parts = text.strip().split("/")
    if len(parts) != 2 or not all(p.strip().isdecimal() for p in parts):  # isdigit() takes '²', int() does not
        raise InputError(f"shard '{text}': expected i/n with 1 <= i <= n, e.g. 1/4")
    return Shard(int(parts[0]), int(parts[1]))
