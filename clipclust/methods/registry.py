"""The method registry: what a clustering request holds and how a method plugs in.

A method is one :class:`MethodSpec` registered under its name.  It declares the method-specific
settings it accepts as :class:`Option` entries; a request's ``options`` are checked against them
before ``prepare`` runs, so each method validates only what is its own and a new method arrives in a
module of its own without editing the others (see ``classic.py``, ``fused.py``, ``ictc.py``).

Errors name request fields and options (``k``, ``min_count``), never command-line flags: the CLI maps
an :class:`~clipclust.errors.InputError`'s ``option`` to its flag.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from clipclust.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from clipclust.store import SetInfo, Workspace
    from clipclust.core.progress import Reporter

__all__ = [
    "DEFAULT_K_RANGE",
    "METHODS",
    "REFINEMENTS",
    "ClusterRequest",
    "MethodOutput",
    "MethodSpec",
    "Option",
    "PreparedInput",
    "at_least_one",
    "get_method",
    "one_of",
    "register_method",
    "resolve_options",
]

DEFAULT_K_RANGE = (2, 10)
REFINEMENTS = ("head",)


@dataclass
class ClusterRequest:
    """What every method shares; method-specific settings go in ``options`` (checked by the method's spec).

    ``k`` is an int, ``"auto"`` (silhouette over ``k_range``) or None (the method's default, when it has
    one).  ``seed`` None means the method's own default.  ``refine="head"`` trains the ESMC head
    (``ratio``, ``epochs``, ``lr``, ``batch_size``, ``device``) on the method's k-means pseudo-labels.
    """

    method: str = "kmeans"
    on: str | None = None
    k: int | str | None = None
    seed: int | None = None
    name: str | None = None
    model: str | None = None
    split: str | None = None
    refine: str | None = None
    ratio: float = 0.3
    epochs: int = 100
    lr: float = 1e-3
    batch_size: int = 256
    device: str = "auto"
    k_range: tuple[int, int] = DEFAULT_K_RANGE
    force: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, **fields: Any) -> "ClusterRequest":
        """A request from keywords; names that are not common fields are method options (``criterion=...``)."""
        common = {f.name for f in dataclasses.fields(cls)}
        options = dict(fields.pop("options", None) or {})
        options.update({key: fields.pop(key) for key in list(fields) if key not in common})
        return cls(**fields, options=options)

    def option(self, name: str, default: Any = None) -> Any:
        """A method option's value (after validation the spec's default fills what was not given)."""
        value = self.options.get(name)
        return default if value is None else value


@dataclass(frozen=True)
class Option:
    """One method-specific setting: its name, default and an optional check that returns the clean value.

    ``check`` raises ``InputError(..., option=name)`` (or ValueError, turned into one) for a bad value.
    ``identity`` False keeps a setting out of the reuse identity (threads, concurrency: how, not what).
    """

    name: str
    default: Any = None
    help: str = ""
    check: Callable[[Any], Any] | None = None
    identity: bool = True


class PreparedInput:
    """What a method's ``prepare`` found: the inputs to cluster and what identifies the request.

    ``identity`` is JSON-able and complete: two requests with equal identities give the same result,
    so a stored clustering whose identity is equal is reused.  ``vectors`` may be a zero-argument
    callable, read only when the method really computes (a reused clustering never reads its set).
    ``sets`` maps a role ("input", "train", "test") to a stored set; ``context`` carries what ``compute``
    needs; ``cleanup`` releases what prepare opened (an LLM), reused or not.
    """

    def __init__(self, identity: dict[str, Any], default_name: str, sets: dict[str, "SetInfo"], keys: list[str],
                 vectors: "np.ndarray | Callable[[], np.ndarray]", context: dict[str, Any] | None = None,
                 cleanup: Callable[[], None] | None = None):
        self.identity = identity
        self.default_name = default_name
        self.sets = sets
        self.keys = keys
        self._vectors = vectors
        self.context = context if context is not None else {}
        self.cleanup = cleanup

    @property
    def vectors(self) -> "np.ndarray":
        if callable(self._vectors):
            self._vectors = self._vectors()
        return self._vectors


@dataclass
class MethodOutput:
    """What a method's ``compute`` returns, stored as the clustering (``details`` go into its params)."""

    keys: list[str]
    ids: "np.ndarray"
    centroids: "np.ndarray | None" = None
    cluster_names: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """One method: how to read its inputs, how to compute it, and the options it accepts."""

    name: str
    summary: str
    prepare: Callable[["Workspace", ClusterRequest], PreparedInput]
    compute: Callable[[PreparedInput, ClusterRequest, "Reporter"], MethodOutput]
    options: tuple[Option, ...] = ()
    refinable: bool = False  # accepts refine="head"


METHODS: dict[str, MethodSpec] = {}


def one_of(*choices: str) -> Callable[[Any], str]:
    """An :class:`Option` check: the value must be one of ``choices``."""
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"'{value}': expected one of {', '.join(choices)}")
        return str(value)

    return check


def at_least_one(value: Any) -> int:
    """An :class:`Option` check: a whole number of 1 or more (counts, sizes, neighbours)."""
    number = int(value)
    if number < 1:
        raise ValueError(f"{value}: expected a whole number of 1 or more")
    return number


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add (or replace) a method; each method module registers itself when imported."""
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    from clipclust.methods import load_builtin_methods

    load_builtin_methods()
    spec = METHODS.get(name)
    if spec is None:
        raise InputError(f"'{name}' is not a method; expected one of {', '.join(sorted(METHODS))}", option="method")
    return spec


def resolve_options(spec: MethodSpec, given: dict[str, Any]) -> dict[str, Any]:
    """The method's options: given values checked, defaults filled; an option of another method is refused."""
    declared = {opt.name: opt for opt in spec.options}
    resolved: dict[str, Any] = {}
    for key, value in given.items():
        if value is None:
            continue
        if key not in declared:
            owners = sorted(m.name for m in METHODS.values() if any(o.name == key for o in m.options))
            where = f"applies to the {' or '.join(owners)} method" if owners else "is not a setting of any method"
            raise InputError(f"{where}, not {spec.name}", option=key)
        check = declared[key].check
        if check is not None:
            try:
                value = check(value)
            except ValueError as exc:
                raise InputError(str(exc), option=key) from None
        resolved[key] = value
    for name, opt in declared.items():
        resolved.setdefault(name, opt.default)
    return resolved


def identity_options(spec: MethodSpec, options: dict[str, Any]) -> dict[str, Any]:
    """The options that change the result (those marked ``identity``), for the reuse identity."""
    keep = {opt.name for opt in spec.options if opt.identity}
    return {key: value for key, value in options.items() if key in keep and value is not None}
