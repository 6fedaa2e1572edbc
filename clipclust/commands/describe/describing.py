"""`describe` as a library call: VLM descriptions of workspace items, one per item or one per group.

Descriptions are item-keyed text sets (``dtype`` str) next to the embedding sets, so IC|TC finds them by
name.  Every model answer also goes through the workspace's call store (keyed by model, decoding, prompt
and content hash): cached descriptions never open an image file, and each batch's set rows are written
as soon as the batch completes, so an interrupted run keeps what it finished and a re-run makes no model
call.  Per-item describing is in ``per_item``, group (collage) describing in ``groups``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from clipclust.commands.describe.descriptions import DescribeSummary
from clipclust.commands.describe.groups import describe_in_groups, group_labels, group_spec
from clipclust.commands.describe.per_item import describe_each, item_spec
from clipclust.commands.embed.options import default_workers
from clipclust.commands.embed.sources import find_sources, hash_sources, item_record
from clipclust.core.progress import Reporter, SilentReporter
from clipclust.core.sharding import Shard
from clipclust.errors import ClipclustError, InputError, opt
from clipclust.core.textfiles import check_line
from clipclust.models.llm import DecodeParams, tell_slow
from clipclust.models.vlm import DESCRIBE_PARAMS, CachedDescriber, Describer, load_describer
from clipclust.store import ItemRecord, Workspace, short_hash


def _collect_items(workspace: Workspace, inputs: Sequence[str] | None, split: str, reporter: Reporter,
                   summary: DescribeSummary) -> tuple[list[str], list[str], list[ItemRecord]]:
    """(sha256s, paths, item records to write) of the items to describe."""
    if inputs:
        sources = find_sources(list(inputs), reporter=reporter, skipped=summary.skipped)
        hashed = hash_sources(sources, workspace.items(), default_workers(), reporter)
        summary.skipped.extend(hashed.skipped)
        records = [item_record(s, split) for s in hashed.files]
        return [r.sha256 for r in records], [r.path for r in records], records
    if not workspace.exists():
        raise InputError(f"no workspace at {workspace.path}; pass {opt('inputs')} to describe or {opt('cache')}")
    items = workspace.items()
    keep = [i for i, p in enumerate(items.path) if p and Path(p).is_file()]
    if not keep:
        raise InputError(f"no item of {workspace.path} has an image file on disk; pass {opt('inputs')} to describe")
    return [items.sha256[i] for i in keep], [items.path[i] for i in keep], []


def _check(criterion: str | None, prompt: str | None, group_size: int | None, group_by: str | None) -> None:
    if criterion is not None and not criterion.strip():
        raise InputError(f"{opt('criterion')} is empty; say what to describe, e.g. {opt('criterion')} mood")
    if criterion is not None:
        check_line(criterion, "criterion")
    if prompt is not None and not prompt.strip():
        raise InputError(f"{opt('prompt')} is empty; give the prompt the VLM is asked with, or a {opt('criterion')}")
    if not prompt and not criterion:
        raise InputError(f"describe needs {opt('criterion')} TEXT (e.g. mood) or {opt('prompt')} TEXT")
    if (group_size is None) != (group_by is None):
        raise InputError(f"group descriptions need both {opt('group_size')} N and "
                         f"{opt('group_by')} zeroshot|cluster:NAME")
    if group_size is not None and group_size < 1:
        raise InputError(f"{opt('group_size')} {group_size}: expected 1 or more")


def _load(vlm: str | None, mmproj: str | None, backend: dict[str, Any] | None) -> Describer:
    """The describer of ``vlm``, loaded lazily: its identity now, its weights on the first image not yet
    described, so a re-run with every description stored loads no model."""
    if not vlm:
        raise InputError(f"describe needs {opt('vlm')} SPEC (a .gguf file with {opt('mmproj')}, hf:ORG/NAME, "
                         "a folder or a URL)")
    return load_describer(vlm, mmproj, lazy=True, **{k: v for k, v in (backend or {}).items() if v is not None})


def describe_items(
    workspace: Workspace,
    inputs: Sequence[str] | None = None,
    *,
    vlm: str | None = None,
    mmproj: str | None = None,
    criterion: str | None = None,
    prompt: str | None = None,
    params: DecodeParams | None = None,
    backend: dict[str, Any] | None = None,
    group_size: int | None = None,
    group_by: str | None = None,
    on: str | None = None,
    split: str = "",
    describer: Describer | None = None,
    reporter: Reporter | None = None,
    shard: Shard | None = None,
) -> DescribeSummary:
    """Describe ``inputs`` (or every workspace item whose file exists) with a VLM; store an item-keyed text set.

    ``describer`` replaces loading ``vlm`` (a notebook's already-open model).  With ``group_size`` the
    items are grouped by ``group_by`` (``zeroshot``: the argmax of a stored zero-shot set, ``on`` picks
    which; ``cluster:NAME``: a stored clustering) and each collage of up to N members is described once;
    every member gets its group's text.
    """
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    _check(criterion, prompt, group_size, group_by)
    summary = DescribeSummary()
    keys, paths, records = _collect_items(workspace, inputs, split, reporter, summary)
    if shard is not None:  # single items only: a collage's members may fall in different shards
        if group_size is not None:
            raise InputError(f"shard {shard} describes single items; describe groups of items without a shard")
        keep = [i for i, k in enumerate(keys) if shard.holds(k)]
        keys, paths = [keys[i] for i in keep], [paths[i] for i in keep]
        records = [r for r in records if shard.holds(r.sha256)]
    summary.n_items = len(keys)
    labels: list[str | None] | None = None
    source = ""
    if group_by is not None:
        if records:
            workspace.write_batch(items=records)  # the group rows are keyed by these items: store them
        labels, source = group_labels(workspace, keys, group_by, on)
    owned = describer is None
    if describer is None:
        describer = _load(vlm, mmproj, backend)
    tell_slow(describer, reporter.warn)
    try:
        cached = CachedDescriber(describer, workspace)
        _describe_with(workspace, cached, vlm, criterion, prompt, params or DESCRIBE_PARAMS, keys, paths, records,
                       labels, source, group_size, reporter, summary)
    finally:
        if owned:
            describer.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _describe_with(workspace: Workspace, cached: CachedDescriber, vlm: str | None, criterion: str | None,
                   prompt: str | None, params: DecodeParams, keys: list[str], paths: list[str],
                   records: list[ItemRecord], labels: list[str | None] | None, source: str,
                   group_size: int | None, reporter: Reporter, summary: DescribeSummary) -> None:
    label = criterion.strip() if criterion else f"prompt-{short_hash(prompt)[:8]}"
    if labels is None:
        spec, text = item_spec(cached, vlm, criterion, prompt, label, params)
    else:
        spec, text = group_spec(cached, vlm, criterion, prompt, label, params, source, group_size or 1)
    summary.set_name, summary.set_id, summary.kind = spec.name, spec.id, spec.kind
    summary.model, summary.prompt = cached.identity, text
    done = workspace.set_keys(spec.id)
    if labels is None:
        describe_each(workspace, cached, spec, keys, paths, records, done, text, params, reporter, summary)
    else:
        describe_in_groups(workspace, cached, spec, keys, paths, labels, done, text, params, group_size or 1,
                           reporter, summary)
    if summary.empty:  # those items are left undescribed, as if the run had not reached them
        if not summary.described and not summary.cached:
            raise ClipclustError(f"the VLM answered all {summary.empty} requests with an empty text; nothing was "
                                 f"stored: does it see the images (a vision model, its projector), and is "
                                 f"{opt('max_tokens')} large enough?")
        reporter.warn(f"{summary.empty} of the VLM's answers were empty: not stored, a re-run asks again")
