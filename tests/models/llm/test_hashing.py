"""Model file identities: chunked sha256, memoised by path, size and mtime."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from clipclust.models.llm import file_sha256


def test_file_sha256_is_chunked_and_memoised_by_path_size_mtime(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    data = os.urandom(3 * 1024 + 17)
    f.write_bytes(data)
    assert file_sha256(f, chunk_size=1000) == hashlib.sha256(data).hexdigest()
    st = f.stat()
    # Same size and mtime: the memo answers without reading (the identity of an unchanged file).
    f.write_bytes(bytes(len(data)))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_sha256(f) == hashlib.sha256(data).hexdigest()
    # A touched file is hashed again.
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert file_sha256(f) == hashlib.sha256(bytes(len(data))).hexdigest()
    memo = Path(os.environ["CLIPCLUST_HASH_MEMO"])
    assert hashlib.sha256(bytes(len(data))).hexdigest() in json.loads(memo.read_text()).values()
