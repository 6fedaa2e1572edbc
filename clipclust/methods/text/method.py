"""The text route's registry entry: descriptions embedded by a sentence-transformers model, then k-means.

It reads a description set (as ictc and esmc do), embeds every description with the text model (default
the packaged all-MiniLM-L6-v2, offline) and clusters the vectors: ``k`` clusters, or ``k="auto"`` by the
silhouette over the request's ``k_range`` as the classic methods choose.  The criterion becomes an
instruction where the model takes one (:func:`clipclust.models.text_encoder.instruction_format`); a plain
embedder cannot use it, and the run says so.  The embeddings are stored
(:mod:`clipclust.methods.text.embeddings`), so another K or a forced re-run loads no model.  No label is
read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clipclust.core.progress import Reporter
from clipclust.core.textfiles import check_line
from clipclust.errors import InputError, step
from clipclust.methods.criterion_values import k_from_values, named_values
from clipclust.methods.inputs import (check_k, default_name, description_set, full_centroids, keys_digest, parse_k,
                                      silhouette_k, slugify, split_keys)
from clipclust.methods.registry import (ClusteringSummary, ClusterRequest, MethodOutput, MethodSpec, Option,
                                        PreparedInput, at_least_one, register_method)
from clipclust.store import Workspace

INSTRUCTION = "cluster by {criterion}"  # what an instruction-aware model is told


def _encoder(req: ClusterRequest) -> Any:
    """The open encoder a caller passed, else the text model named (resolved now, loaded on its first call)."""
    given = req.option("text_encoder")
    if given is not None:
        return given
    from clipclust.models.text_encoder import TextEncoder

    device = str(req.option("device") or "auto")
    if device != "auto":
        from clipclust.models.devices import resolve_device

        device = resolve_device(device)
    try:
        return TextEncoder(req.option("text_model"), device=device)
    except InputError as exc:
        if exc.option:
            raise
        raise InputError(str(exc), option="text_model") from None


def _model_name(encoder: Any) -> str:
    return str(getattr(encoder, "spec", None) or encoder.identity)


def _instruction(encoder: Any, criterion: str | None) -> tuple[str, str]:
    """The prefix the descriptions are embedded with ("" for none) and the line that says what became of
    the criterion."""
    model = _model_name(encoder)
    if not criterion:
        return "", ""
    prefix_of = getattr(encoder, "instruction_prefix", None)
    prefix = prefix_of(INSTRUCTION.format(criterion=criterion)) if prefix_of is not None else None
    if prefix is None:
        return "", (f"criterion '{criterion}' not used: {model} takes no instruction (a plain sentence embedder), "
                    "so the clusters follow what the descriptions say overall; an instruction-aware text model "
                    "(E5 or GTE instruct, Qwen3-Embedding, INSTRUCTOR) uses it")
    source = encoder.instruction_format.source
    return prefix, f"criterion '{criterion}' given to {model} as the instruction {prefix!r} ({source})"


def prepare_text(workspace: Workspace, req: ClusterRequest) -> PreparedInput:
    from clipclust.methods.text.embeddings import embedding_spec

    k = parse_k(req.k)
    if k is None:
        raise InputError("the text method needs the number of clusters (a whole number, or 'auto')", option="k")
    info = description_set(workspace, req.on, req.model, reader="the text method")
    keys, texts = workspace.read_set(info.id)
    keep = split_keys(workspace, info, keys, req.split)
    keys, texts = [keys[i] for i in keep], [str(texts[i]) for i in keep]
    if not keys:
        raise InputError(f"set '{info.name}' is empty; run {step('describe')} first", option="on")
    if k != "auto":
        check_k(int(k), len(keys), info, req.split)
    criterion = str(req.option("criterion") or "").strip() or None
    encoder = _encoder(req)
    prompt, note = _instruction(encoder, criterion)
    spec = embedding_spec(encoder.identity, _model_name(encoder), info, workspace.set_digest(info.id), prompt)
    seed = 0 if req.seed is None else req.seed
    identity: dict[str, Any] = {
        "method": "text", "set_id": info.id, "split": req.split or "", "n_items": len(keys),
        "keys_sha256": keys_digest(keys), "texts_sha256": keys_digest(texts), "text_model": encoder.identity,
        "criterion": criterion, "prompt": prompt, "k": k, "seed": seed,
    }
    if k == "auto":
        identity["k_range"] = list(req.k_range)
        if criterion and named_values(criterion):  # K read off the criterion (absent: older runs reused)
            identity["k_values"] = named_values(criterion)
    base = f"text-{slugify(criterion or info.name, 40)}" + (f"-{slugify(req.split)}" if req.split else "")
    return PreparedInput(identity, default_name(workspace, base, info), {"input": info}, keys,
                         np.zeros((len(keys), 0)),
                         {"workspace": workspace, "texts": texts, "encoder": encoder, "prompt": prompt, "note": note,
                          "criterion": criterion, "spec": spec, "k": k, "seed": seed})


def compute_text(prepared: PreparedInput, req: ClusterRequest, reporter: Reporter) -> MethodOutput:
    from clipclust.core.clustering import cluster
    from clipclust.methods.text.embeddings import text_embeddings

    ctx = prepared.context
    encoder = ctx["encoder"]
    embedded = text_embeddings(ctx["workspace"], ctx["spec"], prepared.keys, ctx["texts"], encoder, ctx["prompt"],
                               int(req.option("encode_batch")), reporter)
    X = embedded.vectors
    # The clustering's input is the embedding set (its vectors give evaluate's silhouette, visualize's maps and
    # the report's ranking); the description set it was made from stays named beside it.
    prepared.sets.update(input=ctx["workspace"].resolve_set(embedded.set_id), descriptions=prepared.sets["input"])
    seed, k = ctx["seed"], ctx["k"]
    details: dict[str, Any] = {"seed": seed}
    found = k_from_values(ctx["criterion"] or "", X.shape[0]) if k == "auto" else None
    if found is not None:  # the criterion says how many groups it makes
        k = found[0]
        details.update(k_chosen=k, k_evidence=[found[1]])
    elif k == "auto":
        k, details["k_table"] = silhouette_k(X, "kmeans", req.k_range, seed, reporter)
        details["k_chosen"] = int(k)
    ids = cluster(X, "kmeans", int(k), seed).ids
    details.update(
        k=int(k), text_model=encoder.identity, text_model_name=_model_name(encoder),
        criterion=ctx["criterion"], prompt=ctx["prompt"], criterion_used=bool(ctx["prompt"]),
        criterion_note=ctx["note"], embedding_set=embedded.set_id, n_encoded=embedded.n_encoded,
    )
    return MethodOutput(keys=prepared.keys, ids=np.asarray(ids, dtype=np.int64),
                        centroids=full_centroids(np.asarray(X, np.float64), ids, int(k)), details=details)


def report_text(summary: ClusteringSummary) -> list[str]:
    """What became of the criterion (given as an instruction, or not used: said here, on stdout, every time, never
    silently), and how many descriptions the model embedded in this run."""
    params = summary.params
    lines = [f"  {params['criterion_note']}"] if params.get("criterion_note") else []
    lines += [f"  K: {line}" for line in params.get("k_evidence") or []]
    where = f"  k-means on {params.get('text_model_name')} embeddings of the descriptions"
    if not summary.reused:
        n = params.get("n_encoded", 0)
        where += (f"; {n} embedded now, the others read from the workspace" if n
                  else "; all read from the workspace, no model loaded")
    return lines + [where]


register_method(MethodSpec(
    "text", "the text route: k-means on a sentence-transformers embedding of each stored description, the "
    "no-LLM baseline; the embeddings are kept in the workspace, so another k or a re-run loads no model",
    prepare_text, compute_text, report=report_text,
    options=(
        Option("criterion", short="c", check=lambda c: check_line(str(c), "criterion"),
               help="what to cluster by: an instruction-aware text model is told 'cluster by CRITERION'; a plain "
               "one (MiniLM) cannot use it, and the summary says so"),
        Option("text_model", shown_default="all-MiniLM-L6-v2, offline",
               help="sentence-transformers folder or name that embeds the descriptions"),
        Option("text_encoder", type=object, identity=False, help="an open TextEncoder instead of text_model"),
        Option("device", default="auto", identity=False, help="where the text model runs: auto, cpu or cuda[:N]"),
        Option("encode_batch", type=int, default=64, check=at_least_one, identity=False,
               help="descriptions embedded and stored per batch (an interrupted run keeps the batches done)"),
    )))
