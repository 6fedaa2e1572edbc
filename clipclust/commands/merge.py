"""Joining workspaces (shards of one job, or runs on several machines) into one: `clipclust merge`.

Everything goes through the public Workspace API, block by block: items, every stored set, cached model
calls, clusterings and the memo of unreadable content.  A key present in several inputs is stored once
(the first input's row wins); a set is taken only when every input made it the same way: same name,
kind, model identity, prompt, row shape and provenance, apart from what only describes the run (device,
batch size, local paths, library versions; different versions are reported, not refused).  Checking all
inputs before writing anything means a refused merge leaves the output as it was; a merge stopped
midway is resumed by running it again (rows already copied are skipped by key).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clipclust.store import ItemRecord, NotAWorkspace, SetInfo, SetSpec, Workspace
from clipclust.commands.embed import UNREADABLE_MEMO
from clipclust.errors import InputError, opt
from clipclust.core.progress import Reporter, SilentReporter

__all__ = ["MergeReport", "SetMerge", "merge_workspaces", "RUN_ONLY"]

RUN_ONLY = frozenset({"device", "batch_size", "loader", "model_spec", "vlm_spec", "file", "versions"})
IDENTITY = ("name", "kind", "model", "prompt", "keyed_by")
# attributes the workspace keeps for itself (dates, a set's unique id, its running digest): never copied
STORE_KEPT = frozenset({*IDENTITY, "created", "updated", "uid", "digest"})
BATCH = 4096


@dataclass
class SetMerge:
    """One set of the output: rows it gained, keys it met again, and keys whose rows differed (first kept)."""

    id: str
    name: str
    model: str
    added: int = 0
    duplicates: int = 0
    differing: int = 0
    max_difference: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class MergeReport:
    """What a merge did: items, rows per set, calls and clusterings added, and what it kept of disagreements."""

    output: str
    inputs: list[str]
    items_added: int = 0
    items_known: int = 0
    label_conflicts: list[tuple[str, str, str, str]] = field(default_factory=list)  # sha, kept, other, file
    sets: list[SetMerge] = field(default_factory=list)
    calls_added: int = 0
    calls_duplicate: int = 0
    clusterings_added: list[str] = field(default_factory=list)
    clusterings_same: list[str] = field(default_factory=list)
    clustering_conflicts: list[tuple[str, str]] = field(default_factory=list)  # name, file whose copy was left
    unreadable_added: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def conflicts(self) -> list[str]:
        """Every disagreement that was resolved by keeping the first input's value, one line each."""
        out = [f"item {sha[:12]}: label/split '{kept}' kept, '{other}' in {where}"
               for sha, kept, other, where in self.label_conflicts]
        out += [f"set '{s.name}': {s.differing} keys with other rows in a later input (largest difference "
                f"{s.max_difference:.3g}); the first input's rows kept" for s in self.sets if s.differing]
        out += [f"clustering '{name}' differs in {where}; the first one kept"
                for name, where in self.clustering_conflicts]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output, "inputs": self.inputs, "items_added": self.items_added,
            "items_known": self.items_known, "sets": [s.to_dict() for s in self.sets],
            "calls_added": self.calls_added, "calls_duplicate": self.calls_duplicate,
            "clusterings_added": self.clusterings_added, "clusterings_same": self.clusterings_same,
            "unreadable_added": self.unreadable_added, "conflicts": self.conflicts, "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


def _provenance(info: SetInfo) -> dict[str, Any]:
    try:
        return json.loads(info.attrs.get("provenance") or "{}")
    except ValueError:
        return {}


def _what_was_made(info: SetInfo) -> dict[str, Any]:
    """The fields two copies of a set must agree on to be one set."""
    made = {name: getattr(info, name) for name in IDENTITY}
    made["row shape"] = tuple(info.shape[1:])
    made["provenance"] = {k: v for k, v in _provenance(info).items() if k not in RUN_ONLY}
    made["attributes"] = {k: str(v) for k, v in info.attrs.items() if k not in STORE_KEPT and k != "provenance"}
    return made


