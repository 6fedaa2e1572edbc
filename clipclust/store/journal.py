"""A rollback journal that makes every write transaction on the HDF5 file atomic under kill -9.

HDF5 updates its metadata in place, so a process killed inside a write leaves a file that no longer
opens.  While a transaction is open, h5py writes through :class:`JournaledFile`, which keeps the new pages in
memory; at commit it first copies every page of the *old* file it is about to overwrite into
``PATH.journal`` (pages past the old end need no copy: truncating restores them), then writes the new
pages, then deletes the journal, which commits.  A journal found on the
next open means a writer died mid-transaction: :func:`rollback` puts the saved pages back and truncates
the file to its old length, which is exactly the file as it was before that transaction.

Each journal record carries a CRC, so a record torn by the kill is ignored (the write it guarded never
started).  Nothing is fsynced unless ``CLIPCLUST_FSYNC=1``: a killed process's writes survive in the
page cache, power loss needs the fsyncs (see docs/cache-format.md).

Test-only fault injection: with ``CLIPCLUST_FAULT_AT=N`` the process writes half of its Nth low-level
write (journal, data or commit step) and then SIGKILLs itself; :func:`write_steps` counts the steps.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import zlib
from pathlib import Path

PAGE = 4096
_MAGIC = b"CCJ1"
_HEADER = struct.Struct("<4sQI")  # magic, length of the file before the transaction, crc
_RECORD = struct.Struct("<QII")  # offset, length, crc of (offset, length, data)

_steps = 0


def write_steps() -> int:
    """Low-level write steps taken by this process so far (for the fault-injection test)."""
    return _steps


def _step(fd: int, data: bytes | memoryview, offset: int | None) -> int:
    """One counted low-level write; at step CLIPCLUST_FAULT_AT the process tears it and kills itself."""
    global _steps
    _steps += 1
    fault = os.environ.get("CLIPCLUST_FAULT_AT")
    if fault and int(fault) == _steps:
        half = bytes(data[: len(data) // 2])
        if half:
            os.pwrite(fd, half, offset) if offset is not None else os.write(fd, half)
        os.kill(os.getpid(), signal.SIGKILL)
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):  # a short write (a disk filling up) is finished or raises: never silently torn
        if offset is None:
            done += os.write(fd, view[done:])
        else:
            done += os.pwrite(fd, view[done:], offset + done)
    return done


def _commit_step() -> None:
    """The commit (journal removal) is a step too: a kill just before it must roll back."""
    global _steps
    _steps += 1
    fault = os.environ.get("CLIPCLUST_FAULT_AT")
    if fault and int(fault) == _steps:
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_wanted() -> bool:
    return os.environ.get("CLIPCLUST_FSYNC", "") not in ("", "0")


def journal_path(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


def rollback(path: Path) -> bool:
    """Undo the interrupted transaction recorded in ``PATH.journal``, if any; True when one was undone.

    Idempotent: a kill during the rollback leaves the journal in place and the next open repeats it.
    """
    jpath = journal_path(path)
    try:
        blob = jpath.read_bytes()
    except FileNotFoundError:
        return False
    if len(blob) >= _HEADER.size:
        magic, old_len, crc = _HEADER.unpack_from(blob, 0)
        if magic == _MAGIC and crc == zlib.crc32(blob[: _HEADER.size - 4]):
            fd = os.open(path, os.O_RDWR)
            try:
                pos = _HEADER.size
                while pos + _RECORD.size <= len(blob):
                    offset, length, crc = _RECORD.unpack_from(blob, pos)
                    data = blob[pos + _RECORD.size : pos + _RECORD.size + length]
                    if len(data) != length or crc != zlib.crc32(data, zlib.crc32(struct.pack("<QI", offset, length))):
                        break  # torn by the kill: the write it guarded never started
                    os.pwrite(fd, data, offset)
                    pos += _RECORD.size + length
                os.ftruncate(fd, old_len)
                if _fsync_wanted():
                    os.fsync(fd)
            finally:
                os.close(fd)
    # a header that is torn or missing means no data write had started yet: nothing to undo
    jpath.unlink()
    return True


class JournaledFile(io.RawIOBase):
    """The file object h5py writes through during one transaction (``h5py.File(obj, "r+")``).

    Writes are held in memory as dirty pages (reads see them) until :meth:`commit`, which writes the
    old content of every page it will overwrite to the journal in one write, then the dirty pages in
    contiguous runs, then removes the journal.  A transaction is one batch, so the memory is the batch's.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.jpath = journal_path(path)
        self._fd = os.open(path, os.O_RDWR)
        self._old_len = os.fstat(self._fd).st_size
        self._size = self._old_len
        self._pos = 0
        self._dirty: dict[int, bytearray] = {}

    # -- the io protocol h5py's fileobj driver uses
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        out = memoryview(buffer).cast("B")
        end = min(self._pos + len(out), self._size)
        pos = self._pos
        while pos < end:
            page, within = divmod(pos, PAGE)
            take = min(PAGE - within, end - pos)
            dirty = self._dirty.get(page)
            if dirty is not None:
                out[pos - self._pos : pos - self._pos + take] = dirty[within : within + take]
            else:  # a run of clean pages in one read
                stop = pos + take
                while stop < end and (stop // PAGE) not in self._dirty:
                    stop = min(end, (stop // PAGE + 1) * PAGE)
                take = stop - pos
                got = os.preadv(self._fd, [out[pos - self._pos : pos - self._pos + take]], pos)
                if got < take:
                    out[pos - self._pos + got : pos - self._pos + take] = bytes(take - got)
            pos += take
        n = max(0, end - self._pos)
        self._pos += n
        return n

    def write(self, data) -> int:  # type: ignore[no-untyped-def]
        data = memoryview(data).cast("B")
        pos, end = self._pos, self._pos + len(data)
        while pos < end:
            page, within = divmod(pos, PAGE)
            take = min(PAGE - within, end - pos)
            buf = self._dirty.get(page)
            if buf is None:
                buf = self._dirty[page] = self._page(page)
            buf[within : within + take] = data[pos - self._pos : pos - self._pos + take]
            pos += take
        self._pos = end
        self._size = max(self._size, end)
        return len(data)

    def _page(self, page: int) -> bytearray:
        """The current content of a clean page, zero-padded to a full page."""
        old = os.pread(self._fd, PAGE, page * PAGE) if page * PAGE < self._size else b""
        return bytearray(old[: max(0, self._size - page * PAGE)]).ljust(PAGE, b"\0")

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if size < self._size:
            for page in [p for p in self._dirty if p * PAGE >= size]:
                del self._dirty[page]
            last = self._dirty.get(size // PAGE)
            if last is not None:
                last[size % PAGE :] = bytes(PAGE - size % PAGE)
        self._size = size
        return size

    def flush(self) -> None:
        pass

    def commit(self) -> None:
        """Journal the old pages, write the new ones, drop the journal: the transaction is permanent."""
        saved = [p for p in sorted(self._dirty) if p * PAGE < self._old_len]
        if self._size < self._old_len:  # shrinking loses the tail: keep it too
            saved = sorted(set(saved) | set(range(self._size // PAGE, (self._old_len + PAGE - 1) // PAGE)))
        wrote = False
        if saved or self._size != self._old_len or self._dirty:
            self._write_journal(saved)
            wrote = True
        for start, stop in _runs(sorted(self._dirty)):
            lo, hi = start * PAGE, min(stop * PAGE, self._size)
            if hi > lo:
                blob = b"".join(bytes(self._dirty[p]) for p in range(start, stop))[: hi - lo]
                _step(self._fd, blob, lo)
        if os.fstat(self._fd).st_size != self._size:
            os.ftruncate(self._fd, self._size)
        if _fsync_wanted():
            os.fsync(self._fd)
        self._close_fd()
        if wrote:
            _commit_step()
            self.jpath.unlink()

    def _write_journal(self, pages: list[int]) -> None:
        head = struct.pack("<4sQ", _MAGIC, self._old_len)
        parts = [head, struct.pack("<I", zlib.crc32(head))]
        for page in pages:
            offset = page * PAGE
            old = os.pread(self._fd, min(PAGE, self._old_len - offset), offset)
            parts.append(_RECORD.pack(offset, len(old), zlib.crc32(old, zlib.crc32(struct.pack("<QI", offset, len(old))))))
            parts.append(old)
        fd = os.open(self.jpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _step(fd, b"".join(parts), None)
            if _fsync_wanted():
                os.fsync(fd)
        finally:
            os.close(fd)

    def abort(self) -> None:
        """Forget this transaction (a Python exception inside it): nothing reached the file."""
        self._dirty.clear()
        self._close_fd()
        rollback(self.path)

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        self._close_fd()
        super().close()


def _runs(pages: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs [start, stop) of sorted page numbers."""
    runs: list[tuple[int, int]] = []
    for p in pages:
        if runs and runs[-1][1] == p:
            runs[-1] = (runs[-1][0], p + 1)
        else:
            runs.append((p, p + 1))
    return runs
