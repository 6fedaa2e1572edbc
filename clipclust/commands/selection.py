"""Which stored clustering a command works on: shared by evaluate, export and visualize."""

from __future__ import annotations

from clipclust.errors import InputError, step
from clipclust.store import Workspace

__all__ = ["choose_clustering"]


def choose_clustering(workspace: Workspace, name: str | None) -> str:
    """The clustering a command works on: the named one, or the only one there is."""
    if not workspace.exists():
        raise InputError(f"no workspace at {workspace.path}; run {step('embed', 'IMAGES')} first or pass the "
                         "workspace's path")
    names = workspace.list_clusterings()
    if name is not None:
        if name not in names:
            raise InputError(f"no clustering named '{name}' (known: {', '.join(names) or 'none'}); "
                             f"run {step('cluster')} first")
        return name
    if not names:
        raise InputError(f"the workspace holds no clustering yet; run {step('cluster')} first")
    if len(names) > 1:
        raise InputError(f"the workspace holds {len(names)} clusterings ({', '.join(names)}); name one")
    return names[0]