def _check_sets(workspaces: Sequence[Workspace], report: MergeReport) -> dict[str, list[tuple[Workspace, SetInfo]]]:
    """Every set id with its copies, after refusing any set that two workspaces made differently."""
    copies: dict[str, list[tuple[Workspace, SetInfo]]] = {}
    for ws in workspaces:
        for info in ws.list_sets():
            copies.setdefault(info.id, []).append((ws, info))
    for set_id, found in copies.items():
        first_ws, first = found[0]
        made = _what_was_made(first)
        for ws, info in found[1:]:
            other = _what_was_made(info)
            for what in made:
                if made[what] != other[what]:
                    raise InputError(
                        f"set '{first.name}' ({set_id}) was made differently in {first_ws.path} and {ws.path} "
                        f"({what}: {_difference(made[what], other[what])}); nothing was merged: re-make it with "
                        "the same settings, or leave one of the files out")
            versions = (_provenance(first).get("versions"), _provenance(info).get("versions"))
            if versions[0] != versions[1]:
                note = f"set '{first.name}': library versions differ between {first_ws.path} and {ws.path}"
                if note not in report.notes:
                    report.notes.append(note)
    return copies


def _difference(a: Any, b: Any) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:3])
    return f"{a!r} vs {b!r}"


def _merge_items(out: Workspace, ws: Workspace, report: MergeReport) -> None:
    """New items are added; for known ones the first label and split stay, and a disagreement is reported."""
    have = out.items()
    row_of = have.index()
    theirs = ws.items()
    new: list[ItemRecord] = []
    for i, sha in enumerate(theirs.sha256):
        row = row_of.get(sha)
        if row is None:
            new.append(ItemRecord(sha256=sha, path=theirs.path[i], label=theirs.label[i], split=theirs.split[i],
                                  width=int(theirs.width[i]), height=int(theirs.height[i]),
                                  size=int(theirs.size[i]), mtime_ns=int(theirs.mtime_ns[i])))
            continue
        report.items_known += 1
        kept = (have.label[row], have.split[row])
        other = (theirs.label[i], theirs.split[i])
        if any(theirs_ and theirs_ != ours for ours, theirs_ in zip(kept, other)):  # an empty field says nothing
            report.label_conflicts.append((sha, "/".join(kept), "/".join(other), str(ws.path)))
    for start in range(0, len(new), BATCH):
        out.upsert_items(new[start:start + BATCH])
    report.items_added += len(new)


def _spec(info: SetInfo, text: bool) -> SetSpec:
    """write_batch's spec for a copy of the set: its id as stored, its provenance as written, its other attributes.

    A derived set is copied as it is stored (keys and text rows), so it is computed on read in the output too.
    """
    recipe = None
    if info.derived:
        recipe = {**{k: info.attrs[k] for k in ("image_set", "text_set", "fuse")},
                  "row_shape": json.loads(info.attrs["row_shape"])}
    return SetSpec(id=info.id, name=info.name, kind=info.kind, model=info.model, prompt=info.prompt,
                   keyed_by=info.keyed_by, dtype="str" if text else "float32", provenance=_provenance(info),
                   attrs={k: v for k, v in info.attrs.items() if k not in STORE_KEPT}, recipe=recipe)


def _merge_set(out: Workspace, ws: Workspace, info: SetInfo, merged: SetMerge, held: dict[str, np.ndarray] | None,
               chunk: int) -> dict[str, np.ndarray] | None:
    """Copy one input's rows of a set; rows for keys the output holds are compared instead.

    ``held`` is the output's rows by key, read only once a block meets keys the output already has.
    """
    have = out.set_keys(info.id)
    for keys, data in ws.iter_set(info.id, chunk, stored=info.derived):
        text = data.dtype == object
        if text:  # text rows as str, however the store hands them out
            data = np.array([v.decode("utf-8") if isinstance(v, bytes) else v for v in data], dtype=object)
        fresh = [i for i, k in enumerate(keys) if k not in have]
        again = [i for i, k in enumerate(keys) if k in have]
        if again:
            if held is None:
                stored_keys, stored = out.read_set(info.id, stored=info.derived)
                held = dict(zip(stored_keys, stored))
            for i in again:
                kept = held[keys[i]]
                if text:
                    same, gap = kept == data[i], 0.0
                else:
                    gap = float(np.max(np.abs(np.asarray(kept, np.float64) - data[i]))) if kept.size else 0.0
                    same = gap == 0.0
                if not same:
                    merged.differing += 1
                    merged.max_difference = max(merged.max_difference, gap)
            merged.duplicates += len(again)
        if fresh:
            merged.added += out.write_batch(rows=[(_spec(info, text), [keys[i] for i in fresh], data[fresh])])
            have.update(keys[i] for i in fresh)
            if held is not None:
                held.update((keys[i], data[i]) for i in fresh)
    return held


