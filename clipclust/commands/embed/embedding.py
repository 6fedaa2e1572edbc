"""`embed` as a library call: images in, image / text / zero-shot / fused / class-agnostic sets out.

The run is planned before any model is loaded: files are hashed (unchanged files are recognised by path,
size and mtime without being read), the workspace says what it already holds, and only the missing work
is done.  Images are decoded and preprocessed by a thread pool while the model encodes the previous
batch; every batch is written (items, image vectors and their derived rows together) as it completes.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from clipclust.store import ItemRecord, ItemTable, Workspace, short_hash
from clipclust.core.images import SourceFile, UnreadableImage, apply_labels, decode_image, find_images, read_labels_csv, sha256_bytes
from clipclust.errors import InputError
from clipclust.models.clip import DEFAULT_MODEL, ClipEncoder, load_clip, model_identity, parse_model_spec
from clipclust.core.progress import Reporter, SilentReporter
from clipclust.core.sharding import Shard
from clipclust.core.templates import check_template, prompt_texts, read_prompt_set

FUSE_MODES = ("label", "zeroshot", "all")
STORE_DTYPES = ("float32", "float16")
HASH_BLOCK = 256  # files per thread-pool task when hashing
UNREADABLE_MEMO = "unreadable"  # sha256 -> reason: content that failed to decode, skipped on re-runs


@dataclass
class EmbedOptions:
    """Everything `clipclust embed` can be asked for; the defaults are the CLI's defaults."""

    model: str = DEFAULT_MODEL
    prompts: Sequence[str] = ()
    classes: Sequence[str] | None = None
    class_map: dict[str, str] | None = None
    class_map_name: str = ""
    fuse: Sequence[str] = ("label", "zeroshot")
    agnostic: str | None = None
    labels_csv: str | None = None
    split: str = ""
    folder_labels: bool = True
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 64
    workers: int | None = None
    store_dtype: str = "float32"  # or float16: vectors stored at half size, read back as float32
    store_fused: bool = False  # fused sets stored row by row instead of computed on read from image and text
    shard: Shard | None = None  # embed only this shard's share of the items (classes still come from all)


@dataclass
class EmbedSummary:
    """What a run did; the CLI prints it, tests assert on it."""

    found: int = 0
    new: int = 0
    cached: int = 0
    duplicates: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    texts_encoded: int = 0
    derived_rows: int = 0
    model_loaded: bool = False
    model: str = ""
    sets: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "found": self.found, "new": self.new, "cached": self.cached, "duplicates": self.duplicates,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped], "texts_encoded": self.texts_encoded,
            "derived_rows": self.derived_rows, "model_loaded": self.model_loaded, "model": self.model,
            "sets": self.sets, "seconds": round(self.seconds, 3),
        }


@dataclass(slots=True)
class _Source:
    src: SourceFile
    sha256: str
    size: int
    mtime_ns: int


@dataclass
class _TextSet:
    """A class-keyed set of prompt embeddings, and the item-keyed sets derived from it."""

    kind: str  # "prompt" or "agnostic"
    template: str  # the template, or the prompt-set identity for agnostic prompts
    classes: list[str]
    texts: list[str]
    spec: dict[str, Any]
    derived: list[dict[str, Any]]
    vectors: np.ndarray | None = None


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _set_spec(model_id: str, model_raw: str, kind: str, name: str, prompt: str, keyed_by: str,
              provenance: dict[str, Any], key_parts: Sequence[Any] = (), dtype: str = "float32") -> dict[str, Any]:
    return {
        "id": short_hash(model_id, kind, prompt, *key_parts),
        "name": name,
        "kind": kind,
        "model": model_id,
        "prompt": prompt,
        "keyed_by": keyed_by,
        "dtype": provenance.get("storage", "float32") if dtype == "float32" else dtype,
        "provenance": {"model_spec": model_raw, "model_identity": model_id, "kind": kind, **provenance},
    }


