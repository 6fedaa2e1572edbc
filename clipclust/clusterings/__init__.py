"""Named clusterings of stored sets: the library behind `clipclust cluster`.

A clustering is computed from sets already in the workspace and stored under a name together with the
request that produced it; the same request (same set, same items, same parameters) finds the stored
result instead of computing it again.  Each method is a module of this package that registers a
:class:`MethodSpec` (its options, ``prepare`` to find the inputs and say what identifies the request,
``compute`` to make the ids); a further method is one more module named in ``BUILTIN_METHODS``.

Labels: the classic methods, IC|TC and the ESMC head see their inputs only.  The fused workflow (seed
000) reads the training split's labels for its majority vote, which is the method; evaluation reads
labels later.
"""

from __future__ import annotations

import importlib

from .inputs import keys_digest, label_space, resolve_item_set, rows_for_keys, slugify
from .registry import (METHODS, ClusterRequest, MethodOutput, MethodSpec, Option, PreparedInput, get_method,
                       register_method)
from .runner import ClusteringSummary, choose_clustering, run_clustering

__all__ = [
    "BUILTIN_METHODS",
    "METHODS",
    "ClusterRequest",
    "ClusteringSummary",
    "MethodOutput",
    "MethodSpec",
    "Option",
    "PreparedInput",
    "choose_clustering",
    "get_method",
    "keys_digest",
    "label_space",
    "load_builtin_methods",
    "register_method",
    "resolve_item_set",
    "rows_for_keys",
    "run_clustering",
    "slugify",
]

# The modules that register the methods shipped with clipclust, in the order `--help` lists them.
BUILTIN_METHODS = ("classic", "fused", "ictc", "esmc")


def load_builtin_methods() -> None:
    for module in BUILTIN_METHODS:
        importlib.import_module(f"{__name__}.{module}")


load_builtin_methods()
