"""ESMC's registry entry: criterion embeddings from an LLM's hidden states, k-means, optionally the head.

Images go through an image-text-to-text model (``mllm``), descriptions through a text LLM (``llm``):
each item's prompt ends with the criterion prompt and the hidden state at one (layer, position), or its
logit lens (``feature="lens"``), is clustered.  The states are stored in the workspace
(:mod:`clipclust.methods.esmc.states`), so another K, the head or names cost no forward pass.  With
``refine="head"`` the ESMC head (:mod:`clipclust.methods.head`) refines k-means as in the paper.
``explain`` names each cluster by its over-represented lens tokens; :func:`report_esmc` says where the
state was read.  No label is read.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from clipclust.store import SetInfo, Workspace
from clipclust.errors import InputError, step
from clipclust.core.progress import Reporter
from clipclust.core.textfiles import check_line
from clipclust.methods.inputs import check_k, default_name, description_set, full_centroids, keys_digest, parse_k, slugify, split_keys
from clipclust.methods.criterion_values import named_values
from clipclust.methods.head.method import head_identity, refine_with_head
from clipclust.methods.registry import (ClusteringSummary, ClusterRequest, LevelOutput, MethodOutput, MethodSpec,
                                        Option, PreparedInput, at_least_one, register_method, timeout_option)

FEATURES = ("hidden", "lens", "lens-raw")


class _ImageItems:
    """Stands in for a stored set when the model reads the workspace's image files."""

    id, name, kind, model, prompt = "items", "images", "items", "", ""


def _descriptions(workspace: Workspace, req: ClusterRequest) -> tuple[SetInfo, list[str], list[str]]:
    info = description_set(workspace, req.on, req.model, reader="a text LLM",
                           hint=", or read the images with an image-text model", missing_option="llm")
    keys, texts = workspace.read_set(info.id)
    keep = split_keys(workspace, info, keys, req.split)
    return info, [keys[i] for i in keep], [str(texts[i]) for i in keep]


def _images(workspace: Workspace, req: ClusterRequest) -> tuple[list[str], list[str]]:
    if req.on is not None:
        raise InputError("an image-text model reads the workspace's image files; leave the set out", option="on")
    items = workspace.items()
    keep = [i for i, path in enumerate(items.path) if path and Path(path).is_file()]
    if req.split is not None:
        keep = [i for i in keep if items.split[i] == req.split]
    if not keep:
        where = f" in split '{req.split}'" if req.split else ""
        raise InputError(f"no item{where} has an image file on disk; run {step('embed', 'IMAGES')} first",
                         option="mllm")
    return [items.sha256[i] for i in keep], [items.path[i] for i in keep]