def _same_clustering(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if set(a) - {"created"} != set(b) - {"created"}:
        return False
    for key in a:
        if key in ("created", "name"):
            continue
        x, y = a[key], b[key]
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not np.array_equal(np.asarray(x), np.asarray(y)):
                return False
        elif x != y:
            return False
    return True


def _merge_clusterings(out: Workspace, ws: Workspace, report: MergeReport) -> None:
    have = set(out.list_clusterings())
    for name in ws.list_clusterings():
        theirs = ws.read_clustering(name)
        if name in have:
            if _same_clustering(out.read_clustering(name), theirs):
                if name not in report.clusterings_same:
                    report.clusterings_same.append(name)
            else:
                report.clustering_conflicts.append((name, str(ws.path)))
            continue
        extra = {k: v for k, v in theirs.items() if k not in ("name", "params", "created", "keys", "ids", "centroids",
                                                               "names")}
        out.save_clustering(name, keys=theirs["keys"], ids=theirs["ids"], params=theirs["params"],
                            centroids=theirs.get("centroids"), cluster_names=theirs.get("names"), extra=extra)
        report.clusterings_added.append(name)
        have.add(name)


def merge_workspaces(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str],
                     reporter: Reporter | None = None, chunk: int = 65536) -> MergeReport:
    """Merge workspaces into ``output`` (created, or extended when it exists); returns what happened."""
    try:
        return _merge(inputs, output, reporter, chunk)
    except NotAWorkspace as exc:  # its advice names the workspace setting; here the file is an input or the output
        if exc.path.resolve() == Path(output).resolve():
            raise InputError(f"not a workspace: {exc.path} is {exc.what}; pass another {opt('output')} (a workspace "
                             "or a new file name)") from None
        raise InputError(f"not a workspace: {exc.path} is {exc.what}; merge joins workspace files: leave it out") \
            from None


def _merge(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], reporter: Reporter | None,
           chunk: int) -> MergeReport:
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    out = Workspace(output)
    target = Path(output).resolve()
    paths: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if not path.is_file():
            raise InputError(f"no workspace file {raw}")
        if path.resolve() != target and path.resolve() not in [p.resolve() for p in paths]:
            paths.append(path)
    if not paths:
        raise InputError("merge needs at least one workspace other than the output")
    sources = [Workspace(p) for p in paths]
    report = MergeReport(output=str(out.path), inputs=[str(p) for p in paths])
    copies = _check_sets(([out] if out.exists() else []) + sources, report)  # refuse before writing anything

    with reporter.task("merging items", len(sources)) as advance:
        for ws in sources:
            _merge_items(out, ws, report)
            advance(1)
    with reporter.task("merging sets", sum(len([c for c in found if c[0] is not out]) for found in copies.values())) \
            as advance:
        for set_id, found in copies.items():
            merged = SetMerge(set_id, found[0][1].name, found[0][1].model)
            held = None
            for ws, info in found:
                if ws is out:
                    continue
                held = _merge_set(out, ws, info, merged, held, chunk)
                advance(1)
            report.sets.append(merged)
    for ws in sources:
        for block in ws.iter_calls(chunk):
            before = out.count_calls()
            out.put_many(block)
            added = out.count_calls() - before
            report.calls_added += added
            report.calls_duplicate += len(block) - added
        _merge_clusterings(out, ws, report)
        unreadable = ws.memo_get(UNREADABLE_MEMO) or {}
        if unreadable:
            known = out.memo_get(UNREADABLE_MEMO) or {}
            fresh = {k: v for k, v in unreadable.items() if k not in known}
            if fresh:
                out.memo_put(UNREADABLE_MEMO, {**known, **fresh})
                report.unreadable_added += len(fresh)
    for line in report.notes + report.conflicts:
        reporter.warn(line)
    report.seconds = time.perf_counter() - started
    return report
