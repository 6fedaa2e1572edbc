"""The clustering methods: one package each, registered by name in :mod:`clipclust.methods.registry`.

Each method package holds its maths, its prompts, its stored states and a ``method`` module that
registers a :class:`MethodSpec` (its options, ``prepare`` to find the inputs and say what identifies a
request, ``compute`` to make the ids, ``report`` to say what it found).  ``head`` registers the one
refinement, the ESMC head, the same way.  A further method is one more package and one more line in
``BUILTIN_METHODS``; :mod:`clipclust.commands.cluster` runs any of them and stores the result, and the
command line offers each declared option as a flag.

Labels: the classic methods, IC|TC and the ESMC head see their inputs only.  The fused workflow (the
fused-embedding paper) reads the training split's labels for its majority vote, which is the method;
evaluation reads labels later.
"""

from __future__ import annotations

import importlib

from clipclust.methods.registry import (METHODS, REFINEMENTS, ClusteringSummary, ClusterRequest, MethodOutput,
                                        MethodSpec, Option, PreparedInput, RefinementSpec, get_method,
                                        register_method, register_refinement)

__all__ = [
    "BUILTIN_METHODS",
    "METHODS",
    "REFINEMENTS",
    "ClusterRequest",
    "ClusteringSummary",
    "MethodOutput",
    "MethodSpec",
    "Option",
    "PreparedInput",
    "RefinementSpec",
    "get_method",
    "load_builtin_methods",
    "register_method",
    "register_refinement",
]

# The packages shipped with clipclust, in the order the cluster help lists their options; each registers its
# methods (or, for head, its refinement) in its ``method`` module.
BUILTIN_METHODS = ("classic", "fused", "ictc", "esmc", "text", "head")


def load_builtin_methods() -> None:
    """Import every built-in package's ``method`` module (each registers its spec once)."""
    for package in BUILTIN_METHODS:
        importlib.import_module(f"{__name__}.{package}.method")
