"""Opening the workspace file: the lock, the format check, creation, and one transaction per write."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Callable, Iterator

import h5py
from filelock import FileLock, Timeout

from clipclust.version import __version__
from clipclust.errors import ClipclustError, InputError, opt, step
from clipclust.store import journal
from clipclust.store.rows import KeyIndexes, now_iso

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
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


class NotAWorkspace(InputError):
    """The path names something that is not a workspace and never was one: a folder, a text file, another
    program's HDF5 file.  ``what`` says what it is; callers that name the file otherwise than as the
    workspace setting (merge's inputs) re-word the advice."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(f"not a workspace: {path} is {what}; pass a workspace file (or a new file name) to "
                         f"{opt('cache')}")
        self.path, self.what = path, what


def _is_hdf5(path: Path, size: int) -> bool:
    """HDF5's signature at offset 0, 512, 1024, ... (where a user block may push the superblock)."""
    try:
        with open(path, "rb") as fh:
            offset = 0
            while offset < min(size, 1 << 20):
                fh.seek(offset)
                if fh.read(8) == HDF5_SIGNATURE:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return True  # unreadable here: let the open say why
    return False


class ReadOnlyWorkspace(InputError):
    """The workspace cannot be written where it is (a read-only mount, no permission): reads still work."""


_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


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

    def _sniff(self) -> None:
        """Refuse what is not a workspace before its lock is taken, so nothing is left beside it."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise InputError(f"cannot open workspace {self.path}: {exc.strerror or exc}") from None
        if stat.S_ISDIR(st.st_mode):
            raise NotAWorkspace(self.path, "a folder")
        if not stat.S_ISREG(st.st_mode):
            raise NotAWorkspace(self.path, "not a regular file")
        if st.st_size == 0:
            raise NotAWorkspace(self.path, "an empty file")
        if not _is_hdf5(self.path, st.st_size):
            raise NotAWorkspace(self.path, "not an HDF5 file")

    @contextlib.contextmanager
    def _locked(self, writing: bool) -> Iterator[None]:
        """The lock held around a read or a write, with an interrupted write undone first.

        A lock file this call created beside something that turns out not to be a workspace is removed.
        On a read-only folder no lock file can be made: a read goes ahead without one (no clipclust
        process can write there either), a write is refused.
        """
        lock_file = Path(self._lock.lock_file)
        created = not lock_file.exists()
        try:
            self._lock.acquire()
        except Timeout:
            raise ClipclustError(
                f"workspace {self.path} is in use by another clipclust process (waited {self.lock_timeout:g}s); "
                f"wait for it to finish, raise CLIPCLUST_LOCK_TIMEOUT, or pass another {opt('cache')}"
            ) from None
        except OSError as exc:
            if exc.errno == errno.EISDIR:
                raise InputError(f"{lock_file} is a folder, so workspace {self.path} cannot be locked; remove that "
                                 "folder (clipclust keeps an empty lock file there)") from None
            if writing or exc.errno not in _READ_ONLY:
                raise self._write_error(exc) from None
            yield  # read-only folder: read without the lock
            return
        try:
            try:
                if journal.rollback(self.path):  # a writer was killed mid-transaction: undo its half
                    self.rolled_back += 1
            except OSError as exc:
                raise self._write_error(exc, "cannot undo an interrupted write") from None
            yield
        except NotAWorkspace:
            self._lock.release()
            if created:
                lock_file.unlink(missing_ok=True)
            raise
        finally:
            if self._lock.is_locked:
                self._lock.release()

    def _write_error(self, exc: OSError, doing: str = "cannot write") -> ClipclustError:
        """An OS error writing the workspace as one line: read-only is the user's to fix (exit 2); a full
        disk is not (exit 1), and the journal has undone the half-written batch."""
        reason = exc.strerror or str(exc)
        if exc.errno in _READ_ONLY:
            return ReadOnlyWorkspace(f"workspace {self.path} is read-only here ({reason}): {doing} it; make it "
                                     f"writable or pass another {opt('cache')}")
        if exc.errno in _FULL:
            return ClipclustError(f"workspace {self.path}: {reason}; the batch being written was undone and what "
                                  f"earlier batches stored is kept: free some space and run the same command again")
        return ClipclustError(f"workspace {self.path}: {doing} it ({reason})")

    @contextlib.contextmanager
    def open_write(self) -> Iterator[h5py.File]:
        """One transaction: everything written inside lands together or, on any failure or kill, not at all."""
        if self.path.parent and not self.path.parent.exists():
            raise InputError(f"cannot create workspace {self.path}: folder {self.path.parent} does not exist")
        self._sniff()
        with self._locked(writing=True):
            if not self.path.exists():
                self._create()
            try:
                raw = journal.JournaledFile(self.path)
            except OSError as exc:
                raise self._write_error(exc) from None
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
            try:
                raw.commit()
            except OSError as exc:  # a full disk: put back the pages the commit had overwritten
                with contextlib.suppress(OSError):
                    raw.abort()
                raise self._write_error(exc) from None

    @contextlib.contextmanager
    def open_read(self) -> Iterator[h5py.File | None]:
        """Open read-only; yields None when the workspace does not exist yet (and leaves no lock file)."""
        self._sniff()
        if not self.path.exists():
            yield None
            return
        with self._locked(writing=False):
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
        try:
            with h5py.File(tmp, "w") as f:
                f.attrs["format"] = FORMAT_NAME
                f.attrs["format_version"] = FORMAT_VERSION
                f.attrs["created"] = now_iso()
                f.attrs["clipclust_version"] = __version__
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise self._write_error(exc, "cannot create") from None

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
            raise NotAWorkspace(self.path, "an HDF5 file but not a clipclust workspace")
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
