"""The image stage: decode and preprocess in a thread pool while the model encodes the previous batch, and
write each batch (its items, image vectors and derived rows) as one transaction when it completes.

An interrupted run keeps every batch it finished; content that fails to decode is remembered, so a
re-run skips it without reading it again.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

from clipclust.commands.embed.derive import block_rows
from clipclust.commands.embed.plan import EmbedPlan
from clipclust.commands.embed.sources import HashedFile, item_record, remember_unreadable
from clipclust.core.images import (DEFAULT_MAX_PIXELS, ImageTooLarge, UnreadableImage, decode_image, open_regular,
                                   probe_image, sha256_bytes)
from clipclust.core.progress import Reporter
from clipclust.errors import plain
from clipclust.models.clip import ClipEncoder
from clipclust.store import Workspace


def prefetch(fn: Callable[[Any], Any], items: Iterable[Any], pool: ThreadPoolExecutor, depth: int) -> Iterator[Any]:
    """Ordered map over a thread pool that keeps at most ``depth`` calls in flight."""
    pending: deque[Future[Any]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def load_one(encoder: ClipEncoder, s: HashedFile, max_pixels: int | None = DEFAULT_MAX_PIXELS,
             ) -> tuple[HashedFile, Any, int, int, str | None, bool]:
    """(file, pixels, width, height, None, _), or (file, None, 0, 0, why, lasting) for a file that is skipped.

    The header is read first: an image over ``max_pixels`` is skipped before its bytes are read.  A file
    that changed since it was hashed is taken as it is now (its hash, size and mtime follow what was
    read); one that changes while it is read is skipped for this run.  ``lasting`` says the failure is
    the content's (remembered, so re-runs skip it unread), not the moment's or the limit's.
    """
    try:
        with open_regular(s.src.file) as fh:
            before = os.fstat(fh.fileno())
            unchanged = (before.st_size, before.st_mtime_ns) == (s.size, s.mtime_ns)
            try:
                probe_image(fh, encoder.input_size, max_pixels)
                fh.seek(0)
                data = fh.read()
            except ImageTooLarge as exc:
                return s, None, 0, 0, str(exc), False
            except UnreadableImage as exc:
                return s, None, 0, 0, str(exc), unchanged
            after = os.fstat(fh.fileno())
        if len(data) != after.st_size or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            return s, None, 0, 0, "it changed while it was being read; re-run to embed it", False
        digest = sha256_bytes(data)
        if digest != s.sha256 or not unchanged:  # changed since it was hashed: take what was read
            s = HashedFile(s.src, digest, len(data), before.st_mtime_ns)
        try:
            image = decode_image(data, min_size=encoder.input_size, max_pixels=max_pixels)
        except ImageTooLarge as exc:
            return s, None, 0, 0, str(exc), False
        except UnreadableImage as exc:
            return s, None, 0, 0, str(exc), True
        width, height = image.info["original_size"]
        return s, encoder.preprocess(image), width, height, None, False
    except OSError as exc:
        return s, None, 0, 0, exc.strerror or str(exc), False


def encode_images(workspace: Workspace, encoder: ClipEncoder, todo: list[HashedFile], plan: EmbedPlan, split: str,
                  batch_size: int, workers: int, reporter: Reporter, skipped: list[tuple[str, str]],
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> int:
    """Encode ``todo`` in batches of ``batch_size``; returns how many images were stored.

    Files that are skipped are warned about and added to ``skipped``; content that does not decode is
    remembered as unreadable (not an image over ``max_pixels``, nor a file that was moving).
    """
    import torch

    encoded = 0
    failed: dict[str, str] = {}
    batch: list[tuple[HashedFile, Any, int, int]] = []

    def flush() -> None:
        nonlocal encoded, batch
        if not batch:
            return
        vecs = encoder.encode_images(torch.stack([b[1] for b in batch]))
        shas = [b[0].sha256 for b in batch]
        rows = [(plan.image, shas, vecs), *block_rows(plan, shas, vecs)]
        workspace.write_batch(items=[item_record(b[0], split, b[2], b[3]) for b in batch], rows=rows)
        encoded += len(batch)
        advance(len(batch))
        batch = []

    with reporter.task("embedding", len(todo)) as advance, ThreadPoolExecutor(workers) as pool:
        for s, pixels, w, h, err, lasting in prefetch(lambda s: load_one(encoder, s, max_pixels), todo, pool,
                                                      batch_size * 2):
            if err is not None:
                skipped.append((str(s.src.path), plain(err)))
                reporter.warn(f"skipped {s.src.path}: {err}")
                if lasting:
                    failed[s.sha256] = plain(err)
                advance(1)
                continue
            batch.append((s, pixels, w, h))
            if len(batch) >= batch_size:
                flush()
        flush()
    remember_unreadable(workspace, failed)
    return encoded
