"""The image stage: decode and preprocess in a thread pool while the model encodes the previous batch, and
write each batch (its items, image vectors and derived rows) as one transaction when it completes.

An interrupted run keeps every batch it finished; content that fails to decode is remembered, so a
re-run skips it without reading it again.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

from clipclust.commands.embed.derive import block_rows
from clipclust.commands.embed.plan import EmbedPlan
from clipclust.commands.embed.sources import HashedFile, item_record, remember_unreadable
from clipclust.core.images import UnreadableImage, decode_image, sha256_bytes
from clipclust.core.progress import Reporter
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


def load_one(encoder: ClipEncoder, s: HashedFile) -> tuple[HashedFile, Any, int, int, str | None]:
    """(file, pixels, width, height, None), or (file, None, 0, 0, why) for a file that does not decode."""
    try:
        data = s.src.path.read_bytes()
        image = decode_image(data, min_size=encoder.input_size)
        if sha256_bytes(data) != s.sha256:  # the file changed since it was hashed: take what we decoded
            s = HashedFile(s.src, sha256_bytes(data), len(data), s.mtime_ns)
        width, height = image.info["original_size"]
        return s, encoder.preprocess(image), width, height, None
    except (OSError, UnreadableImage) as exc:
        return s, None, 0, 0, str(exc) or type(exc).__name__


def encode_images(workspace: Workspace, encoder: ClipEncoder, todo: list[HashedFile], plan: EmbedPlan, split: str,
                  batch_size: int, workers: int, reporter: Reporter, skipped: list[tuple[str, str]]) -> int:
    """Encode ``todo`` in batches of ``batch_size``; returns how many images were stored.

    Files that do not decode are warned about, added to ``skipped`` and remembered as unreadable.
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
        for s, pixels, w, h, err in prefetch(lambda s: load_one(encoder, s), todo, pool, batch_size * 2):
            if err is not None:
                skipped.append((str(s.src.path), err))
                reporter.warn(f"skipped {s.src.path}: {err}")
                failed[s.sha256] = err
                advance(1)
                continue
            batch.append((s, pixels, w, h))
            if len(batch) >= batch_size:
                flush()
        flush()
    remember_unreadable(workspace, failed)
    return encoded
