"""One description per item, batch by batch: items already in the set cost nothing, answers already in the
call store open no file, and each batch's rows are written as soon as it completes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from clipclust.commands.describe.descriptions import DescribeSummary, description_spec
from clipclust.core.images import UnreadableImage, decode_image
from clipclust.core.progress import Reporter
from clipclust.methods.ictc import describe_prompt
from clipclust.models.llm import DecodeParams
from clipclust.models.vlm import CachedDescriber, describe_key
from clipclust.store import ItemRecord, SetSpec, Workspace

BATCH = 16  # items per batch at least (more when the describer runs requests concurrently)


def loader(path: str) -> Callable[[], Any]:
    """Decode on demand: only descriptions missing from the store ever read the file."""
    def load() -> Any:
        return decode_image(Path(path).read_bytes())
    return load


def item_spec(cached: CachedDescriber, vlm: str | None, criterion: str | None, prompt: str | None, label: str,
              params: DecodeParams) -> tuple[SetSpec, str]:
    """The description set of one text per item, and its prompt (IC|TC's step-1 prompt for the criterion)."""
    text = prompt or describe_prompt(criterion)
    spec = description_spec("description", f"description:{label}", cached.identity, text,
                            {"describer": cached.describer.name, "vlm_spec": str(vlm or ""),
                             "criterion": criterion or "", "params": params.to_dict()}, (params.to_dict(),))
    return spec, text


def describe_each(workspace: Workspace, cached: CachedDescriber, spec: SetSpec, keys: list[str], paths: list[str],
                  records: list[ItemRecord], done: set[str], prompt: str, params: DecodeParams, reporter: Reporter,
                  summary: DescribeSummary) -> None:
    """Describe the items of ``keys`` (files at ``paths``) that ``done`` lacks, storing ``records`` with them."""
    record_of = {r.sha256: r for r in records}
    todo = [i for i, k in enumerate(keys) if k not in done]
    summary.cached += len(keys) - len(todo)
    finished = [r for r in records if r.sha256 in done]
    if finished:
        workspace.write_batch(items=finished)  # refresh paths/labels of items described before (renamed files)
    step = max(BATCH, 4 * cached.describer.max_concurrency)
    with reporter.task("describing", len(todo)) as advance:
        for start in range(0, len(todo), step):
            batch = todo[start:start + step]
            kept, images, sizes = _open_batch(workspace, cached, batch, keys, paths, prompt, params, reporter, summary)
            texts = cached.describe(images, prompt, params, input_ids=[keys[i] for i in kept]) if kept else []
            answered = [j for j, text in enumerate(texts) if text.strip()]  # an empty answer is not stored
            if kept:
                summary.count(cached.last_stats.misses, cached.last_stats.hits, len(kept) - len(answered))
            kept, texts = [kept[j] for j in answered], [texts[j] for j in answered]
            items = []
            for i in kept:
                rec = record_of.get(keys[i])
                if rec is not None:
                    w, h = sizes.get(keys[i], (0, 0))
                    items.append(ItemRecord(**{**rec.__dict__, "width": w, "height": h}))
            workspace.write_batch(items=items, rows=[(spec, [keys[i] for i in kept], texts)])
            advance(len(batch))


def _open_batch(workspace: Workspace, cached: CachedDescriber, batch: list[int], keys: list[str], paths: list[str],
                prompt: str, params: DecodeParams, reporter: Reporter,
                summary: DescribeSummary) -> tuple[list[int], list[Any], dict[str, tuple[int, int]]]:
    """(indices kept, their images, decoded sizes by key): answered items get a loader that is never called,
    the others are decoded now; files that do not decode are skipped and reported."""
    stored = workspace.get_many([describe_key(cached.identity, params, prompt, keys[i]) for i in batch])
    images: list[Any] = []
    kept: list[int] = []
    sizes: dict[str, tuple[int, int]] = {}
    for i in batch:
        if describe_key(cached.identity, params, prompt, keys[i]) in stored:
            images.append(loader(paths[i]))  # never called: the answer is in the store
            kept.append(i)
            continue
        try:
            image = decode_image(Path(paths[i]).read_bytes())
        except (OSError, UnreadableImage) as exc:
            summary.skipped.append((paths[i], str(exc) or type(exc).__name__))
            reporter.warn(f"skipped {paths[i]}: {exc}")
            continue
        sizes[keys[i]] = image.size
        images.append(image)
        kept.append(i)
    return kept, images, sizes