def prepare_esmc(workspace: Workspace, req: ClusterRequest) -> PreparedInput:
    from clipclust.methods.esmc.states import StateRequest, StateSource, choose_reader
    from clipclust.methods.esmc.features import DEFAULT_IMAGE_TEMPLATE, DEFAULT_TEXT_TEMPLATE

    criterion = str(req.option("criterion") or "").strip()
    if not criterion:
        raise InputError("the esmc method needs a criterion (what to cluster by, e.g. color)", option="criterion")
    llm, mllm = req.option("llm"), req.option("mllm")
    if (llm is None) == (mllm is None):
        raise InputError("the esmc method reads descriptions with a text LLM or images with an image-text model: "
                         "give exactly one of them", option="llm" if llm is None else "mllm")
    if not workspace.exists():
        raise InputError(f"no workspace at {workspace.path}; run {step('embed')} or {step('describe')} first")
    k = parse_k(req.k)
    if k is None:
        raise InputError("the esmc method needs the number of clusters (a whole number, or auto)", option="k")
    if llm is not None:
        info, keys, texts = _descriptions(workspace, req)
        source = StateSource(set_id=info.id, keys=keys, texts=texts)
        template = req.option("prompt") or DEFAULT_TEXT_TEMPLATE
    else:
        info = _ImageItems()  # type: ignore[assignment]
        keys, paths = _images(workspace, req)
        source = StateSource(set_id="items", keys=keys, paths=paths)
        template = req.option("prompt") or DEFAULT_IMAGE_TEMPLATE
    if not keys:
        raise InputError(f"no item to cluster in '{info.name}'" + (f" (split '{req.split}')" if req.split else ""),
                         option="split" if req.split else "on")
    if k != "auto":
        check_k(int(k), len(keys), info, req.split)  # type: ignore[arg-type]
    elif len(keys) < 3:
        raise InputError(f"{len(keys)} items are too few to choose the number of clusters; give it", option="k")
    model_spec = llm if llm is not None else mllm
    seed = 0 if req.seed is None else req.seed
    keywords = req.option("keywords")
    state_req = StateRequest(
        model=model_spec, criterion=criterion, template=template, layer=req.option("layer"),
        position=req.option("position"), keywords=None if keywords in (None, "auto") else list(keywords),
        locate_samples=req.option("locate_samples"), seed=seed, device=req.option("device"), dtype=req.option("dtype"),
        batch_size=req.option("forward_batch"), reader=req.option("reader"),
    )
    if keywords == "auto":
        state_req.keywords = ["auto"]  # asked later; the reader only needs to know that localisation comes
    try:  # the reader's identity is the states' (transformers and llama.cpp states are different sets)
        model_identity = choose_reader(workspace, state_req, source.images).identity
    except InputError as exc:
        if exc.option:
            raise
        raise InputError(str(exc), option="llm" if llm is not None else "mllm") from None
    if keywords == "auto":
        state_req.keywords = None
    try:  # the template is checked before anything is computed
        from clipclust.methods.esmc.features import criterion_prompt

        criterion_prompt(template, criterion, "" if llm is not None else None)
    except ValueError as exc:
        raise InputError(str(exc), option="prompt") from None
    identity = {
        "method": "esmc", "set_id": source.set_id, "split": req.split or "", "n_items": len(keys),
        "keys_sha256": keys_digest(keys), "texts_sha256": keys_digest(texts) if llm is not None else "",
        "model": model_identity, "reads": "descriptions" if llm is not None else "images", "criterion": criterion,
        "template": template, "feature": req.option("feature"), "layer": state_req.layer,
        "position": state_req.position, "keywords": keywords, "keywords_llm": req.option("keywords_llm"),
        "locate_samples": state_req.locate_samples, "k": k, "seed": seed, "refine": req.refine or "",
        "explain": bool(req.option("explain")), "dtype": req.option("dtype"),
    }
    if k == "auto":
        identity["k_range"] = list(req.k_range)
        if named_values(criterion):  # K read off the criterion, not the states (absent: older runs reused)
            identity["k_values"] = named_values(criterion)
    if req.option("levels") != 1:  # absent at 1, so that flat clusterings stored before levels are reused
        identity["levels"] = req.option("levels")
    if req.refine == "head":
        identity.update(head_identity(req.refine_options))
    base = f"esmc{'-head' if req.refine else ''}-{slugify(criterion, 40)}"
    return PreparedInput(identity, base if llm is None else default_name(workspace, base, info), {"input": info},
                         keys, np.zeros((len(keys), 0)),
                         {"workspace": workspace, "source": source, "state_req": state_req, "k": k, "seed": seed})


def _keywords(workspace: Workspace, req: ClusterRequest, reporter: Reporter) -> list[str]:
    """Criterion keywords asked from an LLM through the runtime (cached in the workspace)."""
    from clipclust.methods.esmc.features import ask_keywords
    from clipclust.models.llm import CachedGenerator, load_generator

    spec = req.option("keywords_llm") or req.option("llm")
    if spec is None:
        raise InputError("asking for keywords needs an LLM; name one, or give the keywords", option="keywords_llm")
    with reporter.task("asking the LLM for criterion keywords", None), \
            load_generator(spec, seed=0, lazy=True, timeout=req.option("timeout"), notice=reporter.warn) as generator:
        try:
            return ask_keywords(CachedGenerator(generator, workspace), req.option("criterion"))
        except ValueError as exc:
            raise InputError(str(exc), option="keywords") from None


