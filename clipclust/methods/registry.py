"""The method registry: what a clustering request holds, how a method plugs in, and what a run returns.

A method is one :class:`MethodSpec` registered under its name; a refinement that runs after a method
(``refine="head"``) is one :class:`RefinementSpec`.  Each declares the settings it accepts as
:class:`Option` entries: the type, default, help, choices and spelling that the command line turns into
a flag, and the check a request's value goes through before ``prepare`` runs.  So each method validates
only what is its own, and a new method or option arrives in the method's own package.

Errors name request fields and options (``k``, ``min_count``) through ``errors.opt``, never command-line
flags: the CLI maps an :class:`~clipclust.errors.InputError`'s ``option`` to its flag.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from clipclust.errors import InputError, opt

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from clipclust.store import SetInfo, Workspace
    from clipclust.core.progress import Reporter

__all__ = [
    "DEFAULT_K_RANGE",
    "METHODS",
    "REFINEMENTS",
    "ClusterRequest",
    "ClusteringSummary",
    "MethodOutput",
    "MethodSpec",
    "Option",
    "OptionOwner",
    "PreparedInput",
    "RefinementSpec",
    "at_least_one",
    "get_method",
    "get_refinement",
    "register_method",
    "register_refinement",
    "resolve_options",
]

DEFAULT_K_RANGE = (2, 10)


@dataclass
class ClusterRequest:
    """What every method shares; method-specific settings go in ``options`` (checked by the method's spec).

    ``k`` is an int, ``"auto"`` (silhouette over ``k_range``) or None (the method's default, when it has
    one).  ``seed`` None means the method's own default.  ``refine="head"`` trains the ESMC head on the
    method's k-means pseudo-labels; the head's settings (``ratio``, ``epochs``, ...) are given in
    ``options`` like a method's and land in ``refine_options`` once the request is resolved.
    """

    method: str = "kmeans"
    on: str | None = None
    k: int | str | None = None
    seed: int | None = None
    name: str | None = None
    model: str | None = None
    split: str | None = None
    refine: str | None = None
    k_range: tuple[int, int] = DEFAULT_K_RANGE
    force: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    refine_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, **fields: Any) -> "ClusterRequest":
        """A request from keywords; names that are not common fields are options (``criterion=...``)."""
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
    """One setting a method or refinement declares: what its check and its command-line flag need.

    ``type`` is the Python type of a value (str, int, float or bool); ``object`` marks a value only a
    Python caller can pass (an open model), which gets no flag.  ``default`` fills a value not given
    (None: the algorithm's own, which ``shown_default`` names in help).  ``choices`` are the accepted
    values (checked here, listed in help).  ``flag`` is the command-line spelling when it is not the
    name (``threads`` for ``n_threads``), ``short`` a one-letter alias.  ``identity`` False keeps a
    setting out of the reuse identity (threads, concurrency: how, not what).  ``check`` returns the clean
    value and raises ValueError (or ``InputError(..., option=name)``) for a bad one.
    """

    name: str
    _: KW_ONLY
    type: type = str
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()
    flag: str | None = None
    short: str | None = None
    identity: bool = True
    check: Callable[[Any], Any] | None = None
    shown_default: str | None = None

    @property
    def default_text(self) -> str | None:
        """The default as help shows it, or None when there is nothing to show."""
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None or self.default is False:
            return None
        if isinstance(self.default, (tuple, list)):
            return ",".join(map(str, self.default))
        return str(self.default)

    def clean(self, value: Any) -> Any:
        """``value`` checked against the choices and the check; a bad one is an InputError naming this option."""
        if self.type is float and isinstance(value, (int, float)) and not math.isfinite(value):
            raise InputError(f"{value}: expected a finite number", option=self.name)
        if self.choices and value not in self.choices:
            raise InputError(f"'{value}': expected one of {', '.join(self.choices)}", option=self.name)
        if self.check is None:
            return value
        try:
            return self.check(value)
        except ValueError as exc:
            raise InputError(str(exc), option=self.name) from None


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


@dataclass
class ClusteringSummary:
    """What a clustering run did; the CLI prints it, tests assert on it."""

    name: str
    method: str
    on: str
    n_items: int
    n_clusters: int
    n_noise: int
    sizes: dict[str, int]
    seed: int | None
    k: int | None
    reused: bool = False
    replaced: bool = False
    k_table: list[dict[str, Any]] | None = None
    n_test: int | None = None
    test_on: str | None = None
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    names: list[str] | None = None

    @property
    def refine(self) -> str:
        """The refinement that ran after the method ("head"), or ""."""
        return str(self.params.get("refine") or "")

    @property
    def warnings(self) -> list[str]:
        """The warnings the run that computed the result gave (a reused result repeats them)."""
        return list(self.params.get("warnings") or [])

    def cluster_lines(self) -> list[str]:
        """One line per named cluster: its id, its name and its size (for a method's ``report``)."""
        return [f"  {i}  {name}  ({self.sizes.get(str(i), 0)} items)" for i, name in enumerate(self.names or [])]

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": self.names, "name": self.name, "method": self.method, "on": self.on, "n_items": self.n_items,
            "n_clusters": self.n_clusters, "n_noise": self.n_noise, "sizes": self.sizes, "seed": self.seed,
            "k": self.k, "reused": self.reused, "replaced": self.replaced, "k_table": self.k_table,
            "n_test": self.n_test, "test_on": self.test_on, "seconds": round(self.seconds, 3), "params": self.params,
        }


@dataclass(frozen=True)
class MethodSpec:
    """One method: how to read its inputs, how to compute it, the options it accepts, how it reports.

    ``report`` turns a run's summary into the lines shown under the common summary line (the names
    found, where a state was read); None shows the common line only.
    """

    name: str
    summary: str
    prepare: Callable[["Workspace", ClusterRequest], PreparedInput]
    compute: Callable[[PreparedInput, ClusterRequest, "Reporter"], MethodOutput]
    options: tuple[Option, ...] = ()
    refinable: bool = False  # accepts refine="head"
    report: Callable[[ClusteringSummary], list[str]] | None = None


@dataclass(frozen=True)
class RefinementSpec:
    """A step that refines a method's clustering (``refine="head"``): its name, what it does, its options."""

    name: str
    summary: str
    options: tuple[Option, ...] = ()


METHODS: dict[str, MethodSpec] = {}
REFINEMENTS: dict[str, RefinementSpec] = {}


def at_least_one(value: Any) -> int:
    """An :class:`Option` check: a whole number of 1 or more (counts, sizes, neighbours)."""
    number = int(value)
    if number < 1:
        raise ValueError(f"{value}: expected a whole number of 1 or more")
    return number


SERVER_TIMEOUT = 300.0  # clipclust.models.llm.DEFAULT_TIMEOUT, kept here so that the registry imports no model


def _seconds(value: Any) -> float:
    if not 0 < float(value) < float("inf"):
        raise ValueError(f"{value}: expected a number of seconds above 0")
    return float(value)


def timeout_option(what: str) -> Option:
    """The ``timeout`` of a method that may ask a model server (ictc, esmc): one flag, one default."""
    return Option("timeout", type=float, default=SERVER_TIMEOUT, check=_seconds, identity=False,
                  shown_default=f"{SERVER_TIMEOUT:g}",
                  help=f"server: seconds {what} may take to answer one request before the run gives up "
                  "(a notice on stderr after 30 s, or half of it)")


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add (or replace) a method; each method package registers itself when its ``method`` module is imported."""
    METHODS[spec.name] = spec
    return spec


def register_refinement(spec: RefinementSpec) -> RefinementSpec:
    """Add (or replace) a refinement, as :func:`register_method` does for methods."""
    REFINEMENTS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    from clipclust.methods import load_builtin_methods

    load_builtin_methods()
    spec = METHODS.get(name)
    if spec is None:
        raise InputError(f"'{name}' is not a method; expected one of {', '.join(sorted(METHODS))}", option="method")
    return spec


def get_refinement(name: str) -> RefinementSpec:
    from clipclust.methods import load_builtin_methods

    load_builtin_methods()
    spec = REFINEMENTS.get(name)
    if spec is None:
        raise InputError(f"'{name}': expected one of {', '.join(REFINEMENTS)}", option="refine")
    return spec


class OptionOwner(Protocol):
    """What declares options: a method or refinement of either registry (clustering, fine-tuning)."""

    @property
    def name(self) -> str: ...

    @property
    def options(self) -> tuple[Option, ...]: ...


def _owners(name: str, methods: Mapping[str, OptionOwner], refinements: Mapping[str, OptionOwner]) -> str:
    """Who in the registry declares the option ``name``, for the message refusing it elsewhere."""
    def declaring(owners: Mapping[str, OptionOwner]) -> list[str]:
        return sorted(o.name for o in owners.values() if any(option.name == name for option in o.options))

    in_methods = declaring(methods)
    parts = [f"the {' or '.join(in_methods)} method"] if in_methods else []
    parts += [f"{opt('refine')} {r}" for r in declaring(refinements)]
    return f"applies to {' or '.join(parts)}" if parts else "is not a setting of any method"


def resolve_options(spec: OptionOwner, given: dict[str, Any], methods: Mapping[str, OptionOwner],
                    refinement: OptionOwner | None = None, refinements: Mapping[str, OptionOwner] | None = None
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The method's options and the refinement's: given values checked, defaults filled.

    ``methods`` (and ``refinements``) are the registry ``spec`` belongs to: an option that neither ``spec``
    nor ``refinement`` declares is refused, naming those of the registry that do.  One both declare
    (``device``) goes to both.
    """
    own = {o.name: o for o in spec.options}
    theirs = {o.name: o for o in refinement.options} if refinement is not None else {}
    for key, value in given.items():
        if value is not None and key not in own and key not in theirs:
            raise InputError(f"{_owners(key, methods, refinements or {})}, not {spec.name}", option=key)
    return _resolved(own, given), _resolved(theirs, given)


def _resolved(declared: dict[str, Option], given: dict[str, Any]) -> dict[str, Any]:
    resolved = {key: declared[key].clean(value) for key, value in given.items()
                if value is not None and key in declared}
    for name, option in declared.items():
        resolved.setdefault(name, option.default)
    return resolved


def identity_options(options: tuple[Option, ...], values: dict[str, Any]) -> dict[str, Any]:
    """The values of the options that change the result (those marked ``identity``), for the reuse identity."""
    keep = {o.name for o in options if o.identity}
    return {key: value for key, value in values.items() if key in keep and value is not None}
