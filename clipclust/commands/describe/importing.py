"""Importing descriptions made elsewhere (JSONL, JSON, CSV, TSV) as a description set."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipclust.errors import InputError


@dataclass(frozen=True)
class DescriptionRecord:
    """One imported description: the text, the image path it belongs to and its label, if given."""

    text: str
    path: str | None = None
    label: str | None = None


def _value(row: Mapping[str, Any], field_name: str | None, where: str) -> str | None:
    """A named field's value as text (``None`` for null/empty); a missing field is an error."""
    if field_name is None:
        return None
    if field_name not in row:
        raise InputError(
            f"{where}: no field {field_name!r} (fields: {', '.join(map(str, row)) or 'none'}); "
            "name the right one with the text/path/label field options"
        )
    v = row[field_name]
    if isinstance(v, (dict, list)):
        raise InputError(f"{where}: field {field_name!r} is not a plain value: {str(v)[:80]}")
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    return str(v)


def import_descriptions(
    path: str | Path,
    text_field: str = "text",
    path_field: str | None = None,
    label_field: str | None = None,
) -> list[DescriptionRecord]:
    """Read descriptions made elsewhere from JSONL (one object per line; ``.json`` may hold a list)
    or CSV/TSV (header row). Every named field must exist in every record; errors name the file, the
    line and the fields that are there."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"descriptions file not found: {p}")
    suffix = p.suffix.lower()
    rows: list[tuple[str, Mapping[str, Any]]] = []
    try:
        raw = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{p} is not UTF-8 text: {e}") from e
    if suffix in (".jsonl", ".ndjson", ".json"):
        stripped = raw.lstrip()
        if suffix == ".json" and stripped.startswith("["):
            try:
                data = json.loads(raw)
            except ValueError as e:
                raise InputError(f"{p}: invalid JSON: {e}") from e
            for i, obj in enumerate(data):
                rows.append((f"{p} item {i}", obj))
        else:
            for lineno, line in enumerate(raw.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise InputError(f"{p}:{lineno}: invalid JSON ({e.msg}); expected one object per line") from e
                rows.append((f"{p}:{lineno}", obj))
    elif suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(raw), delimiter="\t" if suffix == ".tsv" else ",")
        if not reader.fieldnames:
            raise InputError(f"{p}: no header row")
        for lineno, row in enumerate(reader, start=2):
            rows.append((f"{p}:{lineno}", row))
    else:
        raise InputError(f"{p}: unknown descriptions format {suffix!r}; use .jsonl, .json, .csv or .tsv")
    records: list[DescriptionRecord] = []
    for where, obj in rows:
        if not isinstance(obj, Mapping):
            raise InputError(f"{where}: expected an object with a {text_field!r} field, got {type(obj).__name__}")
        text = _value(obj, text_field, where)
        if text is None:
            raise InputError(f"{where}: field {text_field!r} is empty")
        records.append(
            DescriptionRecord(
                text=text.strip(),
                path=_value(obj, path_field, where),
                label=_value(obj, label_field, where),
            )
        )
    if not records:
        raise InputError(f"{p} holds no descriptions")
    return records
