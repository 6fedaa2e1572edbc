"""`clipclust describe`: parse options, call clipclust.commands.describe, print one summary line."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from clipclust.commands.describe import describe_items, import_into_workspace
from clipclust.errors import InputError
from clipclust.models.llm import DEFAULT_TIMEOUT, DecodeParams
from clipclust.models.vlm import DESCRIBE_PARAMS
from clipclust.core.sharding import parse_shard
from clipclust.cli import common, stdin

HELP = """VLM descriptions of images conditioned on a criterion (IC|TC step 1), kept in the workspace.

Describes IMAGES (files and folders; class folders give labels) or, without IMAGES, every workspace item
whose file exists.  The prompt is --prompt, or the paper's prompt for --criterion.  Each description is
cached by model, decoding, prompt and content hash: a re-run makes no model call.  --group-size N
--group-by zeroshot|cluster:NAME describes collages of N items sharing a group (LatteCLIP); --from FILE
imports descriptions made elsewhere (JSONL/CSV) instead, attaching them to images by path or adding
text-only items.

Example:  clipclust describe ./photos --criterion mood --vlm llava.gguf --mmproj mmproj.gguf
"""
# describe_items' arguments whose command-line spelling is not their name with dashes (for library errors)
FLAGS = {"inputs": "IMAGES"}


def register(app: typer.Typer) -> None:
    app.command("describe", help=HELP)(describe_command)


def describe_command(
    images: Optional[List[Path]] = typer.Argument(None, help="Image files and folders (default: the workspace's items); "
                                                  "'-' reads paths from stdin."),
    vlm: Optional[str] = typer.Option(None, "--vlm", help="A .gguf VLM (+ --mmproj), hf:ORG/NAME or a folder, or http://HOST:PORT/v1."),
    mmproj: Optional[str] = typer.Option(None, "--mmproj", help="The vision projector .gguf of a GGUF VLM."),
    chat_format: Optional[str] = typer.Option(None, "--chat-format", help="GGUF: the llama.cpp chat handler (default: from the metadata)."),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="Server: the model name (default: the only one served)."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Server: requests in flight."),
    n_ctx: int = typer.Option(4096, "--n-ctx", min=256, help="GGUF: context window."),
    n_gpu_layers: int = typer.Option(0, "--n-gpu-layers", help="GGUF: layers on the GPU (-1 = all, 0 = CPU only)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="GGUF: CPU threads.",
                                          show_default="auto: half the CPU cores"),
    device: Optional[str] = typer.Option(None, "--device", help="transformers: auto, cpu or cuda[:N].",
                                         show_default="auto: the first GPU, else the CPU"),
    timeout: float = typer.Option(DEFAULT_TIMEOUT, "--timeout", min=0.001, metavar="SECONDS",
                                  help="Server: seconds one answer may take before the run gives up (a notice on "
                                  "stderr after 30 s, or half of it)."),
    seed: int = typer.Option(0, "--seed", help="Decoding seed (matters with --temperature > 0)."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy (deterministic)."),
    max_tokens: int = typer.Option(DESCRIBE_PARAMS.max_tokens, "--max-tokens", min=1, help="New tokens per description."),
    criterion: Optional[str] = typer.Option(None, "--criterion", "-c", help="What to describe, e.g. mood (IC|TC's prompt)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="The full prompt instead of the criterion's."),
    group_size: Optional[int] = typer.Option(None, "--group-size", min=1, help="Describe collages of N items of one group."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="Groups: zeroshot (argmax of a zero-shot set) or cluster:NAME."),
    on: Optional[str] = typer.Option(None, "--on", help="--group-by zeroshot: the zero-shot set (name or id)."),
    split: str = typer.Option("", "--split", help="Tag new items with a split name."),
    from_file: Optional[Path] = typer.Option(None, "--from", help="Import descriptions from a JSONL/JSON/CSV/TSV file "
                                             "('-': stdin)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="--from: jsonl, json, csv or tsv (default: the file's "
                                      "suffix; sniffed on stdin)."),
    text_field: str = typer.Option("text", "--text-field", help="--from: the field holding the description."),
    path_field: Optional[str] = typer.Option(None, "--path-field", help="--from: the field holding the image path."),
    label_field: Optional[str] = typer.Option(None, "--label-field", help="--from: the field holding the label."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="I/N", help=common.SHARD_HELP),
    null: bool = typer.Option(False, "--null", "-0", help=stdin.NULL_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    with common.errors(FLAGS):
        reporter = common.RichReporter(quiet=common.STATE.quiet)
        if fmt is not None and from_file is None:
            raise InputError("--format says how the --from file is written; pass --from FILE (or --from - for stdin)")
        if from_file is not None and vlm is not None:
            raise InputError("--from imports descriptions and --vlm computes them; pass only one")
        if from_file is not None:
            if images:
                raise InputError("--from takes the image paths from the file's --path-field, not IMAGES")
            if shard is not None:
                raise InputError("--shard divides the items to describe; --from imports every record it is given")
            with stdin.descriptions_file(from_file, fmt) as source:
                summary = import_into_workspace(common.workspace(), source, text_field, path_field, label_field,
                                                split, reporter=reporter)
        elif vlm is None:
            raise InputError("describe needs --vlm SPEC (a VLM to run) or --from FILE (descriptions to import)")
        else:
            backend = {"chat_format": chat_format, "model": model_name, "concurrency": concurrency, "n_ctx": n_ctx,
                       "n_gpu_layers": n_gpu_layers, "n_threads": threads, "seed": seed, "device": device,
                       "timeout": timeout}
            params = DecodeParams(temperature=temperature, max_tokens=max_tokens, seed=seed)
            summary = describe_items(
                common.workspace(), stdin.input_paths(images or [], null) or None, vlm=vlm, mmproj=mmproj,
                criterion=criterion, prompt=prompt, params=params, backend=backend, group_size=group_size,
                group_by=group_by, on=on, split=split, reporter=reporter, shard=parse_shard(shard),
            )
    if common.want_json(json_out):
        common.emit_json({"cache": common.STATE.cache, **summary.to_dict()})
        return
    if from_file is not None:
        line = (f"{summary.records} descriptions imported: {summary.matched} matched to images, "
                f"{summary.text_only} text-only items, {len(summary.skipped)} skipped; {summary.new_rows} new rows")
    else:
        line = f"{summary.n_items} items: {summary.described} described, {summary.cached} cached"
        if summary.empty:
            line += f", {summary.empty} empty answers not stored"
        if summary.n_groups is not None:
            line += f" ({summary.n_groups} groups)"
        if summary.skipped:
            line += f", {len(summary.skipped)} skipped"
        line += f" in {summary.seconds:.1f}s"
    typer.echo(f"{line} -> {common.STATE.cache} '{summary.set_name}' (id {summary.set_id})")
