"""`clipclust cluster`: parse options, call clipclust.commands.cluster.run_clustering, print the summary."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from clipclust.commands.cluster import ClusteringSummary, run_clustering
from clipclust.methods import METHODS, ClusterRequest
from clipclust.errors import InputError
from clipclust.cli import common

HELP = """Cluster a stored set and keep the result under a name (re-running the same request reuses it).

--method kmeans|spectral|agglomerative|hdbscan clusters any item-keyed set that 'clipclust info' lists
(--on image, 'fused-label:TEMPLATE', zeroshot, agnostic, ... by name, kind or id); -k auto picks K by
silhouette and prints the table.  --refine head trains the ESMC head on k-means pseudo-labels.
--method fused runs seed 000's workflow: spectral clusters of the training split's fused vectors,
majority-vote labels, test images classified by the nearest filtered centroid (--on image: the image-only
baseline).  Labels are never read while clustering, except by the fused workflow's majority vote.
--method ictc runs IC|TC's LLM steps on a stored description set ('clipclust describe'): --criterion,
-k and --llm are required.  By default the K names are the heaviest groups of the LLM's raw labels
(--names frequent; llm = the paper's naming step, hybrid = the LLM's names with unsupported ones replaced)
and each item goes to its label's name, else the name nearest its description (--assign label-embed: one
LLM call per item); every LLM answer is cached, so a re-run with --force loads no LLM.
--method esmc clusters the hidden state an LLM holds after a criterion prompt: --llm reads a description
set, --mllm (an image-text-to-text model) reads the images; --keywords (or 'auto': asked from the LLM)
localises the layer and token, --layer/--position override; --feature lens clusters the logit lens;
--refine head adds the paper's head; --explain names clusters.  The states are cached in the workspace.

