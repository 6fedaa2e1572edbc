"""`describe` as a library call: VLM descriptions of workspace items, and imported descriptions.

Descriptions are item-keyed text sets (``dtype`` str) next to the embedding sets, so ``cluster
--method ictc`` finds them by name.  Every model answer also goes through the workspace's call store
(keyed by model, decoding, prompt and content hash): cached descriptions never open an image file,
and each batch's set rows are written as soon as the batch completes, so an interrupted run keeps
what it finished and a re-run makes no model call.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from clipclust.store import ItemRecord, Workspace, short_hash
from clipclust.core.images import SourceFile, UnreadableImage, decode_image, find_images, sha256_bytes
from clipclust.commands.embed.embedding import EmbedSummary, _record, default_workers, hash_sources
from clipclust.errors import InputError
from clipclust.commands.describe.importing import import_descriptions
from clipclust.methods.ictc import describe_prompt
from clipclust.models.llm import DecodeParams
from clipclust.methods.latteclip.group import describe_groups
from clipclust.methods.latteclip.prompts import latteclip_prompt
from clipclust.models.vlm import DESCRIBE_PARAMS, CachedDescriber, Describer, describe_key
from clipclust.core.progress import Reporter, SilentReporter
from clipclust.core.sharding import Shard

__all__ = [
    "DescribeSummary",
    "ImportSummary",
    "description_sets",
    "describe_items",
    "import_into_workspace",
    "text_item_sha256",
]

DESCRIPTION_KINDS = ("description", "group-description")
BATCH = 16


@dataclass
class DescribeSummary:
    """What a describe run did; the CLI prints it, tests assert on it."""

    n_items: int = 0
    described: int = 0
    cached: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    set_name: str = ""
    set_id: str = ""
    kind: str = "description"
    model: str = ""
    prompt: str = ""
    n_groups: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_items": self.n_items, "described": self.described, "cached": self.cached,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped], "set": self.set_name,
            "set_id": self.set_id, "kind": self.kind, "model": self.model, "prompt": self.prompt,
            "n_groups": self.n_groups, "seconds": round(self.seconds, 3),
        }


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records, "matched": self.matched, "text_only": self.text_only,
            "skipped": [{"record": w, "reason": r} for w, r in self.skipped], "new_rows": self.new_rows,
            "set": self.set_name, "set_id": self.set_id, "model": self.model, "seconds": round(self.seconds, 3),
        }


def text_item_sha256(text: str) -> str:
    """The key of a text-only item: its own hash space (``text:`` prefix), so it never collides with a file."""
    return hashlib.sha256(b"text:" + text.encode("utf-8")).hexdigest()


def description_sets(workspace: Workspace) -> list[Any]:
    """The stored description sets (item-keyed text), in ``info`` order."""
    return [s for s in workspace.list_sets() if s.kind in DESCRIPTION_KINDS and s.keyed_by == "item"]


def _text_spec(kind: str, name: str, model: str, prompt: str, provenance: dict[str, Any], *key_parts: Any) -> dict[str, Any]:
    return {
        "id": short_hash(model, kind, prompt, *key_parts),
        "name": name, "kind": kind, "model": model, "prompt": prompt, "keyed_by": "item", "dtype": "str",
        "provenance": {"kind": kind, **provenance},
    }


def _loader(path: str) -> Callable[[], Any]:
    """Decode on demand: only descriptions missing from the store ever read the file."""
    def load() -> Any:
        return decode_image(Path(path).read_bytes())
    return load


def _collect_items(workspace: Workspace, inputs: Sequence[str] | None, split: str, reporter: Reporter,
                   summary: DescribeSummary) -> tuple[list[str], list[str], list[ItemRecord]]:
    """(sha256s, paths, item records to write) of the items to describe."""
    if inputs:
        sources: list[SourceFile] = find_images(list(inputs))
        if not sources:
            raise InputError(f"no image files found in {', '.join(map(str, inputs))}")
        scratch = EmbedSummary()
        hashed = hash_sources(sources, workspace.items(), default_workers(), reporter, scratch)
        summary.skipped.extend(scratch.skipped)
        records = [_record(s, split) for s in hashed]
        return [r.sha256 for r in records], [r.path for r in records], records
    if not workspace.exists():
        raise InputError(f"no workspace at {workspace.path}; pass IMAGES to describe or --cache")
    items = workspace.items()
    keep = [i for i, p in enumerate(items.path) if p and Path(p).is_file()]
    if not keep:
        raise InputError(f"no item of {workspace.path} has an image file on disk; pass IMAGES to describe")
    return [items.sha256[i] for i in keep], [items.path[i] for i in keep], []


def _group_labels(workspace: Workspace, keys: list[str], group_by: str, on: str | None) -> tuple[list[str | None], str]:
    """Each item's group label (None = left out) and a short description of where the labels came from."""
    if group_by == "zeroshot":
        info = workspace.resolve_set(on or "zeroshot")
        if info.kind != "zeroshot":
            raise InputError(f"--group-by zeroshot needs a zeroshot set; '{info.name}' is a {info.kind} set")
        classes = json.loads(info.attrs.get("classes", "[]"))
        stored_keys, sims = workspace.read_set(info.id)
        row_of = {k: i for i, k in enumerate(stored_keys)}
        labels = [classes[int(np.argmax(sims[row_of[k]]))] if k in row_of else None for k in keys]
        return labels, f"zeroshot:{info.id}"
    if group_by.startswith("cluster:") and group_by[len("cluster:"):]:
        name = group_by[len("cluster:"):]
        stored = workspace.read_clustering(name)
        id_of = {k: int(c) for k, c in zip(stored["keys"], stored["ids"])}
        labels = [str(id_of[k]) if id_of.get(k, -1) >= 0 else None for k in keys]
        return labels, f"cluster:{name}"
    raise InputError(f"--group-by {group_by}: expected 'zeroshot' or 'cluster:NAME'")