def compute_esmc(prepared: PreparedInput, req: ClusterRequest, reporter: Reporter) -> MethodOutput:
    from clipclust.methods.esmc.states import criterion_states
    from clipclust.core.clustering import cluster
    from clipclust.methods.esmc.features import explain, hellinger_features, hidden_features, lens_features

    ctx = prepared.context
    state_req = ctx["state_req"]
    if req.option("keywords") == "auto" and (state_req.layer is None or state_req.position is None):
        state_req.keywords = _keywords(ctx["workspace"], req, reporter)
    states = criterion_states(ctx["workspace"], ctx["source"], state_req, reporter)
    if req.option("feature") == "lens":
        X = hellinger_features(lens_features(states.top_ids, states.top_probs)[0])
    elif req.option("feature") == "lens-raw":  # the demo's vocabulary probabilities as they are
        X = lens_features(states.top_ids, states.top_probs)[0]
    else:
        X = hidden_features(states.hidden)
    k, seed = ctx["k"], ctx["seed"]
    chosen: dict[str, Any] = {}
    if k == "auto":
        from clipclust.methods.esmc.taxonomy import choose_k

        k, evidence, table = choose_k(X, state_req.criterion, req.k_range, seed)
        chosen = {"k_chosen": k, "k_evidence": evidence, "k_scores": table}  # per candidate: eigengap votes and gaps
    details: dict[str, Any] = {
        "seed": seed, "k": k, "criterion": state_req.criterion, "feature": req.option("feature"),
        "layer": states.layer, "position": states.position, "model": states.model_identity,
        "prompt": states.details["prompt"], "dtype": states.details["dtype"], "keywords": state_req.keywords,
        "reader": states.details["reader"], **({"reader_note": states.details["reader_note"]}
                                               if "reader_note" in states.details else {}),
        "localisation": states.localisation, "state_sets": states.set_ids, "n_forward": states.n_computed,
        "forward_seconds": round(states.forward_seconds, 3), **chosen,
    }
    extra: dict[str, Any] = {}
    if req.refine == "head":
        result = refine_with_head(X, k, seed, req.refine_options)
        ids = result.ids
        details.update(head=result.params, final_loss=result.loss_curve[-1])
        extra = {"kmeans_ids": result.kmeans_ids, "pseudo_indices": result.pseudo_indices}
    else:
        ids = cluster(X, "kmeans", k, seed).ids
    texts = ctx["source"].texts  # descriptions (None for images): names are words they use
    names = explain(ids, states.top_ids, states.top_probs, states.token_text, k, texts=texts) \
        if req.option("explain") else None
    if names is not None:
        details["names"] = names
    levels = _levels(X, np.asarray(ids, dtype=np.int64), k, states, req, texts)
    if levels:
        details["level_k"] = [level.details["k"] for level in levels] + [k]
        details["level_names"] = [level.cluster_names for level in levels]
    return MethodOutput(keys=prepared.keys, ids=np.asarray(ids, dtype=np.int64),
                        centroids=full_centroids(np.asarray(X, np.float64), ids, k), cluster_names=names,
                        extra=extra, details=details, levels=levels)


def _levels(X: np.ndarray, ids: np.ndarray, k: int, states: Any, req: ClusterRequest,
            texts: list[str] | None) -> list[LevelOutput]:
    """The coarser levels ``levels`` asks for: Ward over the fine clusters, cut at data-chosen K's
    (methods/esmc/taxonomy.py), each named by its lens tokens when ``explain`` is on."""
    from clipclust.methods.esmc.features import explain
    from clipclust.methods.esmc.taxonomy import coarse_cuts

    depth = int(req.option("levels"))
    cuts = coarse_cuts(X, ids, k, depth)
    if depth > 1 and len(cuts) < depth - 1:  # the command turns it into a warning on the reporter
        warnings.warn(f"{k} clusters leave no room for {depth - 1} coarser level(s) of 2 or more clusters "
                      "between them and 1; stored flat")
    out = []
    for cut in cuts:
        names = explain(cut.ids, states.top_ids, states.top_probs, states.token_text, cut.k, texts=texts) \
            if req.option("explain") else None
        out.append(LevelOutput(cut.ids, names, {"k": cut.k, "k_evidence": cut.evidence}))
    return out


def _layer(value: Any) -> int:
    if int(value) < 0:
        raise ValueError(f"{value}: layers are numbered from 0 (the token embeddings)")
    return int(value)


def _position(value: Any) -> int:
    if int(value) >= 0:
        raise ValueError(f"{value}: positions count back from the end of the prompt (-1 = its last token)")
    return int(value)


def _depth(value: Any) -> int:
    if not 1 <= int(value) <= 3:
        raise ValueError(f"{value}: expected 1 (flat), 2 or 3 levels")
    return int(value)


def _keyword_list(value: Any) -> Any:
    from clipclust.methods.esmc.features import parse_keywords

    if value == "auto":
        return value
    words = parse_keywords(value) if isinstance(value, str) else [str(w).strip() for w in value if str(w).strip()]
    if not words:
        raise ValueError("expected a comma-separated list of words, or 'auto' to ask the LLM")
    return words


