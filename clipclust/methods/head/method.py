"""The head refinement's registry entry: its settings, the part of them that identifies a result, the call.

A method that accepts ``refine="head"`` (kmeans, esmc) adds :func:`head_identity` to its reuse identity
and refines its vectors with :func:`refine_with_head`; the settings reach the head from here alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clipclust.methods.registry import Option, RefinementSpec, at_least_one, identity_options, register_refinement

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from clipclust.methods.head.training import HeadResult


def _fraction(value: Any) -> float:
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{value}: expected a fraction in (0, 1], e.g. 0.3")
    return float(value)


def _positive(value: Any) -> float:
    if not float(value) > 0.0:
        raise ValueError(f"{value}: expected a number above 0, e.g. 1e-3")
    return float(value)


HEAD_OPTIONS = (
    Option("ratio", type=float, default=0.3, check=_fraction,
           help="fraction of each k-means cluster nearest its centroid used as pseudo-labels"),
    Option("epochs", type=int, default=100, check=at_least_one, help="training epochs"),
    Option("lr", type=float, default=1e-3, check=_positive,
           help="Adam learning rate (the paper: 1e-4 with 200 epochs)"),
    Option("batch_size", type=int, default=256, check=at_least_one, help="training batch size"),
    Option("device", default="auto", identity=False, help="where the head trains: auto, cpu or cuda[:N]"),
)

HEAD = register_refinement(RefinementSpec(
    "head", "the ESMC head: an MLP trained on the points nearest each k-means centroid labels every point",
    HEAD_OPTIONS))


def head_identity(settings: dict[str, Any]) -> dict[str, Any]:
    """The head's settings that change its result, for the reuse identity of a refined clustering."""
    return identity_options(HEAD_OPTIONS, settings)


def refine_with_head(X: "np.ndarray", k: int, seed: int, settings: dict[str, Any]) -> "HeadResult":
    """The ESMC head on ``X`` with the request's resolved head settings."""
    from clipclust.methods.head.training import esmc_head

    return esmc_head(X, k, seed=seed, **{o.name: settings[o.name] for o in HEAD_OPTIONS})
