"""`embed` as a library call: images in, image / text / zero-shot / fused / class-agnostic sets out.

The run is planned before any model is loaded: files are hashed (unchanged files are recognised by path,
size and mtime without being read), the workspace says what it already holds, and only the missing work
is done.  The stages, in order: ``sources`` (find, hash, what is cached), ``plan`` (the sets and texts),
``texts`` (encode missing prompts), ``derive`` (rows of new sets for cached images) and ``images``
(decode, encode and write new images batch by batch).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Sequence

from clipclust.commands.embed.derive import derive_from_store, missing_rows, plan_fused_storage
from clipclust.commands.embed.images import encode_images
from clipclust.commands.embed.options import EmbedOptions, EmbedSummary, check_options, default_workers
from clipclust.commands.embed.plan import EmbedPlan, plan_sets, wanted_texts
from clipclust.commands.embed.sources import (
    drop_copies_of_stored,
    drop_known_unreadable,
    find_sources,
    hash_sources,
    item_labels,
    refresh_items,
    relabelled,
    warn_copies,
)
from clipclust.commands.embed.texts import encode_texts, missing_classes
from clipclust.core.images import SourceFile, read_labels_csv
from clipclust.core.progress import Reporter, SilentReporter
from clipclust.errors import InputError
from clipclust.models.clip import ClipEncoder, load_clip, model_identity, parse_model_spec
from clipclust.store import ReadOnlyWorkspace, Workspace


def embed(workspace: Workspace, inputs: Sequence[str], options: EmbedOptions | None = None,
          reporter: Reporter | None = None, encoder: ClipEncoder | None = None) -> EmbedSummary:
    """Embed images (files or folders) into the workspace, computing only what it does not hold yet.

    ``encoder`` replaces loading ``options.model`` (a notebook's already-open model).
    """
    opts = options or EmbedOptions()
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    check_options(opts)
    workers = opts.workers or default_workers()
    summary = EmbedSummary()
    sources = find_sources(inputs, opts.folder_labels, opts.labels_csv, reporter, summary.skipped)
    summary.found = len(sources)
    model_spec = parse_model_spec(opts.model)
    if opts.labels_csv:
        _warn_unmatched_labels(sources, opts.labels_csv, reporter)
    items = workspace.items()
    hashed = hash_sources(sources, items, workers, reporter)
    summary.skipped.extend(hashed.skipped)
    if not hashed.files:
        raise InputError(f"none of the {len(sources)} files in {', '.join(map(str, inputs))} could be read")
    stored = items.index()
    drop_copies_of_stored(hashed, items, stored)
    warn_copies(hashed.copies, reporter)
    summary.duplicates = hashed.duplicates
    labels = item_labels(hashed.files, items, stored)
    # after the labels: every shard plans the same classes, hence the same sets
    files = hashed.files if opts.shard is None else opts.shard.take(hashed.files, lambda s: s.sha256)
    wanted = wanted_texts(opts, labels)  # checked before the model is identified or anything is written
    model_id = model_identity(model_spec, workspace.memo_get, _remember(workspace)) if encoder is None else encoder.identity
    summary.model = model_id
    plan = plan_sets(model_id, opts, wanted, labels)

    have_image = workspace.set_keys(plan.image.id)
    todo = [s for s in files if s.sha256 not in have_image]
    summary.cached = len(files) - len(todo)
    todo = drop_known_unreadable(workspace, todo, reporter, summary.skipped)
    refresh_items(workspace, files, items, stored, opts.split)
    missing = missing_classes(workspace, plan.texts)
    if (todo or any(missing.values())) and encoder is None:
        encoder = _load(opts, model_id, reporter)
    if encoder is not None:
        summary.model_loaded = True
        plan.stamp({"precision": encoder.precision, "device": encoder.device, "loader": encoder.describe})

    summary.texts_encoded = encode_texts(workspace, encoder, plan.texts, missing)
    summary.derived_rows = _derive_cached(workspace, plan, [s.sha256 for s in files if s.sha256 in have_image],
                                          relabelled(files, items, stored), opts.store_fused)
    if todo:
        assert encoder is not None
        summary.new = encode_images(workspace, encoder, todo, plan, opts.split, opts.batch_size, workers, reporter,
                                    summary.skipped, opts.max_pixels)
    if summary.new + summary.cached == 0 and not hashed.duplicates:  # (only copies of stored images: nothing to do)
        raise InputError(f"none of the {len(sources)} files could be decoded as an image; see the warnings above")
    summary.sets = plan.set_names()
    summary.seconds = time.perf_counter() - started
    return summary


def _remember(workspace: Workspace) -> Callable[[str, Any], None]:
    """memo_put for a cache of what a run found (a model file's hash): where the workspace is read-only
    the entry is just not kept, and a run that has nothing else to write succeeds."""
    def put(key: str, value: Any) -> None:
        with contextlib.suppress(ReadOnlyWorkspace):
            workspace.memo_put(key, value)

    return put


def _load(opts: EmbedOptions, model_id: str, reporter: Reporter) -> ClipEncoder:
    with reporter.task(f"loading {opts.model}", None):
        return load_clip(opts.model, device=opts.device, precision=opts.precision, identity=model_id)


def _derive_cached(workspace: Workspace, plan: EmbedPlan, cached: list[str], relabelled_items: set[str],
                   store_fused: bool) -> int:
    """Derived rows for items whose image vectors are stored already (e.g. a new prompt); how many were added."""
    for ts in plan.texts:
        plan_fused_storage(workspace, ts, plan.image.id, store_fused)
    wanted = missing_rows(workspace, plan, cached, relabelled_items)
    return derive_from_store(workspace, plan, cached, wanted) if wanted else 0


def _warn_unmatched_labels(sources: Sequence[SourceFile], labels_csv: str, reporter: Reporter) -> None:
    """Rows of the labels file that name no input image are said, not dropped in silence (a mistyped path)."""
    from pathlib import Path

    found = {Path(s.real_path()) for s in sources}
    unmatched = [path for path in read_labels_csv(labels_csv) if path not in found]
    if unmatched:
        reporter.warn(f"{len(unmatched)} rows of {labels_csv} name no input image and were ignored, e.g. {unmatched[0]}")
