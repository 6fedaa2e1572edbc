"""What identifies and describes a set before it is written: one dataclass, one place that derives its id."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from clipclust.store.rows import short_hash

__all__ = ["SetSpec", "as_spec"]


@dataclass(frozen=True)
class SetSpec:
    """A set as ``write_batch`` creates or extends it.

    ``id`` is derived from the set's identity parts by :meth:`of` (or :meth:`for_model`), so two runs
    that mean the same set find the same group.  ``dtype`` is ``"str"`` for text sets, ``"float16"`` for
    half-size vectors; ``replace`` overwrites the rows of keys already stored; ``recipe`` marks a set
    computed on read from other sets (``store/derived.py``).
    """

    id: str
    name: str
    kind: str
    model: str = ""
    prompt: str = ""
    keyed_by: str = "item"
    dtype: str = "float32"
    provenance: Mapping[str, Any] = field(default_factory=dict)
    attrs: Mapping[str, Any] = field(default_factory=dict)
    replace: bool = False
    recipe: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, identity: Sequence[Any], **fields: Any) -> "SetSpec":
        """A spec whose id is the hash of ``identity`` (every part that changes the rows)."""
        return cls(id=short_hash(*identity), **fields)

    @classmethod
    def for_model(cls, *, model: str, kind: str, prompt: str, key_parts: Sequence[Any] = (), **fields: Any) -> "SetSpec":
        """A model's set: identified by the model, the kind, the prompt and any further parts."""
        return cls.of((model, kind, prompt, *key_parts), model=model, kind=kind, prompt=prompt, **fields)

    def replace_fields(self, **changes: Any) -> "SetSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def as_spec(spec: "SetSpec | Mapping[str, Any]") -> SetSpec:
    """A :class:`SetSpec` from itself or from the dict form (``id``, ``name``, ``kind`` and optional fields)."""
    if isinstance(spec, SetSpec):
        return spec
    known = {f.name for f in dataclasses.fields(SetSpec)}
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"unknown set spec fields: {', '.join(sorted(unknown))}")
    values = dict(spec)
    if values.get("dtype") is None:
        values.pop("dtype", None)
    return SetSpec(**values)
