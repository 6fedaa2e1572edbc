"""clipclust: cluster and classify images by what a person asks for.

The public face, as the command line reads::

    import clipclust as cc
    ws = cc.Workspace("digits.h5")
    cc.embed(ws, ["digits/"], model="ViT-B-32/laion2b_s34b_b79k", prompts=["This is digit <>"])
    cc.cluster(ws, "kmeans", k=10)
    print(cc.evaluate(ws).to_dict())

One function per command (:mod:`clipclust.api`), the workspace, the errors and the report dataclasses.
Names are imported on first use, so ``import clipclust`` loads neither torch nor the models.
"""

from __future__ import annotations

import importlib
from typing import Any

from clipclust.version import __version__

_EXPORTS = {
    "Workspace": "clipclust.store",
    "SetSpec": "clipclust.store",
    "ClipclustError": "clipclust.errors",
    "InputError": "clipclust.errors",
    **{name: "clipclust.api" for name in ("embed", "describe", "import_descriptions", "discover", "cluster", "finetune",
                                          "evaluate", "visualize", "report", "export", "merge", "check", "info")},
    "EmbedOptions": "clipclust.commands.embed",
    "EmbedSummary": "clipclust.commands.embed",
    "DescribeSummary": "clipclust.commands.describe",
    "ImportSummary": "clipclust.commands.describe",
    "DiscoverReport": "clipclust.commands.discover",
    "ClusteringSummary": "clipclust.methods.registry",
    "FinetuneOptions": "clipclust.commands.finetune",
    "FinetuneSummary": "clipclust.commands.finetune",
    "EvaluationResult": "clipclust.commands.evaluate",
    "VisualSummary": "clipclust.commands.visualize",
    "MergeReport": "clipclust.commands.merge",
    "ReportSummary": "clipclust.commands.report",
    "CheckResult": "clipclust.commands.check",
    "WorkspaceInfo": "clipclust.commands.info",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clipclust' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