def hash_sources(sources: list[SourceFile], ws_items: Any, workers: int, reporter: Reporter,
                  summary: EmbedSummary) -> list[_Source]:
    """Content hashes, trusting (path, size, mtime) the workspace recorded so unchanged files are not re-read.

    Files go to the thread pool in blocks: a cached re-run of a million files is a million stats, and
    one task per file would cost more in the pool than in the stat.
    """
    known = {p: i for i, p in enumerate(ws_items.path)}

    def one(src: SourceFile) -> _Source | tuple[SourceFile, str]:
        try:
            st = os.stat(src.file)
            row = known.get(src.real_path())
            if row is not None and ws_items.size[row] == st.st_size and ws_items.mtime_ns[row] == st.st_mtime_ns:
                if src.file == src.resolved:  # keep the workspace's equal string, free the found one
                    src.file = src.resolved = ws_items.path[row]
                return _Source(src, ws_items.sha256[row], st.st_size, st.st_mtime_ns)
            with open(src.file, "rb") as fh:
                return _Source(src, sha256_bytes(fh.read()), st.st_size, st.st_mtime_ns)
        except OSError as exc:
            return src, exc.strerror or str(exc)

    def block(start: int) -> list[_Source | tuple[SourceFile, str]]:
        return [one(src) for src in sources[start : start + HASH_BLOCK]]

    out: list[_Source] = []
    seen: set[str] = set()
    with reporter.task("hashing", len(sources)) as advance, ThreadPoolExecutor(workers) as pool:
        for results in pool.map(block, range(0, len(sources), HASH_BLOCK)):
            advance(len(results))
            for res in results:
                if isinstance(res, tuple):
                    summary.skipped.append((str(res[0].path), res[1]))
                    reporter.warn(f"skipped {res[0].path}: {res[1]}")
                    continue
                if res.sha256 in seen:
                    summary.duplicates += 1
                    continue
                seen.add(res.sha256)
                out.append(res)
    return out


