"""Model strings and the backends that open them: one reader of the strings, one registry per model kind.

A model is named by one string wherever clipclust takes one: an open_clip name (``ARCH/PRETRAINED``), an
open_clip hub model (``hf-hub:ORG/NAME``), a transformers hub model (``hf:ORG/NAME``), a folder, a ``.gguf``
file, or an OpenAI-compatible server (``http(s)://HOST:PORT/v1``).  :func:`model_ref` tells which form a
string has, and only it does.  Each model kind (CLIP encoders, text generators, describers, hidden-state
readers) keeps a :class:`Registry` of the :class:`Backend` s that open it, in its own factory; the first
backend that takes a string's form opens the model, with the options it declares.  A new backend is a
module and one ``register`` call.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipclust.errors import ClipclustError, InputError

__all__ = ["Backend", "LazyModel", "ModelRef", "Registry", "model_ref", "pick_options"]

FORMS = ("url", "hf", "hf-hub", "local-dir", "gguf", "dir", "file", "name", "unknown")
"""What a model string can be: a server URL, ``hf:ORG/NAME``, ``hf-hub:ORG/NAME``, ``local-dir:FOLDER``, a
GGUF file (by its suffix or its magic), another folder or file, ``ARCH/PRETRAINED``, or none of these."""

LOCAL_DIR = "local-dir:"  # open_clip's own prefix for a folder holding open_clip_config.json and weights


@dataclass(frozen=True)
class ModelRef:
    """A model string read without loading anything: its text, its form and, for files, its path."""

    raw: str
    form: str
    path: Path | None = None

    @property
    def name(self) -> str:
        """What follows a ``hf:`` / ``hf-hub:`` / ``local-dir:`` prefix; the string itself otherwise."""
        prefix = {"hf": "hf:", "hf-hub": "hf-hub:", "local-dir": LOCAL_DIR}.get(self.form, "")
        return self.raw[len(prefix):]


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def model_ref(spec: str | Path) -> ModelRef:
    """The form of a model string; a path names a GGUF file by its suffix (even before it exists, so that
    a mistyped one is reported as a missing GGUF file) or by the GGUF magic at its start."""
    s = str(spec).strip()
    if s.startswith(("http://", "https://")):
        return ModelRef(s, "url")
    if s.startswith("hf:"):
        return ModelRef(s, "hf")
    if s.startswith("hf-hub:"):
        return ModelRef(s, "hf-hub")
    if s.startswith(LOCAL_DIR):
        return ModelRef(s, "local-dir", Path(s[len(LOCAL_DIR):]).expanduser())
    if not s:
        return ModelRef(s, "unknown")
    path = Path(s).expanduser()
    if s.lower().endswith(".gguf"):
        return ModelRef(s, "gguf", path)
    if path.is_dir():
        return ModelRef(s, "dir", path)
    if path.is_file():
        return ModelRef(s, "gguf" if _is_gguf(path) else "file", path)
    return ModelRef(s, "name" if "/" in s else "unknown", path)


def pick_options(opts: Mapping[str, Any], allowed: frozenset[str] | set[str]) -> dict[str, Any]:
    """Options meant for this backend; unset (None) ones are dropped so that its defaults apply."""
    return {k: v for k, v in opts.items() if k in allowed and v is not None}


@dataclass(frozen=True)
class Backend:
    """One way to open a model of some kind.

    ``forms`` are the model-string forms it takes (``takes`` narrows them, e.g. to folders holding one
    config file); ``open(raw, *args, **options)`` opens the model with the ``options`` it declares;
    ``identity`` gives the model's identity without loading it, or None when that needs the model;
    ``local`` says that the weights load here (a server's do not), so opening them can wait for the
    first call.
    """

    name: str
    forms: frozenset[str]
    open: Callable[..., Any]
    options: frozenset[str] = frozenset()
    identity: Callable[..., str | None] | None = None
    takes: Callable[[ModelRef], bool] | None = None
    local: bool = True

    def accepts(self, ref: ModelRef) -> bool:
        return ref.form in self.forms and (self.takes is None or self.takes(ref))


class Registry:
    """The backends of one model kind, in the order they are tried.

    ``expected`` says what the kind accepts, for the error a string that no backend takes gets;
    ``refusals`` can word that error better for one form (a folder holding neither config file).
    """

    def __init__(self, kind: str, expected: str,
                 refusals: Mapping[str, Callable[[ModelRef], str]] | None = None) -> None:
        self.kind = kind
        self.expected = expected
        self.refusals = dict(refusals or {})
        self.backends: list[Backend] = []

    def register(self, backend: Backend) -> Backend:
        if any(b.name == backend.name for b in self.backends):
            raise ValueError(f"{self.kind} backend {backend.name!r} is registered twice")
        if not backend.forms <= set(FORMS):
            raise ValueError(f"{self.kind} backend {backend.name!r} takes unknown forms {sorted(backend.forms - set(FORMS))}")
        self.backends.append(backend)
        return backend

    def resolve(self, spec: str | Path, backend: str | None = None) -> tuple[Backend, ModelRef]:
        """The backend that opens ``spec`` (the first that takes its form, or the one named ``backend``), and
        the string read; an input error says what would do."""
        ref = model_ref(spec)
        for candidate in self.backends:
            if (backend is None or candidate.name == backend) and candidate.accepts(ref):
                return candidate, ref
        if backend is not None:
            if not any(b.name == backend for b in self.backends):
                raise ValueError(f"no {self.kind} backend is named {backend!r}")
            raise InputError(f"the {backend} {self.kind} backend cannot open '{ref.raw}'")
        if ref.form in self.refusals:
            raise InputError(self.refusals[ref.form](ref))
        missing = ref.path is not None and not ref.path.exists() or ref.form == "unknown"
        raise InputError(f"unknown model '{ref.raw}': {self.expected}"
                         + (" (no such file or directory)" if missing and ref.raw else ""))

    def open(self, spec: str | Path, *args: Any, backend: str | None = None, **opts: Any) -> Any:
        """Open ``spec`` with its backend (or the one named ``backend``); options that backend does not
        declare are ignored, so a caller can pass every setting it has."""
        chosen, ref = self.resolve(spec, backend)
        return chosen.open(ref.raw, *args, **pick_options(opts, chosen.options))

    def known_identity(self, spec: str | Path, *args: Any, backend: str | None = None, **opts: Any) -> str | None:
        """The identity ``spec`` opens with, when it is known without loading the model; else None."""
        chosen, ref = self.resolve(spec, backend)
        if chosen.identity is None:
            return None
        return chosen.identity(ref.raw, *args, **pick_options(opts, chosen.options))


class LazyModel:
    """A model opened on its first use, so a run whose answers are all stored loads nothing.

    The identity comes from the registry without loading where it can; where it cannot (a hub model not
    downloaded yet) asking for it loads the model, which the run needs anyway.  Mixed into each kind's
    interface (``LazyGenerator``, ``LazyDescriber``), which forwards its calls to :meth:`_model`.
    """

    def __init__(self, registry: Registry, spec: str | Path, *args: Any, **opts: Any) -> None:
        self._open = functools.partial(registry.open, spec, *args, **opts)
        self._known = registry.known_identity(spec, *args, **opts)
        self._inner: Any = None
        self._lock = threading.Lock()
        ref = model_ref(spec)
        self.name = ref.path.name if ref.form == "gguf" and ref.path is not None else ref.raw

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    def _model(self) -> Any:
        with self._lock:
            if self._inner is None:
                inner = self._open()
                if self._known is not None and inner.identity != self._known:
                    inner.close()
                    raise ClipclustError(f"{self.name}: the loaded model's identity {inner.identity} differs "
                                         f"from {self._known}, computed before loading")
                self._inner = inner
                self.name = inner.name
            return self._inner

    @property
    def identity(self) -> str:
        return self._known if self._known is not None else self._model().identity

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
