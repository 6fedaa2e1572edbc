"""What an embed run may be asked for (:class:`EmbedOptions`) and what it reports (:class:`EmbedSummary`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from clipclust.core.images import DEFAULT_MAX_PIXELS, format_count
from clipclust.core.sharding import Shard
from clipclust.errors import InputError, opt
from clipclust.models.clip import DEFAULT_MODEL

FUSE_MODES = ("label", "zeroshot", "all")
STORE_DTYPES = ("float32", "float16")


def default_workers() -> int:
    """Threads hashing, decoding and preprocessing images: the cores, at most eight."""
    return max(1, min(8, os.cpu_count() or 1))


@dataclass
class EmbedOptions:
    """Everything an embed run can be asked for; the defaults are the command line's defaults."""

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
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # images decoding to more pixels are skipped unread (None: no limit)


def check_options(opts: EmbedOptions) -> None:
    """Refuse settings no run could use, before any file is read."""
    if opts.batch_size < 1:
        raise InputError("must be at least 1", option="batch_size")
    if opts.max_pixels is not None and opts.max_pixels < 1:
        raise InputError(f"{opts.max_pixels} pixels: expected at least 1, such as {format_count(DEFAULT_MAX_PIXELS)}",
                         option="max_pixels")
    if opts.store_dtype not in STORE_DTYPES:
        raise InputError(f"store dtype {opts.store_dtype!r}: expected one of {', '.join(STORE_DTYPES)}")
    unknown = sorted(set(opts.fuse) - set(FUSE_MODES))
    if unknown:
        raise InputError(f"{opt('fuse')} {unknown[0]}: expected one of {', '.join(FUSE_MODES)}")


@dataclass
class EmbedSummary:
    """What a run did: the command line prints it, tests and notebooks read it."""

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "found": self.found, "new": self.new, "cached": self.cached, "duplicates": self.duplicates,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped], "texts_encoded": self.texts_encoded,
            "derived_rows": self.derived_rows, "model_loaded": self.model_loaded, "model": self.model,
            "sets": self.sets, "seconds": round(self.seconds, 3),
        }
