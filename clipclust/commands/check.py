"""Is the workspace sound, and salvage what a broken one still holds: the check use case.

The reading and salvaging live in ``store/check.py``; this joins them into one report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from clipclust.store import Workspace
from clipclust.store.check import CheckReport, check_workspace, repair_workspace

__all__ = ["CheckResult", "check"]


@dataclass
class CheckResult:
    """The verdict on one workspace file and, with ``repair``, where its salvage went and what was lost."""

    cache: str
    report: CheckReport
    repaired: str | None = None
    lost: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.report.ok

    def to_dict(self) -> dict[str, Any]:
        r = self.report
        return {"cache": self.cache, "ok": r.ok, "problems": r.problems, "items": r.items, "sets": r.sets,
                "clusterings": r.clusterings, "calls": r.calls, "repaired": self.repaired, "lost": self.lost,
                "salvaged_from": r.salvaged_from or None, "lacks": r.lacks}


def check(workspace: Workspace | str | os.PathLike[str], *, repair: bool = False) -> CheckResult:
    """Read everything the file holds and test the store's invariants; with ``repair`` copy what reads into
    ``NAME.repaired.h5`` beside it (the checked file is never modified)."""
    path = workspace.path if isinstance(workspace, Workspace) else workspace
    result = CheckResult(str(path), check_workspace(path))
    if repair:
        salvaged, result.lost = repair_workspace(path)
        result.repaired = str(salvaged)
    return result