def describe_items(
    workspace: Workspace,
    inputs: Sequence[str] | None = None,
    *,
    vlm: str | None = None,
    mmproj: str | None = None,
    criterion: str | None = None,
    prompt: str | None = None,
    params: DecodeParams | None = None,
    backend: dict[str, Any] | None = None,
    group_size: int | None = None,
    group_by: str | None = None,
    on: str | None = None,
    split: str = "",
    describer: Describer | None = None,
    reporter: Reporter | None = None,
    shard: Shard | None = None,
) -> DescribeSummary:
    """Describe IMAGES (or every workspace item whose file exists) with a VLM; store an item-keyed text set.

    ``describer`` replaces loading ``vlm`` (a notebook's already-open model).  With ``group_size`` the
    items are grouped by ``group_by`` (``zeroshot``: the argmax of a stored zero-shot set, ``--on`` picks
    which; ``cluster:NAME``: a stored clustering) and each collage of up to N members is described once;
    every member gets its group's text.
    """
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    if criterion is not None and not criterion.strip():
        raise InputError("--criterion is empty; say what to describe, e.g. --criterion mood")
    if not prompt and not criterion:
        raise InputError("describe needs --criterion TEXT (e.g. mood) or --prompt TEXT")
    if (group_size is None) != (group_by is None):
        raise InputError("group descriptions need both --group-size N and --group-by zeroshot|cluster:NAME")
    if group_size is not None and group_size < 1:
        raise InputError(f"--group-size {group_size}: expected 1 or more")
    summary = DescribeSummary()
    keys, paths, records = _collect_items(workspace, inputs, split, reporter, summary)
    if shard is not None:  # single items only: a collage's members may fall in different shards
        if group_size is not None:
            raise InputError(f"shard {shard} describes single items; describe groups of items without a shard")
        keep = [i for i, k in enumerate(keys) if shard.holds(k)]
        keys, paths = [keys[i] for i in keep], [paths[i] for i in keep]
        records = [r for r in records if shard.holds(r.sha256)]
    summary.n_items = len(keys)
    group_labels: list[str | None] | None = None
    group_source = ""
    if group_by is not None:
        if records:
            workspace.write_batch(items=records)  # the group rows are keyed by these items: store them
        group_labels, group_source = _group_labels(workspace, keys, group_by, on)
        if not any(lab is not None for lab in group_labels):
            raise InputError(f"--group-by {group_by}: none of the {len(keys)} items has a group")

    owned = describer is None
    if describer is None:
        if not vlm:
            raise InputError("describe needs --vlm SPEC (a .gguf file with --mmproj, hf:ORG/NAME, a folder or a URL)")
        from clipclust.models.vlm import load_describer

        # Lazy: the identity now, the weights on the first image not yet described, so a re-run with
        # every description stored loads no model.
        describer = load_describer(vlm, mmproj, lazy=True,
                                   **{k: v for k, v in (backend or {}).items() if v is not None})
    try:
        return _describe_with(workspace, describer, vlm, criterion, prompt, params or DESCRIBE_PARAMS, keys, paths,
                              records, group_labels, group_source, group_size, reporter, summary, started)
    finally:
        if owned:
            describer.close()