def _prefetch(fn: Callable[[Any], Any], items: Iterable[Any], pool: ThreadPoolExecutor, depth: int) -> Iterator[Any]:
    """Ordered map over a thread pool that keeps at most ``depth`` calls in flight."""
    pending: deque[Future[Any]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _derive(text: _TextSet, image_vecs: np.ndarray, classes_of_items: list[str | None]) -> list[tuple[dict[str, Any], list[int], np.ndarray]]:
    """Rows of each derived set for a block of image vectors: (spec, row indices into the block, data)."""
    assert text.vectors is not None
    # einsum's own loop, not BLAS: a row's similarities then do not depend on which rows share its batch,
    # so shards, batch sizes and resumed runs store bit-identical rows (BLAS differed in the last bit)
    sims = np.einsum("id,cd->ic", image_vecs, text.vectors)
    out = []
    for spec in text.derived:
        kind = spec["kind"]
        if kind in ("zeroshot", "agnostic"):
            out.append((spec, list(range(len(image_vecs))), sims))
        elif kind.startswith("fused-"):
            rows, cls = _fused_text_rows(kind, text, sims, classes_of_items)
            if not rows:
                continue
            if "recipe" in spec:  # computed on read: store which text row each item is fused with
                out.append((spec, rows, cls))
            elif kind == "fused-all":
                out.append((spec, rows, (image_vecs[:, None, :] + text.vectors[None]) / 2))
            else:
                out.append((spec, rows, (image_vecs[rows] + text.vectors[cls]) / 2))
    return out


def _fused_text_rows(kind: str, text: _TextSet, sims: np.ndarray,
                     classes_of_items: list[str | None]) -> tuple[list[int], np.ndarray]:
    """The items of a block a fused set holds, and the text row (index into classes) each is fused with.

    fused-all fuses with every class: its text row is -1.
    """
    if kind == "fused-zeroshot":
        return list(range(len(sims))), sims.argmax(1).astype(np.int32)
    if kind == "fused-all":
        return list(range(len(sims))), np.full(len(sims), -1, dtype=np.int32)
    index = {c: i for i, c in enumerate(text.classes)}
    rows = [i for i, c in enumerate(classes_of_items) if c is not None and c in index]
    return rows, np.array([index[classes_of_items[i]] for i in rows], dtype=np.int32)  # type: ignore[index]


def embed(workspace: Workspace, inputs: Sequence[str], options: EmbedOptions | None = None,
          reporter: Reporter | None = None, encoder: ClipEncoder | None = None) -> EmbedSummary:
    """Embed images (files or folders) into the workspace, computing only what it does not hold yet."""
    opts = options or EmbedOptions()
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    summary = EmbedSummary()
    if opts.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if opts.store_dtype not in STORE_DTYPES:
        raise InputError(f"store dtype {opts.store_dtype!r}: expected one of {', '.join(STORE_DTYPES)}")
    unknown = sorted(set(opts.fuse) - set(FUSE_MODES))
    if unknown:
        raise InputError(f"--fuse {unknown[0]}: expected one of {', '.join(FUSE_MODES)}")
    workers = opts.workers or default_workers()

    sources = find_images(inputs, folder_labels=opts.folder_labels)
    if opts.labels_csv:
        labels = read_labels_csv(opts.labels_csv)
        if apply_labels(sources, labels) == 0 and sources:
            raise InputError(f"--labels {opts.labels_csv}: none of its paths matches an input image")
    if not sources:
        raise InputError(f"no images found in {', '.join(map(str, inputs))} (png, jpg, webp, bmp, tiff, gif)")
    summary.found = len(sources)

    spec = parse_model_spec(opts.model)
    items = workspace.items()
    hashed = hash_sources(sources, items, workers, reporter, summary)
    if not hashed:
        raise InputError(f"none of the {len(sources)} files in {', '.join(map(str, inputs))} could be read")

    # --- what the run wants (validated before anything is written), and what the workspace holds already
    stored = items.index()
    item_label = {}
    for s in hashed:  # an unlabelled file that is a known item keeps its stored label
        row = stored.get(s.sha256)
        item_label[s.sha256] = s.src.label or (items.label[row] if row is not None else "")
    if opts.shard is not None:  # after the labels: every shard plans the same classes, hence the same sets
        hashed = opts.shard.take(hashed, lambda s: s.sha256)
    base_prov = {"precision": opts.precision, "batch_size": opts.batch_size, "storage": opts.store_dtype}
    _plan_text_sets("", opts, item_label, base_prov)
    model_id = model_identity(spec, workspace.memo_get, workspace.memo_put) if encoder is None else encoder.identity
    summary.model = model_id
    image_spec = _set_spec(model_id, opts.model, "image", "image", "", "item", base_prov)
    text_sets = _plan_text_sets(model_id, opts, item_label, base_prov)

    have_image = workspace.set_keys(image_spec["id"])
    todo = [s for s in hashed if s.sha256 not in have_image]
    summary.cached = len(hashed) - len(todo)
    unreadable: dict[str, str] = workspace.memo_get(UNREADABLE_MEMO) or {}
    for s in [s for s in todo if s.sha256 in unreadable]:  # known bad content: no decode, no model load
        summary.skipped.append((str(s.src.path), unreadable[s.sha256]))
        reporter.warn(f"skipped {s.src.path}: {unreadable[s.sha256]} (known unreadable content)")
    todo = [s for s in todo if s.sha256 not in unreadable]
    changed_records = [_record(s, opts.split) for s in hashed if (row := stored.get(s.sha256)) is not None
                       and _changes(items, row, s, opts.split)]
    if changed_records:  # a cached re-run of unchanged files writes nothing
        workspace.upsert_items(changed_records)

    missing_texts = {}
    for ts in text_sets:
        have = workspace.set_keys(ts.spec["id"])
        missing_texts[ts.spec["id"]] = [i for i, c in enumerate(ts.classes) if c not in have]
    need_model = bool(todo) or any(missing_texts.values())

    if need_model and encoder is None:
        with reporter.task(f"loading {opts.model}", None):
            encoder = load_clip(opts.model, device=opts.device, precision=opts.precision, identity=model_id)
    if encoder is not None:
        summary.model_loaded = True
        base_prov.update({"precision": encoder.precision, "device": encoder.device, "loader": encoder.describe})
        for spec_ in [image_spec] + [ts.spec for ts in text_sets] + [d for ts in text_sets for d in ts.derived]:
            spec_["provenance"].update(base_prov)

    # --- texts: encode only the missing classes, then hold every vector in memory for the derived sets
    for ts in text_sets:
        missing = missing_texts[ts.spec["id"]]
        if missing:
            assert encoder is not None
            vecs = encoder.encode_texts([ts.texts[i] for i in missing])
            workspace.write_batch(rows=[(ts.spec, [ts.classes[i] for i in missing], vecs)])
            summary.texts_encoded += len(missing)
        keys, data = workspace.read_set(ts.spec["id"])
        by_class = dict(zip(keys, data))
        ts.vectors = np.stack([by_class[c] for c in ts.classes]).astype(np.float32)
        _plan_fused_storage(workspace, ts, image_spec["id"], opts.store_fused)

    def item_class(sha: str, ts: _TextSet) -> str | None:
        label = item_label.get(sha, "")
        if not label:
            return None
        return opts.class_map.get(label, None) if opts.class_map else label

    # --- derived sets for items whose image vectors are already stored (e.g. a new prompt)
    cached_shas = [s.sha256 for s in hashed if s.sha256 in have_image]
    relabelled = {s.sha256 for s in hashed if s.sha256 in stored and s.src.label
                  and s.src.label != items.label[stored[s.sha256]]}
    wanted = {}
    for ts in text_sets:
        for d in ts.derived:
            have = workspace.set_keys(d["id"])
            want = {sha for sha in cached_shas if sha not in have}
            if d["kind"] == "fused-label":  # a relabelled item's row is computed again and replaces the old one
                d["replace"] = bool(relabelled & have)
                want = {sha for sha in want | (relabelled & have) if item_class(sha, ts) in ts.classes}
            if want:
                wanted[d["id"]] = want
    if wanted:
        summary.derived_rows = _derive_from_store(workspace, image_spec["id"], cached_shas, text_sets, wanted, item_class)

    # --- images: decode in threads, encode in batches, flush every batch with its derived rows
    if todo:
        assert encoder is not None
        summary.new = _encode_images(workspace, encoder, todo, image_spec, text_sets, item_class, opts, workers,
                                     reporter, summary)
    if summary.new + summary.cached == 0:
        raise InputError(f"none of the {len(sources)} files could be decoded as an image; see the warnings above")
    summary.sets = [image_spec["name"]] + [ts.spec["name"] for ts in text_sets] + [
        d["name"] for ts in text_sets for d in ts.derived
    ]
    summary.seconds = time.perf_counter() - started
    return summary


def _record(s: _Source, split: str, width: int = 0, height: int = 0) -> ItemRecord:
    return ItemRecord(sha256=s.sha256, path=s.src.real_path(), label=s.src.label, split=split,
                      width=width, height=height, size=s.size, mtime_ns=s.mtime_ns)


def _changes(items: ItemTable, row: int, s: _Source, split: str) -> bool:
    """Whether upserting the record of ``s`` would change the stored row (empty fields keep what is stored).

    Compared field by field without building the record: a cached re-run asks this of every file.
    """
    label = s.src.label
    return (s.size != items.size[row] or s.mtime_ns != items.mtime_ns[row] or s.src.real_path() != items.path[row]
            or bool(label and label != items.label[row]) or bool(split and split != items.split[row]))


def _plan_text_sets(model_id: str, opts: EmbedOptions, item_label: dict[str, str],
                    base_prov: dict[str, Any]) -> list[_TextSet]:
    plans: list[_TextSet] = []
    if opts.prompts:
        if opts.classes:
            classes = list(opts.classes)
        else:
            labels = sorted({lab for lab in item_label.values() if lab})
            if opts.class_map:
                labels = sorted({opts.class_map.get(lab, "") for lab in labels} - {""})
            if not labels:
                raise InputError("--prompt needs class names: pass --classes a,b,c or --classes-file, or use label folders")
            classes = labels
        if opts.class_map and opts.classes is None:
            unmapped = sorted({lab for lab in item_label.values() if lab and lab not in opts.class_map})
            if unmapped:
                raise InputError(f"--class-map has no group for label(s) {', '.join(unmapped[:5])}")
        suffix = f" [map:{opts.class_map_name}]" if opts.class_map else ""
        map_key = sorted((opts.class_map or {}).items())
        for template in opts.prompts:
            check_template(template)
            texts = prompt_texts(template, classes)
            prov = {**base_prov, "template": template, "classes": classes, "prompts": texts,
                    "class_map": opts.class_map or {}}
            text_spec = _set_spec(model_id, opts.model, "text", f"text:{template}{suffix}", template, "class", prov,
                                  (classes, map_key))
            derived = [_set_spec(model_id, opts.model, "zeroshot", f"zeroshot:{template}{suffix}", template, "item",
                                 prov, (classes, map_key))]
            for mode in FUSE_MODES:
                if mode in opts.fuse:
                    kind = f"fused-{mode}"
                    derived.append(_set_spec(model_id, opts.model, kind, f"{kind}:{template}{suffix}", template, "item",
                                             {**prov, "fuse": "mean of L2-normalised image and text embeddings"},
                                             (classes, map_key)))
            for d in derived:
                d["attrs"] = {"classes": json.dumps(classes)}
            plans.append(_TextSet("prompt", template, classes, texts, text_spec, derived))
    if opts.agnostic:
        identity, prompts = read_prompt_set(opts.agnostic)
        prov = {**base_prov, "prompt_set": identity, "prompts": prompts,
                "note": "raw cosine similarities; temperature is applied where they are used"}
        text_spec = _set_spec(model_id, opts.model, "text", f"text:{identity}", identity, "class", prov, (prompts,))
        derived = [_set_spec(model_id, opts.model, "agnostic", f"agnostic:{identity}", identity, "item", prov, (prompts,))]
        plans.append(_TextSet("agnostic", identity, prompts, prompts, text_spec, derived))
    return plans


def _plan_fused_storage(workspace: Workspace, ts: _TextSet, image_set: str, store_fused: bool) -> None:
    """Fused sets are computed on read unless asked to be stored; an existing set keeps how it was made."""
    assert ts.vectors is not None
    for d in ts.derived:
        if not d["kind"].startswith("fused-"):
            continue
        derived = workspace.is_derived(d["id"])
        if derived is None:
            derived = not store_fused
        if derived:
            fuse = d["kind"].removeprefix("fused-")
            shape = ts.vectors.shape if fuse == "all" else ts.vectors.shape[1:]
            d["recipe"] = {"image_set": image_set, "text_set": ts.spec["id"], "fuse": fuse, "row_shape": shape}
            d["provenance"]["stored"] = "computed on read"


def _derive_from_store(workspace: Workspace, image_set: str, shas: list[str], text_sets: list[_TextSet],
                       wanted: dict[str, set[str]], item_class: Callable[[str, _TextSet], str | None],
                       chunk: int = 16384) -> int:
    """Derived rows from stored image vectors: one streamed pass over the image set, one write per block."""
    needed = {s for s in shas if any(s in want for want in wanted.values())}
    added = 0
    for keys, vecs in workspace.iter_set(image_set, chunk):
        picked = [i for i, k in enumerate(keys) if k in needed]
        if not picked:
            continue
        block = [keys[i] for i in picked]
        block_vecs = np.asarray(vecs[picked], dtype=np.float32)
        rows = []
        for ts in text_sets:
            for d, idx, data in _derive(ts, block_vecs, [item_class(s, ts) for s in block]):
                want = wanted.get(d["id"], set())
                keep = [j for j, i in enumerate(idx) if block[i] in want]
                if keep:
                    rows.append((d, [block[idx[j]] for j in keep], data[keep]))
        added += workspace.write_batch(rows=rows)
    return added


def _load_one(encoder: ClipEncoder, s: _Source) -> tuple[_Source, Any, int, int, str | None]:
    try:
        data = s.src.path.read_bytes()
        image = decode_image(data, min_size=encoder.input_size)
        if sha256_bytes(data) != s.sha256:  # the file changed since it was hashed: take what we decoded
            s = _Source(s.src, sha256_bytes(data), len(data), s.mtime_ns)
        width, height = image.info["original_size"]
        return s, encoder.preprocess(image), width, height, None
    except (OSError, UnreadableImage) as exc:
        return s, None, 0, 0, str(exc) or type(exc).__name__


def _encode_images(workspace: Workspace, encoder: ClipEncoder, todo: list[_Source], image_spec: dict[str, Any],
                   text_sets: list[_TextSet], item_class: Callable[[str, _TextSet], str | None], opts: EmbedOptions,
                   workers: int, reporter: Reporter, summary: EmbedSummary) -> int:
    import torch

    encoded = 0
    failed: dict[str, str] = {}
    batch: list[tuple[_Source, Any, int, int]] = []

    def flush() -> None:
        nonlocal encoded, batch
        if not batch:
            return
        vecs = encoder.encode_images(torch.stack([b[1] for b in batch]))
        shas = [b[0].sha256 for b in batch]
        rows: list[tuple[dict[str, Any], Sequence[str], Any]] = [(image_spec, shas, vecs)]
        for ts in text_sets:
            for d, idx, data in _derive(ts, vecs, [item_class(s, ts) for s in shas]):
                rows.append((d, [shas[i] for i in idx], data))
        records = [_record(b[0], opts.split, b[2], b[3]) for b in batch]
        workspace.write_batch(items=records, rows=rows)
        encoded += len(batch)
        advance(len(batch))
        batch = []

    with reporter.task("embedding", len(todo)) as advance, ThreadPoolExecutor(workers) as pool:
        for s, pixels, w, h, err in _prefetch(lambda s: _load_one(encoder, s), todo, pool, opts.batch_size * 2):
            if err is not None:
                summary.skipped.append((str(s.src.path), err))
                reporter.warn(f"skipped {s.src.path}: {err}")
                failed[s.sha256] = err
                advance(1)
                continue
            batch.append((s, pixels, w, h))
            if len(batch) >= opts.batch_size:
                flush()
        flush()
    if failed:
        workspace.memo_put(UNREADABLE_MEMO, {**(workspace.memo_get(UNREADABLE_MEMO) or {}), **failed})
    return encoded
