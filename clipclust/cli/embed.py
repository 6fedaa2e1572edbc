"""`clipclust embed`: parse options, call clipclust.commands.embed.embed, print the summary."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from clipclust.commands.embed import EmbedOptions, default_workers, embed
from clipclust.core.images import DEFAULT_MAX_PIXELS, format_count, parse_count
from clipclust.errors import InputError
from clipclust.models.clip import DEFAULT_MODEL
from clipclust.core.templates import parse_classes, read_class_map
from clipclust.core.sharding import parse_shard
from clipclust.cli import common, stdin

HELP = """CLIP image embeddings of files and folders (recursive), kept in the workspace.

With --prompt TEMPLATE ('<>' is replaced by each class name) also the prompt text embeddings, zero-shot
similarities and fused embeddings (mean of the normalised image and prompt embeddings, computed when read
unless --store-fused); with --agnostic
the class-agnostic similarities to a generic prompt set.  Only what the workspace lacks is computed.

Example:  clipclust embed ./digits --prompt 'This is digit <>' --fuse label --fuse all
"""
# EmbedOptions fields whose flag is not their name spelled with dashes (for library error messages)
FLAGS = {"prompts": "--prompt", "labels_csv": "--labels"}


def _pixels(text: str) -> int | None:
    """--max-pixels: a count such as 64M (0: no limit of clipclust's, Pillow's 400M only)."""
    try:
        value = parse_count(text)
    except ValueError:
        raise InputError(f"--max-pixels {text!r}: expected a number of pixels such as 64M, 200M or 4000000") from None
    if value < 0:
        raise InputError(f"--max-pixels {text}: expected a number of pixels such as 64M or 200M")
    return value or None


def register(app: typer.Typer) -> None:
    app.command("embed", help=HELP, no_args_is_help=True)(embed_command)


def embed_command(
    images: List[Path] = typer.Argument(..., help="Image files and folders; class folders root/<label>/file give labels; "
                                        "'-' reads paths from stdin."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="open_clip ARCH/PRETRAINED, hf-hub:ORG/NAME, "
                              "local-dir:DIR, hf:ORG/NAME, or a local path."),
    prompt: List[str] = typer.Option([], "--prompt", "-p", help="Prompt template with '<>' for the class name (repeatable)."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Class names, comma-separated (default: the label names)."),
    classes_file: Optional[Path] = typer.Option(None, "--classes-file", help="Class names, one per line."),
    class_map: Optional[Path] = typer.Option(None, "--class-map", help="CSV label,group (or JSON) for grouped or swapped prompts."),
    fuse: List[str] = typer.Option(["label", "zeroshot"], "--fuse", help="Fused sets to make: label, zeroshot, all (repeatable)."),
    store_fused: bool = typer.Option(False, "--store-fused", help="Store fused rows in the file instead of computing them on read (new sets)."),
    agnostic: Optional[str] = typer.Option(None, "--agnostic", help="Class-agnostic prompt set: a file (one prompt per line) or builtin:generic-32."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV path,label overriding folder labels."),
    split: str = typer.Option("", "--split", help="Tag the items of this run with a split name (train, test, ...)."),
    folder_labels: bool = typer.Option(True, "--folder-labels/--no-folder-labels", help="Take labels from class folders."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    precision: str = typer.Option("auto", "--precision", help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1, help="Images per model call."),
    workers: int = typer.Option(default_workers(), "--workers", "-w", min=1, help="Threads decoding and preprocessing images."),
    store_dtype: str = typer.Option("float32", "--store-dtype", help="float32, or float16 for half the file size (new sets; read back as float32)."),
    max_pixels: str = typer.Option(format_count(DEFAULT_MAX_PIXELS), "--max-pixels", metavar="N",
                                   help="Skip images that decode to more pixels than this (e.g. 64M, 200M; 0: only "
                                   "Pillow's own 400M), read from the header before any pixel is; JPEGs count at "
                                   "their reduced decode. One 64M-pixel image takes ~0.4 GB to decode."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="I/N", help=common.SHARD_HELP),
    null: bool = typer.Option(False, "--null", "-0", help=stdin.NULL_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    with common.errors(FLAGS):
        class_map_data = read_class_map(str(class_map)) if class_map else None
        options = EmbedOptions(
            model=model,
            prompts=prompt,
            classes=parse_classes(classes, str(classes_file) if classes_file else None),
            class_map=class_map_data,
            class_map_name=class_map.stem if class_map else "",
            fuse=fuse,
            agnostic=agnostic,
            labels_csv=str(labels) if labels else None,
            split=split,
            folder_labels=folder_labels,
            device=device,
            precision=precision,
            batch_size=batch_size,
            workers=workers,
            store_dtype=store_dtype,
            store_fused=store_fused,
            shard=parse_shard(shard),
            max_pixels=_pixels(max_pixels),
        )
        reporter = common.RichReporter(quiet=common.STATE.quiet)
        summary = embed(common.workspace(), stdin.input_paths(images, null), options, reporter=reporter)
    if common.want_json(json_out):
        common.emit_json({"cache": common.STATE.cache, **summary.to_dict()})
        return
    usable = summary.new + summary.cached
    line = f"{usable} images: {summary.new} new, {summary.cached} cached"
    if summary.skipped:
        line += f", {len(summary.skipped)} skipped (see the warnings)"
    if summary.duplicates:
        line += f", {summary.duplicates} duplicate files stored once"
    extras = []
    if summary.texts_encoded:
        extras.append(f"{summary.texts_encoded} prompt texts encoded")
    if summary.derived_rows:
        extras.append(f"{summary.derived_rows} derived rows from cached embeddings")
    if extras:
        line += "; " + ", ".join(extras)
    typer.echo(f"{line} -> {common.STATE.cache} [{summary.model}] in {summary.seconds:.1f}s")
