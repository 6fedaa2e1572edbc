"""A small JSON memo in the file's attributes (local-weight hashes, content known to be unreadable)."""

from __future__ import annotations

import json
from typing import Any

from clipclust.store.files import WorkspaceFile


class Memo:
    """JSON values by key in one attribute of the file: small facts worth not recomputing."""

    def __init__(self, file: WorkspaceFile) -> None:
        self._file = file

    def get(self, key: str) -> Any:
        with self._file.open_read() as f:
            if f is None or "memo" not in f.attrs:
                return None
            return json.loads(f.attrs["memo"]).get(key)

    def put(self, key: str, value: Any) -> None:
        with self._file.open_write() as f:
            memo = json.loads(f.attrs["memo"]) if "memo" in f.attrs else {}
            memo[key] = value
            f.attrs["memo"] = json.dumps(memo, sort_keys=True)
