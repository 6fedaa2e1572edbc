"""The reader stage: find the image files, hash their content, and tell what the workspace holds already.

Unchanged files are recognised by the (path, size, mtime) the workspace recorded, so a cached re-run
reads no file.  ``describe`` finds and hashes its images the same way.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

from clipclust.core.images import (SourceFile, apply_labels, find_images, not_regular, open_regular,
                                   read_labels_csv, sha256_file)
from clipclust.core.progress import Reporter
from clipclust.errors import InputError, opt
from clipclust.store import ItemRecord, ItemTable, Workspace

HASH_BLOCK = 256  # files per thread-pool task when hashing
UNREADABLE_MEMO = "unreadable"  # sha256 -> reason: content that failed to decode, skipped on re-runs


@dataclass(slots=True)
class HashedFile:
    """A found file with its content hash and the (size, mtime) it had when hashed."""

    src: SourceFile
    sha256: str
    size: int
    mtime_ns: int


@dataclass
class Hashed:
    """The distinct files of a run, the files that could not be read, and how many were copies.

    ``copies`` names each copy that came with another label than the file kept for its content:
    (copy's path, kept file's path, kept label).
    """

    files: list[HashedFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    duplicates: int = 0
    copies: list[tuple[str, str, str]] = field(default_factory=list)


def find_sources(inputs: Sequence[str], folder_labels: bool = True, labels_csv: str | None = None,
                 reporter: Reporter | None = None, skipped: list[tuple[str, str]] | None = None) -> list[SourceFile]:
    """The image files under ``inputs``, labelled by their folders and then by ``labels_csv``.

    What the walk passed over (named pipes and other files that are not regular, broken links, folders
    that cannot be listed) is warned about and added to ``skipped``.
    """
    passed: list[tuple[str, str]] = []
    sources = find_images(inputs, folder_labels=folder_labels, skipped=passed)
    if labels_csv:
        labels = read_labels_csv(labels_csv)
        if apply_labels(sources, labels) == 0 and sources:
            raise InputError(f"{opt('labels_csv')} {labels_csv}: none of its paths matches an input image")
    if not sources:
        also = f"; {len(passed)} skipped, e.g. {passed[0][0]}: {passed[0][1]}" if passed else ""
        raise InputError(f"no images found in {', '.join(map(str, inputs))} (png, jpg, webp, bmp, tiff, gif){also}")
    for path, reason in passed:
        if reporter is not None:
            reporter.warn(f"skipped {path}: {reason}")
        if skipped is not None:
            skipped.append((path, reason))
    return sources


def hash_sources(sources: list[SourceFile], ws_items: ItemTable, workers: int, reporter: Reporter) -> Hashed:
    """Content hashes, trusting (path, size, mtime) the workspace recorded so unchanged files are not re-read.

    Files go to the thread pool in blocks: a cached re-run of a million files is a million stats, and
    one task per file would cost more in the pool than in the stat.  A file whose content was seen
    before in this run is counted as a duplicate and dropped, unless it is the file the workspace holds
    that content at (the stored item keeps its path).  A file that is not a regular one is never opened.
    """
    known = {p: i for i, p in enumerate(ws_items.path)}

    def one(src: SourceFile) -> HashedFile | tuple[SourceFile, str]:
        try:
            st = os.stat(src.file)
            if not stat.S_ISREG(st.st_mode):
                return src, not_regular(st.st_mode) or "not a regular file"
            row = known.get(src.real_path())
            if row is not None and ws_items.size[row] == st.st_size and ws_items.mtime_ns[row] == st.st_mtime_ns:
                if src.file == src.resolved:  # keep the workspace's equal string, free the found one
                    src.file = src.resolved = ws_items.path[row]
                return HashedFile(src, ws_items.sha256[row], st.st_size, st.st_mtime_ns)
            with open_regular(src.file) as fh:
                st = os.fstat(fh.fileno())
                return HashedFile(src, sha256_file(fh), st.st_size, st.st_mtime_ns)
        except OSError as exc:
            return src, exc.strerror or str(exc)

    def block(start: int) -> list[HashedFile | tuple[SourceFile, str]]:
        return [one(src) for src in sources[start : start + HASH_BLOCK]]

    def stored_here(f: HashedFile) -> bool:
        row = known.get(f.src.real_path())
        return row is not None and ws_items.sha256[row] == f.sha256

    out = Hashed()
    kept: dict[str, int] = {}  # sha256 -> index in out.files
    with reporter.task("hashing", len(sources)) as advance, ThreadPoolExecutor(workers) as pool:
        for results in pool.map(block, range(0, len(sources), HASH_BLOCK)):
            advance(len(results))
            for res in results:
                if isinstance(res, tuple):
                    out.skipped.append((str(res[0].path), res[1]))
                    reporter.warn(f"skipped {res[0].path}: {res[1]}")
                    continue
                at = kept.get(res.sha256)
                if at is None:
                    kept[res.sha256] = len(out.files)
                    out.files.append(res)
                    continue
                out.duplicates += 1
                if stored_here(res) and not stored_here(out.files[at]):
                    out.files[at], res = res, out.files[at]
                first = out.files[at].src
                if res.src.label != first.label:
                    out.copies.append((str(res.src.path), str(first.path), first.label))
    return out


def drop_copies_of_stored(hashed: Hashed, items: ItemTable, stored: dict[str, int]) -> None:
    """Files whose content the workspace holds at another path that still holds it unchanged are copies:
    dropped (counted as duplicates) so the stored item keeps its path and label.

    A stored path that is gone or changed means the file moved: the item takes its new path (and label).
    """
    keep = []
    for s in hashed.files:
        row = stored.get(s.sha256)
        if row is None or items.path[row] == s.src.real_path() or not _unchanged(items, row):
            keep.append(s)
            continue
        hashed.duplicates += 1
        if s.src.label and s.src.label != items.label[row]:
            hashed.copies.append((str(s.src.path), items.path[row], items.label[row]))
    hashed.files = keep


def _unchanged(items: ItemTable, row: int) -> bool:
    """Whether the file an item was last seen at is still there with the size and mtime recorded."""
    try:
        st = os.stat(items.path[row])
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == items.size[row] and st.st_mtime_ns == items.mtime_ns[row]


def warn_copies(copies: list[tuple[str, str, str]], reporter: Reporter) -> None:
    """One line for the copies that came with another label: how many, and the first by both its paths."""
    if copies:
        copy, first, label = copies[0]
        reporter.warn(f"{len(copies)} file(s) are copies of an image found or stored under another label and were "
                      f"not stored again; the first keeps its label and path: {copy} is {first} "
                      f"(label '{label or '(none)'}')")


def item_labels(files: list[HashedFile], items: ItemTable, stored: dict[str, int]) -> dict[str, str]:
    """sha256 -> label: the one given now, else the stored one (an unlabelled file that is a known item).

    ``stored`` is ``items.index()``, built once per run: a million items make it take a while.
    """
    labels = {}
    for s in files:
        row = stored.get(s.sha256)
        labels[s.sha256] = s.src.label or (items.label[row] if row is not None else "")
    return labels


def item_record(s: HashedFile, split: str, width: int = 0, height: int = 0) -> ItemRecord:
    """The item row of a hashed file (width and height once it is decoded)."""
    return ItemRecord(sha256=s.sha256, path=s.src.real_path(), label=s.src.label, split=split,
                      width=width, height=height, size=s.size, mtime_ns=s.mtime_ns)


def _changes(items: ItemTable, row: int, s: HashedFile, split: str) -> bool:
    """Whether upserting the record of ``s`` would change the stored row (empty fields keep what is stored).

    Compared field by field without building the record: a cached re-run asks this of every file.
    """
    label = s.src.label
    return (s.size != items.size[row] or s.mtime_ns != items.mtime_ns[row] or s.src.real_path() != items.path[row]
            or bool(label and label != items.label[row]) or bool(split and split != items.split[row]))


def refresh_items(workspace: Workspace, files: list[HashedFile], items: ItemTable, stored: dict[str, int],
                  split: str) -> None:
    """Store the new path, size, mtime, label or split of known items; a cached re-run of unchanged files writes nothing."""
    changed = [item_record(s, split) for s in files
               if (row := stored.get(s.sha256)) is not None and _changes(items, row, s, split)]
    if changed:
        workspace.upsert_items(changed)


def relabelled(files: list[HashedFile], items: ItemTable, stored: dict[str, int]) -> set[str]:
    """Known items given a label now that differs from the stored one."""
    return {s.sha256 for s in files if s.sha256 in stored and s.src.label
            and s.src.label != items.label[stored[s.sha256]]}


def drop_known_unreadable(workspace: Workspace, todo: list[HashedFile], reporter: Reporter,
                          skipped: list[tuple[str, str]]) -> list[HashedFile]:
    """``todo`` without content that failed to decode in an earlier run: no decode, no model load for it."""
    unreadable: dict[str, str] = workspace.memo_get(UNREADABLE_MEMO) or {}
    for s in todo:
        if s.sha256 in unreadable:
            skipped.append((str(s.src.path), unreadable[s.sha256]))
            reporter.warn(f"skipped {s.src.path}: {unreadable[s.sha256]} (known unreadable content)")
    return [s for s in todo if s.sha256 not in unreadable]


def remember_unreadable(workspace: Workspace, failed: dict[str, str]) -> None:
    """Record content that failed to decode (sha256 -> reason), so re-runs skip it without reading it."""
    if failed:
        workspace.memo_put(UNREADABLE_MEMO, {**(workspace.memo_get(UNREADABLE_MEMO) or {}), **failed})