def _describe_with(workspace: Workspace, describer: Describer, vlm: str | None, criterion: str | None,
                   prompt: str | None, params: DecodeParams, keys: list[str], paths: list[str],
                   records: list[ItemRecord], group_labels: list[str | None] | None, group_source: str,
                   group_size: int | None, reporter: Reporter, summary: DescribeSummary,
                   started: float) -> DescribeSummary:
    cached = CachedDescriber(describer, workspace)
    label = criterion.strip() if criterion else f"prompt-{short_hash(prompt)[:8]}"
    if group_labels is None:
        text = prompt or describe_prompt(criterion)
        spec = _text_spec("description", f"description:{label}", describer.identity, text,
                          {"describer": describer.name, "vlm_spec": str(vlm or ""), "criterion": criterion or "",
                           "params": params.to_dict()}, params.to_dict())
    else:
        text = prompt or latteclip_prompt(criterion.strip(), group=True)  # type: ignore[union-attr]
        spec = _text_spec("group-description", f"group-description:{label} [{group_source} x{group_size}]",
                          describer.identity, text,
                          {"describer": describer.name, "vlm_spec": str(vlm or ""), "criterion": criterion or "",
                           "params": params.to_dict(), "group_by": group_source, "group_size": group_size,
                           "membership": "the group-membership set of the same name"},
                          params.to_dict(), group_source, group_size)
    summary.set_name, summary.set_id, summary.kind = spec["name"], spec["id"], spec["kind"]
    summary.model, summary.prompt = describer.identity, text
    done = workspace.set_keys(spec["id"])

    if group_labels is None:
        _describe_each(workspace, cached, spec, keys, paths, records, done, text, params, reporter, summary)
    else:
        _describe_groups(workspace, cached, spec, keys, paths, group_labels, done, text, params, group_size or 1,
                         reporter, summary)
    summary.seconds = time.perf_counter() - started
    return summary


def _describe_each(workspace: Workspace, cached: CachedDescriber, spec: dict[str, Any], keys: list[str],
                   paths: list[str], records: list[ItemRecord], done: set[str], prompt: str, params: DecodeParams,
                   reporter: Reporter, summary: DescribeSummary) -> None:
    """One description per item, batch by batch; items already in the set cost nothing."""
    record_of = {r.sha256: r for r in records}
    todo = [i for i, k in enumerate(keys) if k not in done]
    summary.cached += len(keys) - len(todo)
    finished = [r for r in records if r.sha256 in done]
    if finished:
        workspace.write_batch(items=finished)  # refresh paths/labels of items described before (renamed files)
    step = max(BATCH, 4 * cached.describer.max_concurrency)
    with reporter.task("describing", len(todo)) as advance:
        for start in range(0, len(todo), step):
            batch = todo[start:start + step]
            batch_keys = [keys[i] for i in batch]
            stored = workspace.get_many([describe_key(cached.identity, params, prompt, k) for k in batch_keys])
            images: list[Any] = []
            kept: list[int] = []
            sizes: dict[str, tuple[int, int]] = {}
            for i, k in zip(batch, batch_keys):
                if describe_key(cached.identity, params, prompt, k) in stored:
                    images.append(_loader(paths[i]))  # never called: the answer is in the store
                    kept.append(i)
                    continue
                try:
                    image = decode_image(Path(paths[i]).read_bytes())
                except (OSError, UnreadableImage) as exc:
                    summary.skipped.append((paths[i], str(exc) or type(exc).__name__))
                    reporter.warn(f"skipped {paths[i]}: {exc}")
                    continue
                sizes[k] = image.size
                images.append(image)
                kept.append(i)
            texts = cached.describe(images, prompt, params, input_ids=[keys[i] for i in kept]) if kept else []
            summary.described += cached.last_stats.misses if kept else 0
            summary.cached += cached.last_stats.hits if kept else 0
            items = []
            for i in kept:
                rec = record_of.get(keys[i])
                if rec is not None:
                    w, h = sizes.get(keys[i], (0, 0))
                    items.append(ItemRecord(**{**rec.__dict__, "width": w, "height": h}))
            workspace.write_batch(items=items, rows=[(spec, [keys[i] for i in kept], texts)])
            advance(len(batch))


