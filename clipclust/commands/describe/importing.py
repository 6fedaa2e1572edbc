"""Importing descriptions made elsewhere (JSONL, JSON, CSV, TSV) as a description set.

:func:`import_descriptions` reads the records; :func:`import_into_workspace` attaches them to their
images (stored items, or image files it hashes and adds) or makes text-only items of them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipclust.commands.describe.descriptions import description_spec
from clipclust.core.images import UnreadableImage, decode_image, sha256_bytes
from clipclust.core.progress import Reporter, SilentReporter
from clipclust.core.textfiles import check_text, read_user_text
from clipclust.errors import InputError
from clipclust.store import ItemRecord, Workspace

WRITE_BLOCK = 4096  # records per workspace transaction


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
    return check_text(str(v), f"{where}: field {field_name!r}")


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
    raw = read_user_text(p)
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
        reader = csv.DictReader(io.StringIO(raw, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        try:
            if not reader.fieldnames:
                raise InputError(f"{p}: no header row")
            for row in reader:
                rows.append((f"{p}:{reader.line_num}", row))
        except csv.Error as e:
            raise InputError(f"{p}:{reader.line_num}: not readable as {suffix[1:].upper()} ({e})") from None
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


@dataclass
class ImportSummary:
    """What an import did: how many records attached to images, became text-only items, or were skipped."""

    records: int = 0
    matched: int = 0
    text_only: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    new_rows: int = 0
    set_name: str = ""
    set_id: str = ""
    model: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records, "matched": self.matched, "text_only": self.text_only,
            "skipped": [{"record": w, "reason": r} for w, r in self.skipped], "new_rows": self.new_rows,
            "set": self.set_name, "set_id": self.set_id, "model": self.model, "seconds": round(self.seconds, 3),
        }


def text_item_sha256(text: str) -> str:
    """The key of a text-only item: its own hash space (``text:`` prefix), so it never collides with a file."""
    return hashlib.sha256(b"text:" + text.encode("utf-8")).hexdigest()


def _resolve(path: str, near: Path) -> Path:
    """A record's path: absolute, or relative to the descriptions file's folder if it exists there, else to the cwd."""
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        beside = near / candidate
        candidate = beside if beside.exists() else candidate
    return candidate.resolve()


def _image_item(rec: DescriptionRecord, by_path: dict[str, int], items: Any, near: Path, split: str, where: str,
                reporter: Reporter) -> ItemRecord | None:
    """The item a record's path names: a stored item, or an image file (hashed and added); None if neither."""
    resolved = _resolve(rec.path or "", near)
    path = str(resolved)
    row = by_path.get(path)
    if row is not None:
        return ItemRecord(sha256=items.sha256[row], path=path, label=rec.label or "", split=split)
    if not resolved.is_file():
        return None
    data = resolved.read_bytes()
    try:
        image = decode_image(data)
    except UnreadableImage:
        reporter.warn(f"{where}: {rec.path} is not a readable image; kept as a text-only item")
        return None
    st = resolved.stat()
    return ItemRecord(sha256=sha256_bytes(data), path=path, label=rec.label or "", split=split, width=image.width,
                      height=image.height, size=st.st_size, mtime_ns=st.st_mtime_ns)


def import_into_workspace(
    workspace: Workspace,
    file: str | os.PathLike[str],
    text_field: str = "text",
    path_field: str | None = None,
    label_field: str | None = None,
    split: str = "",
    reporter: Reporter | None = None,
) -> ImportSummary:
    """Store descriptions made elsewhere (JSONL/CSV) as a description set, attached to their items.

    A record whose path is a stored item, or an image file (hashed and added), describes that image;
    any other record becomes a text-only item (key ``sha256("text:" + text)``, width = height = 0) so
    IC|TC can cluster descriptions without images.  Two records for the same item: the first is kept.
    """
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    src = Path(file).expanduser()
    records = import_descriptions(src, text_field, path_field, label_field)
    summary = ImportSummary(records=len(records))
    items = workspace.items()
    by_path = {p: i for i, p in enumerate(items.path) if p}
    near = src.resolve().parent
    item_records: list[ItemRecord] = []
    keys: list[str] = []
    texts: list[str] = []
    seen: dict[str, str] = {}  # item key -> the record that gave it
    unmatched: list[str] = []  # records whose path names no stored item nor image file
    for n, rec in enumerate(records, start=1):
        where = f"{src.name} record {n}"
        item = _image_item(rec, by_path, items, near, split, where, reporter) if rec.path else None
        kind = "matched" if item is not None else "text_only"
        if item is None:
            if rec.path:
                unmatched.append(f"{where} ({rec.path})")
            item = ItemRecord(sha256=text_item_sha256(rec.text), path=rec.path or "", label=rec.label or "", split=split)
        if item.sha256 in seen:
            why = (f"the same text as {seen[item.sha256]}; a description with no image is keyed by its text, so "
                   "it is stored once" if kind == "text_only" else
                   f"a second description of {item.path} (the first, {seen[item.sha256]}, is kept)")
            summary.skipped.append((where, why))
            continue
        seen[item.sha256] = where
        setattr(summary, kind, getattr(summary, kind) + 1)
        item_records.append(item)
        keys.append(item.sha256)
        texts.append(rec.text)
    notes = []  # one line for both: what became text-only, and what was stored once
    if unmatched:
        notes.append(f"{len(unmatched)} record(s) name a path that is neither a stored item nor an image file and "
                     f"were kept as text-only items, e.g. {unmatched[0]}")
    if summary.skipped:
        notes.append(f"{len(summary.skipped)} record(s) skipped, e.g. {summary.skipped[0][0]}: {summary.skipped[0][1]}")
    if notes:
        reporter.warn("; ".join(notes))
    model = f"import:{src.name}"
    spec = description_spec("description", f"description:import-{src.stem}", model, "",
                            {"file": str(src.resolve()), "text_field": text_field, "path_field": path_field or "",
                             "label_field": label_field or ""}, (text_field,))
    summary.set_name, summary.set_id, summary.model = spec.name, spec.id, model
    for start in range(0, len(keys), WRITE_BLOCK):
        block = slice(start, start + WRITE_BLOCK)
        summary.new_rows += workspace.write_batch(items=item_records[block], rows=[(spec, keys[block], texts[block])])
    summary.seconds = time.perf_counter() - started
    return summary
