"""Verify a workspace and salvage what a broken one still holds into a fresh file beside it.

The journal makes a kill -9 harmless, but a file can still break in ways clipclust does not control
(power loss without ``CLIPCLUST_FSYNC=1``, a full disk, a copy cut short, another program).  ``check``
reads every dataset and tests the invariants the store keeps; ``repair`` copies everything that reads
into ``NAME.repaired.h5``, trims parallel columns to their common length and drops duplicate keys.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from clipclust.errors import ClipclustError, InputError, opt
from clipclust.store import journal
from clipclust.store.derived import is_derived
from clipclust.store.files import FORMAT_NAME
from clipclust.store.rows import decode, now_iso
from clipclust.store.workspace import Workspace

BLOCK = 1 << 16
SALVAGE_ATTR = "salvaged"  # JSON {from, at, lost} on a file made by repair_workspace that lost something


@dataclass
class CheckReport:
    """The verdict of :func:`check_workspace`: ``problems`` is empty when the workspace is sound."""

    path: str
    problems: list[str] = field(default_factory=list)
    items: int = 0
    sets: int = 0
    clusterings: int = 0
    calls: int = 0
    rolled_back: bool = False
    salvaged_from: str = ""  # the broken file a repair salvaged this one from, when it lost something
    lacks: list[str] = field(default_factory=list)  # what that repair could not recover

    @property
    def ok(self) -> bool:
        return not self.problems

    def verdict(self) -> str:
        """One line: ok with what the file holds (and what a repair left out of it), or BROKEN with the first
        problem and how many more."""
        if self.ok:
            undone = "; undid one interrupted write" if self.rolled_back else ""
            lacks = ""
            if self.salvaged_from:
                lacks = (f"; salvaged from {self.salvaged_from}, it lacks what could not be recovered then: "
                         + "; ".join(text[:200] for text in self.lacks))
            return (f"{self.path}: ok ({self.items} items, {self.sets} sets, {self.clusterings} clusterings, "
                    f"{self.calls} cached calls{undone}){lacks}")
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"{self.path}: BROKEN: {self.problems[0]}{more}"


def _read_all(ds: h5py.Dataset) -> tuple[np.ndarray, str | None]:
    """The dataset read block by block: the readable prefix, and the error that stopped it (None if whole)."""
    if ds.shape == () or ds.ndim == 0:
        try:
            return ds[()], None
        except Exception as exc:  # noqa: BLE001 - any HDF5 failure is a finding, not a crash
            return np.zeros(0), f"{ds.name}: {exc}"
    parts = []
    for lo in range(0, ds.shape[0], BLOCK):
        try:
            parts.append(ds[lo : lo + BLOCK])
        except Exception as exc:  # noqa: BLE001
            return (np.concatenate(parts) if parts else ds[:0] if ds.shape[0] == 0 else np.zeros((0, *ds.shape[1:]), ds.dtype)), \
                f"{ds.name}: rows from {lo} unreadable ({exc})"
    return (np.concatenate(parts) if parts else np.zeros((0, *ds.shape[1:]), ds.dtype)), None


def _duplicates(keys: np.ndarray) -> int:
    return len(keys) - len(np.unique(keys))


def _non_finite(data: np.ndarray) -> int:
    """How many rows of a set hold NaN or inf (no model clipclust accepts writes one)."""
    if not np.issubdtype(data.dtype, np.floating) or not len(data):
        return 0
    return int((~np.isfinite(data.reshape(len(data), -1))).any(axis=1).sum())


def check_workspace(path: str | os.PathLike[str]) -> CheckReport:
    """Read everything and test the invariants; the caller holds no lock (this takes the workspace's)."""
    ws = Workspace(path)
    report = CheckReport(str(path))
    if not ws.exists():
        raise InputError(f"no workspace at {path}; pass the file to check with {opt('cache')}")
    try:
        with ws.open_read() as f:
            report.rolled_back = ws.rolled_back > 0
            _check_open(f, report)
    except ClipclustError as exc:
        if isinstance(exc, InputError):
            raise
        report.problems.append(f"the file does not open ({str(exc).split(' (', 1)[-1].split(')')[0]})")
    return report


def _check_open(f: h5py.File, report: CheckReport) -> None:
    problems = report.problems

    def read(ds: h5py.Dataset) -> np.ndarray:
        data, err = _read_all(ds)
        if err:
            problems.append(err)
        return data

    if f.attrs.get("format") != FORMAT_NAME:
        problems.append("not a clipclust workspace")
        return
    salvage = f.attrs.get(SALVAGE_ATTR)
    if salvage:
        record = json.loads(salvage)
        report.salvaged_from, report.lacks = str(record.get("from", "")), [str(x) for x in record.get("lost", [])]
    item_keys: set[bytes] = set()
    if "items" in f:
        g = f["items"]
        columns = {name: read(ds) for name, ds in g.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            problems.append(f"items columns differ in length ({sorted(lengths)})")
        shas = columns.get("sha256", np.zeros(0, "S64"))
        report.items = len(shas)
        if _duplicates(shas):
            problems.append(f"items: {_duplicates(shas)} duplicate sha256 keys")
        item_keys = set(shas.tolist())
        kept = g.attrs.get("counts")
        if kept and not problems and "split" in columns and "label" in columns:
            scanned = Counter(zip(decode(columns["split"]), decode(columns["label"])))
            if {(a, b): n for a, b, n in json.loads(kept)} != dict(scanned):
                problems.append("items: the kept counts per split and label do not match the items")
    for set_id, g in (f["sets"].items() if "sets" in f else []):
        report.sets += 1
        keys, data = read(g["keys"]), read(g["data"])
        if len(keys) != len(data):
            problems.append(f"set {set_id}: {len(keys)} keys but {len(data)} rows")
        if _duplicates(keys):
            problems.append(f"set {set_id}: {_duplicates(keys)} duplicate keys")
        if _non_finite(data):
            problems.append(f"set {set_id}: {_non_finite(data)} rows hold NaN or inf")
        if is_derived(g):
            lacking = [str(g.attrs.get(a, "")) for a in ("image_set", "text_set") if f"sets/{g.attrs.get(a, '')}" not in f]
            if lacking:
                problems.append(f"set {set_id}: computed on read from {', '.join(lacking)}, which the file lacks")
        if g.attrs.get("keyed_by", "item") == "item" and not set(keys.tolist()) <= item_keys:
            problems.append(f"set {set_id}: {len(set(keys.tolist()) - item_keys)} keys are not stored items")
    for name, g in (f["clusterings"].items() if "clusterings" in f else []):
        report.clusterings += 1
        if name.endswith(".replacing"):
            problems.append(f"clustering {name}: a replacement left half-written")
            continue
        if "params" not in g.attrs or "keys" not in g or "ids" not in g:
            problems.append(f"clustering {name}: incomplete (no parameters, keys or ids)")
            continue
        if len(read(g["keys"])) != len(read(g["ids"])):
            problems.append(f"clustering {name}: keys and ids differ in length")
        for ds in g.values():
            read(ds)
    if "calls" in f:
        g = f["calls"]
        keys = read(g["keys"]) if "keys" in g else np.zeros(0, "S64")
        report.calls = len(keys)
        if _duplicates(keys):
            problems.append(f"calls: {_duplicates(keys)} duplicate keys")
        if "end" in g:
            end, text = read(g["end"]), read(g["text"])
            if len(end) != len(keys) or (len(end) and (end[-1] != len(text) or np.any(np.diff(end) < 0))):
                problems.append("calls: answer offsets do not match the keys or the text")
        elif "values" in g and len(read(g["values"])) != len(keys):
            problems.append("calls: keys and values differ in length")


def repair_workspace(path: str | os.PathLike[str], dest: str | os.PathLike[str] | None = None) -> tuple[Path, list[str]]:
    """Copy what reads into a fresh workspace beside ``path``; returns its path and what was lost.

    The broken file is never modified.  A file cut short (its end missing) is padded back to the length
    its superblock records on a scratch copy, so the parts before the cut still read.
    """
    src = Path(path)
    if not src.exists():
        raise InputError(f"no workspace at {src}; pass the file to repair with {opt('cache')}")
    out = Path(dest) if dest else src.with_name(src.stem + ".repaired" + (src.suffix or ".h5"))
    if out.exists():
        raise InputError(f"{out} already exists; move it aside first")
    scratch = src.with_name(src.name + ".salvage")
    shutil.copyfile(src, scratch)
    journal_file = journal.journal_path(src)
    if journal_file.exists():  # undo an interrupted write on the copy, leaving the original as it is
        shutil.copyfile(journal_file, journal.journal_path(scratch))
        journal.rollback(scratch)
    lost: list[str] = []
    tmp = out.with_name(out.name + ".creating")
    try:
        f = _open_salvage(scratch, lost)
        try:
            with h5py.File(tmp, "w") as g:
                _copy_group(f, g, lost)
                _realign(g, lost)
                if lost:  # kept in the file: check says what it lacks for as long as the file is used
                    g.attrs[SALVAGE_ATTR] = json.dumps({"from": str(src), "at": now_iso(), "lost": lost})
                elif SALVAGE_ATTR in g.attrs:
                    del g.attrs[SALVAGE_ATTR]
        finally:
            f.close()
        os.replace(tmp, out)
    finally:
        scratch.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out, lost


def _open_salvage(scratch: Path, lost: list[str]) -> h5py.File:
    try:
        return h5py.File(scratch, "r")
    except OSError as exc:
        match = re.search(r"stored_eof = (\d+)", str(exc))
        if not match:
            raise ClipclustError(f"{scratch.name[: -len('.salvage')]} cannot be salvaged: {exc}") from None
        cut = os.path.getsize(scratch)
        os.truncate(scratch, int(match.group(1)))
        lost.append(f"the file was cut short at {cut} of {match.group(1)} bytes; its end reads as zeros")
        try:
            return h5py.File(scratch, "r")
        except OSError as exc2:
            raise ClipclustError(f"{scratch.name[: -len('.salvage')]} cannot be salvaged: {exc2}") from None


def _copy_group(src: h5py.Group, dst: h5py.Group, lost: list[str]) -> None:
    for key, value in _safe(lambda: list(src.attrs.items()), [], lost, f"{src.name} attributes"):
        dst.attrs[key] = value
    for name in _safe(lambda: list(src.keys()), [], lost, f"{src.name} members"):
        obj = _safe(lambda: src[name], None, lost, f"{src.name.rstrip('/')}/{name}")
        if isinstance(obj, h5py.Group):
            _copy_group(obj, dst.create_group(name), lost)
        elif isinstance(obj, h5py.Dataset):
            data, err = _read_all(obj)
            if err:
                lost.append(err)
            if obj.ndim == 0:
                if err is None:
                    dst.create_dataset(name, data=data, dtype=obj.dtype)
                continue
            ds = dst.create_dataset(name, shape=data.shape, maxshape=(None, *data.shape[1:]), dtype=obj.dtype,
                                    chunks=obj.chunks or True)
            if len(data):
                ds[...] = data
            for key, value in _safe(lambda: list(obj.attrs.items()), [], lost, f"{obj.name} attributes"):
                ds.attrs[key] = value


def _safe(fn: Callable[[], Any], default: Any, lost: list[str], what: str) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - salvage everything else
        lost.append(f"{what}: {exc}")
        return default


def _trim(group: h5py.Group, names: list[str], lost: list[str]) -> None:
    names = [n for n in names if n in group]
    if not names:
        return
    n = min(group[name].shape[0] for name in names)
    for name in names:
        if group[name].shape[0] > n:
            lost.append(f"{group[name].name}: {group[name].shape[0] - n} rows past the common length dropped")
            group[name].resize(n, axis=0)


def _dedupe(group: h5py.Group, key: str, names: list[str], lost: list[str]) -> None:
    """Keep each key's first row; rows whose key reads empty (zeros where the file was cut) go too."""
    keys = group[key][:]
    _, first = np.unique(keys, return_index=True)
    keep = np.sort(first[keys[first] != keys[:0].dtype.type()])
    if len(keep) == len(keys):
        return
    lost.append(f"{group.name}: {len(keys) - len(keep)} duplicate or blank keys dropped")
    for name in names:
        ds = group[name]
        data = ds[:][keep]
        ds.resize(len(keep), axis=0)
        ds[...] = data


def _drop_non_finite(group: h5py.Group, lost: list[str]) -> None:
    data = group["data"][:]
    if not _non_finite(data):
        return
    keep = np.isfinite(data.reshape(len(data), -1)).all(axis=1)
    lost.append(f"{group.name}: {int((~keep).sum())} rows holding NaN or inf dropped")
    for name, values in (("keys", group["keys"][:][keep]), ("data", data[keep])):
        group[name].resize(len(values), axis=0)
        group[name][...] = values


def _realign(f: h5py.File, lost: list[str]) -> None:
    if "items" in f and "sha256" in f["items"]:
        g = f["items"]
        names = list(g.keys())
        n = g["sha256"].shape[0]
        for name in names:  # the keys decide: a lost path or label is left blank, the item is kept
            if g[name].shape[0] < n:
                lost.append(f"{g[name].name}: rows from {g[name].shape[0]} left blank")
                g[name].resize(n, axis=0)
        _trim(g, names, lost)
        _dedupe(g, "sha256", names, lost)
        if "counts" in g.attrs:
            del g.attrs["counts"]  # recounted by the next write
    for g in (f["sets"].values() if "sets" in f else []):
        _trim(g, ["keys", "data"], lost)
        if "keys" in g and "data" in g:
            _dedupe(g, "keys", ["keys", "data"], lost)
            _drop_non_finite(g, lost)
    for name in list(f["clusterings"].keys()) if "clusterings" in f else []:
        g = f["clusterings"][name]
        if name.endswith(".replacing") or "params" not in g.attrs:
            lost.append(f"clustering {name}: incomplete, dropped")
            del f["clusterings"][name]
    if "calls" in f and "end" in f["calls"]:
        g = f["calls"]
        _trim(g, ["keys", "end"], lost)
        end = g["end"][:]
        # offsets strictly grow (an empty answer is so rare that zeros read back from a lost region
        # are the likelier story) and stay within the text
        ok = (end <= g["text"].shape[0]) & (np.diff(end, prepend=0) > 0) & (g["keys"][:] != b"")
        good = int(np.argmin(ok)) if not ok.all() else len(end)
        if good < len(end):
            lost.append(f"calls: {len(end) - good} answers whose text was lost dropped")
            for name in ("keys", "end"):
                g[name].resize(good, axis=0)
        g["text"].resize(int(end[good - 1]) if good else 0, axis=0)
        keys = g["keys"][:]
        if len(np.unique(keys)) != len(keys):  # keep each key's first answer: rebuild the text column
            end = g["end"][:]
            start = np.concatenate([[0], end[:-1]])
            text = g["text"][:]
            _, first = np.unique(keys, return_index=True)
            keep = np.sort(first)
            blobs = [text[start[i] : end[i]] for i in keep]
            lost.append(f"calls: {len(keys) - len(keep)} duplicate keys dropped")
            for name, data in (("keys", keys[keep]), ("end", np.cumsum([len(b) for b in blobs], dtype=np.int64)),
                               ("text", np.concatenate(blobs) if blobs else np.zeros(0, np.uint8))):
                g[name].resize(len(data), axis=0)
                g[name][...] = data
    elif "calls" in f and "values" in f["calls"]:
        _trim(f["calls"], ["keys", "values"], lost)
