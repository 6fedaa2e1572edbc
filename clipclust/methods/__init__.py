"""The clustering methods: one package each, registered by name in :mod:`clipclust.methods.registry`.

Each method package holds its maths, its prompts, its stored states and a ``method`` module that
registers a :class:`MethodSpec` (its options, ``prepare`` to find the inputs and say what identifies a
request, ``compute`` to make the ids).  A further method is one more package and one more line in
``BUILTIN_METHODS``; :mod:`clipclust.commands.cluster` runs any of them and stores the result.

Labels: the classic methods, IC|TC and the ESMC head see their inputs only.  The fused workflow (seed
000) reads the training split's labels for its majority vote, which is the method; evaluation reads
labels later.
"""

from __future__ import annotations

import importlib

from clipclust.methods.registry import (METHODS, ClusterRequest, MethodOutput, MethodSpec, Option, PreparedInput,
                                        get_method, register_method)

__all__ = [
    "BUILTIN_METHODS",
    "METHODS",
    "ClusterRequest",
    "MethodOutput",
    "MethodSpec",
    "Option",
    "PreparedInput",
    "get_method",
    "load_builtin_methods",
    "register_method",
]

# The method packages shipped with clipclust, in the order `--help` lists them; each registers itself in
# its ``method`` module.
BUILTIN_METHODS = ("classic", "fused", "ictc", "esmc")


def load_builtin_methods() -> None:
    """Import every built-in method package's ``method`` module (each registers its spec once)."""
    for package in BUILTIN_METHODS:
        importlib.import_module(f"{__name__}.{package}.method")
