"""Description sets: item-keyed text sets (``dtype`` str) beside the embedding sets: their specs, and what
a describe run reports (their kinds and how to find them: clipclust.methods.inputs).

A description set's id hashes the describer's identity, the kind, the prompt and the decoding (plus, for
group descriptions, how the groups were made), so a re-run with the same settings extends the same set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from clipclust.store import SetSpec

def description_spec(kind: str, name: str, model: str, prompt: str, provenance: dict[str, Any],
                     key_parts: Sequence[Any] = ()) -> SetSpec:
    """An item-keyed text set made by ``model`` from ``prompt``; ``key_parts`` are the rest of its identity."""
    return SetSpec.for_model(model=model, kind=kind, prompt=prompt, key_parts=key_parts, name=name, keyed_by="item",
                             dtype="str", provenance={"kind": kind, **provenance})


def membership_spec(groups: SetSpec) -> SetSpec:
    """The group-membership set beside a group-description set: for each item, its label, group and members."""
    return SetSpec.of((groups.id, "membership"), kind="group-membership",
                      name=groups.name.replace("group-description:", "group-membership:", 1), model=groups.model,
                      prompt=groups.prompt, keyed_by=groups.keyed_by, dtype=groups.dtype,
                      provenance=groups.provenance)


@dataclass
class DescribeSummary:
    """What a describe run did: the command line prints it, tests and notebooks read it."""

    n_items: int = 0
    described: int = 0
    cached: int = 0
    empty: int = 0  # items whose answer came back empty: neither stored nor cached, a re-run asks again
    skipped: list[tuple[str, str]] = field(default_factory=list)
    set_name: str = ""
    set_id: str = ""
    kind: str = "description"
    model: str = ""
    prompt: str = ""
    n_groups: int | None = None
    seconds: float = 0.0

    def count(self, misses: int, hits: int, empty: int) -> None:
        """Add a batch's answers: ``empty`` of them (new or, from an older cache, stored) were empty."""
        new_empty = min(empty, misses)
        self.described += misses - new_empty
        self.cached += hits - (empty - new_empty)
        self.empty += empty

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_items": self.n_items, "described": self.described, "cached": self.cached, "empty": self.empty,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped], "set": self.set_name,
            "set_id": self.set_id, "kind": self.kind, "model": self.model, "prompt": self.prompt,
            "n_groups": self.n_groups, "seconds": round(self.seconds, 3),
        }