Example:  clipclust cluster --method spectral --on 'fused-label:This is digit <>' -k 20
Example:  clipclust cluster --method ictc --criterion mood -k 4 --llm qwen.gguf --names hybrid
Example:  clipclust cluster --method esmc --criterion object -k 10 --llm qwen.gguf --explain
"""


# Library option names whose flag is not simply --option-name.
FLAGS = {"k": "-k", "k_range": "--k-range", "prompts_dir": "--prompts", "n_threads": "--threads", "on": "--on",
         "forward_batch": "--forward-batch"}


def register(app: typer.Typer) -> None:
    app.command("cluster", help=HELP)(cluster_command)


def _k_range(text: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split(":"))
    except ValueError:
        raise InputError(f"{text}: expected MIN:MAX, e.g. 2:10", option="k_range") from None
    return low, high


def cluster_command(
    method: str = typer.Option("kmeans", "--method", help=f"One of: {', '.join(METHODS)}."),
    on: Optional[str] = typer.Option(None, "--on", help="Stored set to cluster (name, kind or id; default image, "
                                     "or fused-label for --method fused)."),
    k: Optional[str] = typer.Option(None, "-k", "--clusters", help="Number of clusters, or 'auto' (silhouette)."),
    k_range: str = typer.Option("2:10", "--k-range", help="Candidates MIN:MAX for -k auto."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default 0; 42 for --method fused)."),
    name: Optional[str] = typer.Option(None, "--name", help="Name to store it under (default: method + set)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Pick the set of this model when several exist."),
    split: Optional[str] = typer.Option(None, "--split", help="Cluster only the items of this split."),
    refine: Optional[str] = typer.Option(None, "--refine", help="'head': ESMC head on k-means pseudo-labels."),
    ratio: float = typer.Option(0.3, "--ratio", help="--refine head: fraction nearest each centroid used as pseudo-labels."),
    epochs: int = typer.Option(100, "--epochs", min=1, help="--refine head: training epochs."),
    lr: float = typer.Option(1e-3, "--lr", help="--refine head: Adam learning rate (the paper: 1e-4 with 200 epochs)."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="--refine head: training batch size."),
    device: str = typer.Option("auto", "--device", help="--refine head and esmc: auto, cpu or cuda[:N]."),
    n_neighbors: Optional[int] = typer.Option(None, "--n-neighbors", min=1, help="spectral / fused: neighbours of the affinity graph (10)."),
    linkage: Optional[str] = typer.Option(None, "--linkage", help="agglomerative: ward, average, complete or single."),
    min_cluster_size: Optional[int] = typer.Option(None, "--min-cluster-size", help="hdbscan: smallest cluster (5)."),
    train_split: str = typer.Option("train", "--train-split", help="--method fused: split clustered with labels."),
    test_split: str = typer.Option("test", "--test-split", help="--method fused: split classified."),
    force: bool = typer.Option(False, "--force", help="Recompute even if the same clustering is stored."),
    criterion: Optional[str] = typer.Option(None, "--criterion", "-c", help="ictc / esmc: what to cluster by, e.g. mood."),
    llm: Optional[str] = typer.Option(None, "--llm", help="ictc: a .gguf file, hf:ORG/NAME or a folder, or http://HOST:PORT/v1; "
                                      "esmc: a text LLM (hf:ORG/NAME, folder or .gguf) reading descriptions."),
    names: Optional[str] = typer.Option(None, "--names", help="ictc: where the K names come from: frequent (default: "
                                        "the heaviest groups of raw labels), hybrid (the LLM's, unsupported ones "
                                        "replaced) or llm (the paper's step 2b)."),
    assign: Optional[str] = typer.Option(None, "--assign", help="ictc step 3: label-embed (default: each raw label's "
                                         "name, else the name nearest the description), label (else the LLM), embed, "
                                         "clip (the names' CLIP text vectors against the stored image vectors), "
                                         "constrained or generate."),
    clip_on: Optional[str] = typer.Option(None, "--clip-on", help="ictc --assign clip: the image set to score the "
                                          "names against (default: the only one)."),
    clip_template: Optional[str] = typer.Option(None, "--clip-template", help="ictc --assign clip: template for "
                                                "the names, '<>' = the name ('a photo of a <>.')."),
    text_model: Optional[str] = typer.Option(None, "--text-model", help="ictc: sentence-transformers folder or name "
                                             "for --assign embed and merging near-duplicate labels (all-MiniLM-L6-v2)."),
    max_labels: Optional[int] = typer.Option(None, "--max-labels", help="ictc: most frequent raw labels shown to "
                                             "the LLM when naming clusters (200)."),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="ictc: folder of prompt files overriding steps (step2a.txt, step2b.txt, step3.txt)."),
    extra: Optional[str] = typer.Option(None, "--extra", help="ictc: an extra instruction for naming the clusters."),
    min_count: Optional[int] = typer.Option(None, "--min-count", help="ictc: drop raw labels seen fewer times."),
    n_ctx: Optional[int] = typer.Option(None, "--n-ctx", help="ictc, GGUF: context window."),
    n_gpu_layers: Optional[int] = typer.Option(None, "--n-gpu-layers", help="ictc, GGUF: layers on the GPU (-1 = all)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="ictc, GGUF: CPU threads."),
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0.0, help="ictc: 0 = greedy (default)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="ictc: nucleus sampling mass when --temperature > 0 "
                                          "(the paper's GPT runs: 0.9)."),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="ictc, server: the model name."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="ictc, server: requests in flight."),
    mllm: Optional[str] = typer.Option(None, "--mllm", help="esmc: image-text-to-text model (hf:ORG/NAME or a folder) reading the images."),
    feature: Optional[str] = typer.Option(None, "--feature", help="esmc: hidden (default), lens (Hellinger) or lens-raw (the demo's probabilities)."),
    layer: Optional[int] = typer.Option(None, "--layer", help="esmc: layer to read (default: localised, else the last)."),
    position: Optional[int] = typer.Option(None, "--position", help="esmc: token from the end of the prompt (-1 = last)."),
    keywords: Optional[str] = typer.Option(None, "--keywords", help="esmc: criterion keywords a,b,c for localisation, or 'auto' (ask the LLM)."),
    keywords_llm: Optional[str] = typer.Option(None, "--keywords-llm", help="esmc: LLM asked for keywords (default --llm)."),
    locate_samples: Optional[int] = typer.Option(None, "--locate-samples", help="esmc: items sampled for localisation (10)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="esmc: prompt template with {criterion} (and {description})."),
    explain: bool = typer.Option(False, "--explain", help="esmc: name each cluster by its typical logit-lens tokens."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="esmc: auto (bf16/fp16 on GPU), fp32, fp16 or bf16."),
    forward_batch: Optional[int] = typer.Option(None, "--forward-batch", help="esmc: prompts per forward pass (8)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    with common.errors(FLAGS):
        # Method options are passed only when given on the command line (None = not given), so a method's
        # spec can refuse the options of other methods and fill in its own defaults.
        options = {
            "n_neighbors": n_neighbors, "linkage": linkage, "min_cluster_size": min_cluster_size,
            "train_split": None if train_split == "train" else train_split,
            "test_split": None if test_split == "test" else test_split,
            "criterion": criterion, "llm": llm, "names": names, "assign": assign, "text_model": text_model,
            "max_labels": max_labels, "top_p": top_p, "clip_template": clip_template, "clip_on": clip_on, "prompts_dir": prompts, "extra": extra,
            "min_count": min_count, "n_ctx": n_ctx, "n_gpu_layers": n_gpu_layers, "n_threads": threads,
            "temperature": temperature, "model_name": model_name, "concurrency": concurrency,
            "mllm": mllm, "feature": feature, "layer": layer, "position": position, "keywords": keywords,
            "keywords_llm": keywords_llm, "locate_samples": locate_samples, "prompt": prompt,
            "explain": explain or None, "dtype": dtype, "forward_batch": forward_batch,
        }
        request = ClusterRequest(
            method=method, on=on, k=k, seed=seed, name=name, model=model, split=split, refine=refine, ratio=ratio,
            epochs=epochs, lr=lr, batch_size=batch_size, device=device, k_range=_k_range(k_range), force=force,
            options={key: value for key, value in options.items() if value is not None},
        )
        summary = run_clustering(common.workspace(), request, reporter=common.RichReporter(quiet=common.STATE.quiet))
    if common.want_json(json_out):
        common.emit_json(summary.as_dict())
        return
    print_summary(summary)


def print_summary(summary: ClusteringSummary) -> None:
    out = common.stdout()
    if summary.k_table:
        table = Table("k", "silhouette", title="-k auto: silhouette of each candidate (euclidean)", title_justify="left")
        for row in summary.k_table:
            score = "undefined" if row["silhouette"] is None else f"{row['silhouette']:.4f}"
            table.add_row(str(row["k"]), score + ("  <- chosen" if row["k"] == summary.k else ""))
        out.print(table)
    sizes = sorted(summary.sizes.items(), key=lambda kv: int(kv[0]))
    real = [count for cid, count in sizes if int(cid) >= 0]
    size_text = f"sizes {min(real)}-{max(real)}" if real else "no clusters"
    if summary.n_noise:
        size_text += f", {summary.n_noise} noise"
    status = "reused" if summary.reused else ("replaced" if summary.replaced else "stored")
    what = summary.method + (" + ESMC head" if summary.params.get("refine") == "head" else "")
    line = (f"{summary.name}: {status} ({what} on '{summary.on}', {summary.n_items} items, seed {summary.seed}) "
            f"-> {summary.n_clusters} clusters, {size_text}")
    if summary.n_test is not None:
        line += f"; {summary.n_test} test items of '{summary.test_on}' classified"
    if not summary.reused:
        line += f" in {summary.seconds:.1f}s"
    else:
        line += "; pass --force to recompute"
    out.print(line, highlight=False, markup=False)
    if summary.method == "ictc":
        print_ictc(summary)
    if summary.method == "esmc":
        print_esmc(summary)


def print_ictc(summary: ClusteringSummary) -> None:
    """The K names with their sizes, unmatched answers and what the call cache saved."""
    out = common.stdout()
    params = summary.params
    for i, cluster_name in enumerate(summary.names or []):
        out.print(f"  {i}  {cluster_name}  ({summary.sizes.get(str(i), 0)} items)", highlight=False, markup=False)
    for note in params.get("names_replacements") or []:
        out.print(f"  names: {note}", highlight=False, markup=False)
    notes = []
    if params.get("coverage") is not None:
        notes.append(f"coverage {params['coverage']:.0%} (raw-label mass the names match)")
    if params.get("assign") == "label":
        notes.append(f"{params.get('n_llm_assigned', 0)} items placed by the LLM (labels matching no name)")
    notes.append(f"{params.get('n_unmatched', 0)} items assigned to the closest name without naming it")
    if params.get("names_fallback"):
        notes.append(f"names completed by fallback: {', '.join(params['names_fallback'])}")
    if not summary.reused:
        total = params.get("calls_total", {})
        per_step = ", ".join(f"{step} {c['hits']}/{c['misses']}" for step, c in params.get("calls", {}).items())
        notes.append(f"LLM calls: {total.get('hits', 0)} cached, {total.get('misses', 0)} new (hits/misses: {per_step})")
    out.print("  " + "; ".join(notes), highlight=False, markup=False)
    if summary.reused:  # a fresh run warned as it went
        for warning in params.get("warnings") or []:
            common.stderr().print(f"warning: {warning}", highlight=False, markup=False)


def print_esmc(summary: ClusteringSummary) -> None:
    """Where the state was read (and the localisation's evidence), then each cluster's name and size."""
    out = common.stdout()
    params = summary.params
    located = params.get("localisation")
    if located:
        out.print(f"  localised on {located['n_samples']} items with keywords {', '.join(located['keywords'])}: "
                  "keyword probability of the logit lens per layer (best position), top tokens", highlight=False,
                  markup=False)
        for row in located["table"]:
            mark = "  <- chosen" if (row["layer"], row["position"]) == (located["layer"], located["position"]) else ""
            out.print(f"    layer {row['layer']:>3} @{row['position']}  {row['score']:.4f}  "
                      f"{' '.join(repr(t) for t in row['top'])}{mark}", highlight=False, markup=False)
    where = (f"  {params.get('feature')} feature at layer {params.get('layer')}, position {params.get('position')} "
             f"({params.get('dtype')})")
    if not summary.reused:
        where += f"; {params.get('n_forward', 0)} items through the model, the others read from the workspace"
    out.print(where, highlight=False, markup=False)
    for i, cluster_name in enumerate(summary.names or []):
        out.print(f"  {i}  {cluster_name}  ({summary.sizes.get(str(i), 0)} items)", highlight=False, markup=False)