def _describe_groups(workspace: Workspace, cached: CachedDescriber, spec: dict[str, Any], keys: list[str],
                     paths: list[str], labels: list[str | None], done: set[str], prompt: str, params: DecodeParams,
                     group_size: int, reporter: Reporter, summary: DescribeSummary) -> None:
    """Collage descriptions, one label at a time (grouping is per label, so the groups are the same as in
    one call); each label's rows are written when its groups are described."""
    membership = {**spec, "id": short_hash(spec["id"], "membership"), "kind": "group-membership",
                  "name": spec["name"].replace("group-description:", "group-membership:", 1)}
    by_label: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        if lab is not None:
            by_label.setdefault(lab, []).append(i)
    summary.skipped.extend((paths[i], "no group label") for i, lab in enumerate(labels) if lab is None)
    summary.n_groups = 0
    with reporter.task("describing groups", sum(len(v) for v in by_label.values())) as advance:
        for lab in sorted(by_label):
            members = by_label[lab]
            if all(keys[i] in done for i in members):
                summary.cached += len(members)
                summary.n_groups += -(-len(members) // group_size)
                advance(len(members))
                continue
            groups = describe_groups(cached, [_loader(paths[i]) for i in members], [keys[i] for i in members],
                                     [lab] * len(members), prompt, params, group_size=group_size,
                                     seed=params.seed)
            summary.described += cached.last_stats.misses
            summary.cached += cached.last_stats.hits
            summary.n_groups += len(groups)
            row_keys: list[str] = []
            texts: list[str] = []
            member_rows: list[str] = []
            for g in groups:
                member_keys = [keys[members[j]] for j in g.members]
                for k in member_keys:
                    row_keys.append(k)
                    texts.append(g.text)
                    member_rows.append(json.dumps({"label": lab, "group": g.input_id, "members": member_keys}))
            workspace.write_batch(rows=[(spec, row_keys, texts), (membership, row_keys, member_rows)])
            advance(len(members))


# ---------------------------------------------------------------------------------------------- import
def _resolve(path: str, near: Path) -> Path:
    """A record's path: absolute, or relative to the descriptions file's folder if it exists there, else to the cwd."""
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        beside = near / candidate
        candidate = beside if beside.exists() else candidate
    return candidate.resolve()


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
    seen: set[str] = set()
    for n, rec in enumerate(records, start=1):
        where = f"{src.name} record {n}"
        sha: str | None = None
        path = ""
        if rec.path:
            resolved = _resolve(rec.path, near)
            path = str(resolved)
            row = by_path.get(path)
            if row is not None:
                sha = items.sha256[row]
                item_records.append(ItemRecord(sha256=sha, path=path, label=rec.label or "", split=split))
            elif resolved.is_file():
                data = resolved.read_bytes()
                try:
                    image = decode_image(data)
                except UnreadableImage:
                    reporter.warn(f"{where}: {rec.path} is not a readable image; kept as a text-only item")
                else:
                    sha = sha256_bytes(data)
                    st = resolved.stat()
                    item_records.append(ItemRecord(sha256=sha, path=path, label=rec.label or "", split=split,
                                                   width=image.width, height=image.height, size=st.st_size,
                                                   mtime_ns=st.st_mtime_ns))
        if sha is None:
            sha = text_item_sha256(rec.text)
            item_records.append(ItemRecord(sha256=sha, path=rec.path or "", label=rec.label or "", split=split))
            kind = "text_only"
        else:
            kind = "matched"
        if sha in seen:
            summary.skipped.append((where, "a second description of the same item (the first is kept)"))
            item_records.pop()
            continue
        seen.add(sha)
        setattr(summary, kind, getattr(summary, kind) + 1)
        keys.append(sha)
        texts.append(rec.text)
    model = f"import:{src.name}"
    spec = _text_spec("description", f"description:import-{src.stem}", model, "",
                      {"file": str(src.resolve()), "text_field": text_field, "path_field": path_field or "",
                       "label_field": label_field or ""}, text_field)
    summary.set_name, summary.set_id, summary.model = spec["name"], spec["id"], model
    for start in range(0, len(keys), 4096):
        summary.new_rows += workspace.write_batch(items=item_records[start:start + 4096],
                                                  rows=[(spec, keys[start:start + 4096], texts[start:start + 4096])])
    summary.seconds = time.perf_counter() - started
    return summary
