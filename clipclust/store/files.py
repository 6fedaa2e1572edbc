"""Opening the workspace file: the lock, the format check, creation, and one transaction per write."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

import h5py
from filelock import FileLock, Timeout

from clipclust.version import __version__
from clipclust.errors import ClipclustError, InputError, opt, step
from clipclust.store import journal
from clipclust.store.rows import KeyIndexes, now_iso

FORMAT_NAME = "clipclust-workspace"
FORMAT_VERSION = 2  # 2: call answers in one byte column (see docs/cache-format.md); 1 is read and upgraded


def default_lock_timeout() -> float:
    """``CLIPCLUST_LOCK_TIMEOUT`` (seconds), read when a workspace is opened so a bad value is a clear error."""
    raw = os.environ.get("CLIPCLUST_LOCK_TIMEOUT", "120")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise InputError(f"CLIPCLUST_LOCK_TIMEOUT={raw!r} is not a number of seconds; set it to e.g. 120")
    return value


class WorkspaceFile:
    """The file, its lock and its transactions; the workspace's other parts read and write inside them.

    ``upgrade`` converts what an older format wrote; it runs inside the first write transaction, which
    then stamps the current version (a kill undoes both).  ``key_indexes`` are the per-process key -> row
    indexes every part shares.
    """

    def __init__(self, path: str | os.PathLike[str], lock_timeout: float | None = None,
                 upgrade: Callable[[h5py.File], None] | None = None):
        self.path = Path(path)
        self.lock_timeout = default_lock_timeout() if lock_timeout is None else lock_timeout
        self._lock = FileLock(str(self.path) + ".lock", timeout=self.lock_timeout)
        self._upgrade = upgrade
        self.key_indexes = KeyIndexes()
        self.rolled_back = 0  # interrupted transactions this object found and undid

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self._lock.acquire()
        except Timeout:
            raise ClipclustError(
                f"workspace {self.path} is in use by another clipclust process (waited {self.lock_timeout:g}s); "
                f"wait for it to finish, raise CLIPCLUST_LOCK_TIMEOUT, or pass another {opt('cache')}"
            ) from None
        try:
            if journal.rollback(self.path):  # a writer was killed mid-transaction: undo its half
                self.rolled_back += 1
            yield
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def open_write(self) -> Iterator[h5py.File]:
        """One transaction: everything written inside lands together or, on any failure or kill, not at all."""
        if self.path.parent and not self.path.parent.exists():
            raise InputError(f"cannot create workspace {self.path}: folder {self.path.parent} does not exist")
        with self._locked():
            if not self.path.exists():
                self._create()
            raw = journal.JournaledFile(self.path)
            try:
                f = h5py.File(raw, "r+")
            except BaseException as exc:
                raw.abort()
                if isinstance(exc, OSError):
                    raise self._unreadable(exc) from None
                raise
            try:
                self._check_format(f)
                if int(f.attrs.get("format_version", 0)) < FORMAT_VERSION:
                    if self._upgrade is not None:
                        self._upgrade(f)
                    f.attrs["format_version"] = FORMAT_VERSION
                yield f
            except BaseException:
                with contextlib.suppress(Exception):
                    f.close()
                raw.abort()
                raise
            try:
                f.close()
            except BaseException:
                raw.abort()
                raise
            raw.commit()

    @contextlib.contextmanager
    def open_read(self) -> Iterator[h5py.File | None]:
        """Open read-only; yields None when the workspace does not exist yet."""
        with self._locked():
            if not self.path.exists():
                yield None
                return
            f = self._open_file("r")
            try:
                self._check_format(f)
                yield f
            finally:
                f.close()

    def _create(self) -> None:
        """A new, empty workspace appears at once (written beside, then renamed) or not at all."""
        tmp = self.path.with_name(self.path.name + ".creating")
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["created"] = now_iso()
            f.attrs["clipclust_version"] = __version__
        os.replace(tmp, self.path)

    def _open_file(self, mode: str) -> h5py.File:
        try:
            return h5py.File(self.path, mode)
        except OSError as exc:
            raise self._unreadable(exc) from None

    def _unreadable(self, exc: OSError) -> ClipclustError:
        return ClipclustError(
            f"workspace {self.path} is not a readable HDF5 file ({exc}); run {step('check', opt('repair'))} "
            "to salvage what it holds"
        )

    def _check_format(self, f: h5py.File) -> None:
        if f.attrs.get("format") != FORMAT_NAME:
            raise InputError(f"{self.path} is an HDF5 file but not a clipclust workspace; pass another {opt('cache')}")
        version = int(f.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise InputError(
                f"workspace {self.path} has format {version}, newer than this clipclust understands; upgrade clipclust"
            )

    def exists(self) -> bool:
        return self.path.exists()

    @staticmethod
    def guard(f: h5py.File) -> str:
        """The file's creation id: a replaced file starts fresh key indexes."""
        return str(f.attrs.get("created", ""))
