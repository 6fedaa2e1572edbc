"""Model file identities: sha256 of files and folders, memoised by path, size and mtime."""

from __future__ import annotations

import logging
import hashlib
import json
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)


_HASH_MEMO: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def _hash_memo_path() -> Path | None:
    """Where file hashes persist between runs; ``CLIPCLUST_HASH_MEMO=""`` turns it off."""
    env = os.environ.get("CLIPCLUST_HASH_MEMO")
    if env is not None:
        return Path(env) if env.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clipclust" / "file-hashes.json"


def _read_memo(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def file_sha256(path: str | os.PathLike[str], chunk_size: int = 8 << 20) -> str:
    """sha256 of a file, hashed in chunks and memoised by (path, size, mtime).

    A multi-GB GGUF takes seconds to hash; the memo (in-process and in the user cache directory)
    makes every later run free while any change to the file still changes the identity.
    """
    p = Path(path).resolve()
    st = p.stat()
    memo_key = (str(p), st.st_size, st.st_mtime_ns)
    disk_key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    with _HASH_LOCK:
        if memo_key in _HASH_MEMO:
            return _HASH_MEMO[memo_key]
    memo_path = _hash_memo_path()
    if memo_path is not None:
        hit = _read_memo(memo_path).get(disk_key)
        if isinstance(hit, str) and len(hit) == 64:
            with _HASH_LOCK:
                _HASH_MEMO[memo_key] = hit
            return hit
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    digest = h.hexdigest()
    with _HASH_LOCK:
        _HASH_MEMO[memo_key] = digest
    if memo_path is not None:
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            data = _read_memo(memo_path)
            data[disk_key] = digest
            # Forget files that are gone, so the memo does not grow without bound.
            data = {k: v for k, v in data.items() if Path(k.rsplit("|", 2)[0]).exists()}
            tmp = memo_path.with_name(f"{memo_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=0, sort_keys=True), encoding="utf-8")
            os.replace(tmp, memo_path)
        except OSError as e:  # a read-only home must not stop a run
            log.debug("could not persist file hash memo %s: %s", memo_path, e)
    return digest


def directory_sha256(path: str | os.PathLike[str]) -> str:
    """Identity of a model directory: hash over relative names and each file's sha256."""
    root = Path(path).resolve()
    h = hashlib.sha256()
    for f in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = f.relative_to(root).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        h.update(rel.encode("utf-8") + b"\0" + file_sha256(f).encode("ascii") + b"\n")
    return h.hexdigest()
