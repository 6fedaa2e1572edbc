"""Writing a file the user named (a PNG, a CSV, a .npy): all or nothing, and one clear line when refused.

The file is written beside its target under a temporary name and renamed onto it when complete, so a
full disk, a kill or an error midway never leaves a half-written file where the user looks for one.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

from clipclust.errors import ClipclustError, InputError, opt

_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_PLACE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ENOENT,
          errno.EEXIST}


def output_error(target: Path, exc: OSError, setting: str = "output") -> ClipclustError:
    """An OS error writing ``target`` as one line: the place is the user's to change (exit 2), a full disk
    or a failing device is not (exit 1)."""
    reason = exc.strerror or str(exc)
    if exc.errno in _FULL:
        return ClipclustError(f"cannot write {target}: {reason}; nothing was left there: free some space and run "
                              f"again")
    if exc.errno in _PLACE:
        return InputError(f"cannot write {target}: {reason}; pass another {opt(setting)}")
    return ClipclustError(f"cannot write {target}: {reason}")


@contextlib.contextmanager
def output_path(path: str | os.PathLike[str], setting: str = "output") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to, renamed onto ``path`` when the block ends without an
    error and removed otherwise; missing folders are created.  ``setting`` names the option that chose
    the path, for the advice of an error."""
    target = Path(path)
    if target.is_dir():
        raise InputError(f"cannot write {target}: it is a folder; name a file with {opt(setting)}")
    above = next((p for p in target.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise InputError(f"cannot write {target}: {above} is a file, not a folder; pass another {opt(setting)}")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(target, exc, setting) from None
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:
        raise output_error(target, exc, setting) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