def report_esmc(summary: ClusteringSummary) -> list[str]:
    """Where the state was read (and the localisation's evidence), then each cluster's name and size."""
    params = summary.params
    lines = []
    located = params.get("localisation")
    if located:
        lines.append(f"  localised on {located['n_samples']} items with keywords {', '.join(located['keywords'])}: "
                     "keyword probability of the logit lens per layer (best position), top tokens")
        for row in located["table"]:
            mark = "  <- chosen" if (row["layer"], row["position"]) == (located["layer"], located["position"]) else ""
            lines.append(f"    layer {row['layer']:>3} @{row['position']}  {row['score']:.4f}  "
                         f"{' '.join(repr(t) for t in row['top'])}{mark}")
    read_by = f"{params['reader']}, " if params.get("reader") else ""
    where = (f"  {params.get('feature')} feature at layer {params.get('layer')}, position {params.get('position')} "
             f"({read_by}{params.get('dtype')})")
    if not summary.reused:
        where += f"; {params.get('n_forward', 0)} items through the model, the others read from the workspace"
    for line in params.get("k_evidence") or []:
        lines.append(f"  K: {line}")
    if params.get("level_k"):
        names = params.get("levels") or []
        lines.append(f"  levels ({' > '.join(names)}): K = " + " > ".join(map(str, params["level_k"])))
        parents = list(params.get("parents") or [])
        for depth, (k, level_names) in enumerate(zip(params["level_k"], params.get("level_names") or [])):
            for c in range(k):  # the level above the finest lists its fine clusters
                children = [str(i) for i, p in enumerate(parents) if p == c] if depth == len(names) - 2 else []
                lines.append(f"    level {depth + 1} cluster {c}  {(level_names or [''] * k)[c] or '-'}"
                             + (f"  > clusters {', '.join(children)}" if children else ""))
    return lines + [where] + summary.cluster_lines()


register_method(MethodSpec(
    "esmc", "ESMC: k-means on the hidden state an LLM holds after a criterion prompt, read from each description "
    "(llm) or image (mllm); the states are cached in the workspace, so another k, the head or names cost no "
    "forward pass", prepare_esmc, compute_esmc, refinable=True, report=report_esmc,
    options=(
        Option("criterion", short="c", check=lambda c: check_line(str(c), "criterion"),
               help="what to cluster by, e.g. color"),
        Option("llm", help="text LLM reading a description set: hf:ORG/NAME, a folder or a .gguf file"),
        Option("mllm", help="image-text-to-text model reading the images: hf:ORG/NAME or a folder"),
        Option("feature", default="hidden", choices=FEATURES,
               help="hidden (the state), lens (its logit lens, Hellinger-embedded) or lens-raw (the lens "
               "probabilities as the paper's demo feeds them)"),
        Option("layer", type=int, check=_layer, shown_default="localised, else the last", help="layer to read"),
        Option("position", type=int, check=_position, shown_default="localised, else -1",
               help="token position from the end of the prompt (-1 = its last token)"),
        Option("keywords", check=_keyword_list,
               help="criterion keywords a,b,c that localise the layer and position, or 'auto' to ask an LLM"),
        Option("keywords_llm", shown_default="llm", help="the LLM asked for keywords"),
        Option("locate_samples", type=int, default=10, check=at_least_one, help="items sampled for localisation"),
        Option("prompt", help="prompt template with {criterion} (and {description} for descriptions)"),
        Option("explain", type=bool, default=False,
               help="name each cluster by the whole words over-represented in its lens tokens (and descriptions)"),
        Option("levels", type=int, default=1, check=_depth,
               help="taxonomy depth: 2 or 3 stores coarser levels as linked clusterings"),
        Option("dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
               help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16"),
        Option("device", default="auto", identity=False, help="where the model runs: auto, cpu or cuda[:N]"),
        Option("forward_batch", type=int, default=8, check=at_least_one, identity=False,
               help="transformers: prompts per forward pass (llama.cpp reads one prompt per pass)"),
        Option("reader", default="auto", choices=("auto", "llama.cpp", "transformers"), identity=False,
               help="what computes the states: auto (llama.cpp for a .gguf llm read at its last layer, transformers "
               "otherwise), llama.cpp or transformers; each reader's states are stored apart"),
        timeout_option("the keywords LLM"),
    )))
