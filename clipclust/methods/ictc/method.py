"""IC|TC's registry entry: an LLM labels each description for a criterion, names K clusters, assigns every item.

This module reads the description set, opens the LLM lazily (a cached run loads none), says what
identifies a request, and formats what a run found (:func:`report_ictc`); the steps themselves are the
package's other modules (see :mod:`clipclust.methods.ictc`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clipclust.store import Workspace
from clipclust.errors import InputError, step
from clipclust.core.progress import Reporter
from clipclust.methods.criterion_values import named_values
from clipclust.core.textfiles import check_line
from clipclust.core.templates import check_template
from clipclust.core.vectors import unit_rows
from clipclust.methods.inputs import check_k, default_name, description_set, keys_digest, parse_k, slugify, split_keys
from clipclust.methods.registry import (ClusteringSummary, ClusterRequest, LevelOutput, MethodOutput, MethodSpec,
                                        Option, PreparedInput, at_least_one, register_method, timeout_option)

ICTC_ASSIGN = ("label-embed", "label", "embed", "clip", "constrained", "generate")
CLIP_TEMPLATE = "a photo of a <>."
ICTC_NAMES = ("auto", "frequent", "hybrid", "llm", "taxonomy")
# auto: frequent where the raw labels sit at K's level (the best measured at fine K with a 0.5B model,
# bench/ictc_quality.py), taxonomy where they are finer than K or a heavy label is another's parent.
DEFAULT_NAMES, DEFAULT_ASSIGN = "auto", "label-embed"


def prepare_ictc(workspace: Workspace, req: ClusterRequest) -> PreparedInput:
    from clipclust.methods.ictc import default_prompts, STEPS
    from clipclust.models.llm import DecodeParams, load_generator

    criterion = req.option("criterion")
    if not criterion or not str(criterion).strip():
        raise InputError("the ictc method needs a criterion (what to cluster by, e.g. mood)", option="criterion")
    k = parse_k(req.k)
    if k is None:
        raise InputError("the ictc method needs the number of clusters, or auto (from the criterion's values or the raw labels)",
                         option="k")
    levels = int(req.option("levels", 1))
    if levels > 1 and req.option("names") not in ("taxonomy", "auto"):
        raise InputError("coarser levels are cuts of the label taxonomy; choose names taxonomy or auto",
                         option="levels")
    mode = req.option("assign")
    llm, generator = req.option("llm"), req.option("generator")
    if llm is None and generator is None:
        raise InputError("the ictc method needs an LLM (a .gguf file, hf:ORG/NAME or http://HOST:PORT/v1)",
                         option="llm")
    info = description_set(workspace, req.on, req.model, reader="the ictc method")
    keys, texts = workspace.read_set(info.id)
    keep = split_keys(workspace, info, keys, req.split)
    if req.split is not None:
        keys, texts = [keys[i] for i in keep], texts[keep]
    if not keys:
        raise InputError(f"set '{info.name}' is empty; run {step('describe')} first", option="on")
    if k != "auto":
        check_k(int(k), len(keys), info, req.split)
    criterion = str(criterion).strip()
    prompts = default_prompts(criterion, prompt_dir=req.option("prompts_dir"))
    seed = 0 if req.seed is None else req.seed
    backend = {name: req.options.get(name) for name in LLM_BACKEND_OPTIONS if req.options.get(name) is not None}
    params = DecodeParams(temperature=float(backend.pop("temperature", 0.0)), top_p=float(backend.pop("top_p", 1.0)),
                          seed=seed)
    if "model_name" in backend:
        backend["model"] = backend.pop("model_name")
    names_mode = req.option("names")
    if req.option("extra") is not None and names_mode in ("auto", "frequent", "taxonomy"):
        raise InputError("an extra naming instruction is for the LLM's names; choose names llm or hybrid",
                         option="extra")
    text_encoder = None
    if mode in ("embed", "label-embed") or names_mode != "llm" or k == "auto":
        from clipclust.models.text_encoder import TextEncoder  # identity now, weights on the first call

        text_encoder = TextEncoder(req.option("text_model"))
    clip = _clip_inputs(workspace, req, keys) if mode == "clip" else None
    owned = generator is None
    if owned:
        # Lazy: the identity now, the weights on the first call, so a reused or fully cached run loads nothing.
        generator = load_generator(llm, lazy=True, seed=seed, **backend)  # type: ignore[arg-type]
    identity = {
        "method": "ictc", "set_id": info.id, "split": req.split or "", "n_items": len(keys),
        "keys_sha256": keys_digest(keys), "texts_sha256": keys_digest([str(t) for t in texts]),
        "criterion": criterion, "k": k if k == "auto" else int(k), "assign": mode, "names": names_mode, "llm": generator.identity,
        "params": params.to_dict(), "prompts": {step: getattr(prompts, step) for step in STEPS},
        "extra": req.option("extra"), "min_count": req.option("min_count"), "max_labels": req.option("max_labels"),
        "text_model": text_encoder.identity if text_encoder is not None else None,
        "clip": None if clip is None else {"image_set": clip["set"].id, "template": clip["template"]},
        **({"levels": levels} if levels > 1 else {}),  # absent at 1: a flat request keeps its old identity
        # K read off the criterion's own values (absent otherwise: earlier auto runs stay reusable)
        **({"k_values": values} if k == "auto" and (values := named_values(criterion)) else {}),
    }
    return PreparedInput(
        identity, default_name(workspace, f"ictc-{slugify(criterion)}", info), {"input": info}, keys,
        np.asarray(texts, dtype=object),
        {"workspace": workspace, "generator": generator, "criterion": criterion, "k": k if k == "auto" else int(k),
         "levels": levels, "mode": mode,
         "names_mode": names_mode, "prompts": prompts, "params": params, "seed": seed, "text_encoder": text_encoder,
         "clip": clip},
        cleanup=generator.close if owned else None,
    )


def compute_ictc(prepared: PreparedInput, req: ClusterRequest, reporter: Reporter) -> MethodOutput:
    from clipclust.methods.ictc import run_ictc
    from clipclust.models.llm import CachedGenerator, tell_slow

    ctx = prepared.context
    tell_slow(ctx["generator"], reporter.warn)
    cached = CachedGenerator(ctx["generator"], ctx["workspace"])
    result = run_ictc(
        cached, [str(t) for t in prepared.vectors], ctx["criterion"], ctx["k"], mode=ctx["mode"],
        names_mode=ctx["names_mode"], prompts=ctx["prompts"], params=ctx["params"],
        min_count=req.option("min_count"), max_labels=req.option("max_labels"), extra=req.option("extra"),
        embed=ctx["text_encoder"], clip_scores=_clip_scorer(ctx["clip"], prepared.keys) if ctx["clip"] else None,
        levels=ctx["levels"],
    )
    for warning in result.warnings:
        reporter.warn(warning)
    n = len(prepared.keys)
    details = {
        "seed": ctx["seed"], "k": result.k, "k_requested": ctx["k"], "criterion": result.criterion, "assign": result.mode,
        "llm": cached.identity, "llm_name": cached.name, "prompts_source": result.prompts_source,
        "extra": result.extra, "decode": result.params.to_dict(), "names": result.names,
        "dictionary": result.dictionary, "kept": result.kept, "min_count": result.min_count,
        "names_outputs": result.names_outputs, "names_attempts": result.names_attempts,
        "names_fallback": result.names_fallback, "n_unmatched": result.n_unmatched,
        "names_mode": result.names_mode, "names_proposed": result.names_proposed,
        "names_replacements": result.names_replacements, "coverage": result.coverage,
        "n_llm_assigned": result.n_llm_assigned, "warnings": result.warnings,
        "names_sources": result.names_sources, "names_notes": result.names_notes,
        "names_choice": result.names_choice,
        **({"k_evidence": result.k_evidence, "k_chosen": result.k} if ctx["k"] == "auto" else {}),
        "text_model": ctx["text_encoder"].identity if ctx["text_encoder"] is not None else None,
        "clip": None if ctx["clip"] is None else {"image_set": ctx["clip"]["set"].id,
                                                  "template": ctx["clip"]["template"]},
        "calls": {step: {"hits": c.hits, "misses": c.misses} for step, c in result.stats.items()},
        "calls_total": {"hits": cached.stats.hits, "misses": cached.stats.misses},
    }
    extra: dict[str, Any] = {"answers": [str(a) for a in result.answers],
                             "matched": np.asarray(result.matched, dtype=np.int8)}
    if len(result.raw_labels) == n:
        extra["raw_labels"] = [str(lab) for lab in result.raw_labels]
        extra["raw_outputs"] = [str(o) for o in result.raw_outputs]
    levels = [LevelOutput(np.asarray(lv.ids, dtype=np.int64), list(lv.names),
                          {"k": lv.k, "names_sources": lv.sources, "names_notes": lv.notes, "coverage": lv.coverage,
                           "parents_of_finer": lv.parents_of_finer}) for lv in result.levels]
    return MethodOutput(keys=prepared.keys, ids=np.asarray(result.cluster_ids, dtype=np.int64),
                        cluster_names=list(result.names), extra=extra, details=details, levels=levels)


def _clip_inputs(workspace: Workspace, req: ClusterRequest, keys: list[str]) -> dict[str, Any]:
    """The stored image set whose vectors clip assignment scores the names against (one vector per
    item needed), the name template, and the CLIP model to encode the names with (loaded later)."""
    import json

    image = workspace.resolve_set(req.option("clip_on") or "image", keyed_by="item")
    if image.kind != "image":
        raise InputError(f"'{image.name}' is a {image.kind} set; clip assignment needs an image set", option="clip_on")
    have = workspace.set_keys(image.id)
    missing = [key for key in keys if key not in have]
    if missing:
        raise InputError(f"{len(missing)} of {len(keys)} described items have no vector in image set '{image.name}' "
                         "(descriptions imported without their images?); embed the images first or assign "
                         "another way", option="assign")
    template = str(req.option("clip_template") or CLIP_TEMPLATE)
    provenance = json.loads(image.attrs.get("provenance") or "{}")
    return {"set": image, "template": template, "workspace": workspace, "encoder": req.option("clip_encoder"),
            "model_spec": provenance.get("model_spec") or image.model, "device": req.option("device")}


def _clip_scorer(clip: dict[str, Any], keys: list[str]) -> Any:
    """names -> items x names cosine scores: the names through the template, encoded by the image
    set's CLIP model (loaded on the call, once) against the stored image vectors."""

    def scores(names: list[str]) -> np.ndarray:
        from clipclust.models.clip import load_clip
        from clipclust.core.templates import fill

        encoder = clip["encoder"] or load_clip(clip["model_spec"], device=clip["device"], identity=clip["set"].model)
        texts = encoder.encode_texts([fill(clip["template"], n) for n in names])
        set_keys, vectors = clip["workspace"].read_set(clip["set"].id)
        row = {k: i for i, k in enumerate(set_keys)}
        return unit_rows(vectors[[row[k] for k in keys]]) @ unit_rows(texts).T

    return scores


def _levels(value: Any) -> int:
    if int(value) not in (1, 2, 3):
        raise ValueError(f"{value}: expected 1, 2 or 3")
    return int(value)


def _fraction(value: Any) -> float:
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{value}: expected a number in (0, 1]")
    return float(value)


def _not_negative(value: Any) -> float:
    if float(value) < 0.0:
        raise ValueError(f"{value}: expected 0 (greedy) or more")
    return float(value)


def report_ictc(summary: ClusteringSummary) -> list[str]:
    """The K names with their sizes, the names replaced, unmatched answers and what the call cache saved."""
    params = summary.params
    lines = summary.cluster_lines() + [f"  names: {note}" for note in params.get("names_replacements") or []]
    lines += [f"  names {params['names_choice']}"] if params.get("names_choice") else []
    lines += [f"  named {note}" for note in params.get("names_notes") or []]
    if params.get("k_evidence"):
        lines += [f"  k auto: {line}" for line in params["k_evidence"]]
    notes = []
    if params.get("coverage") is not None:
        what = ("items whose raw label lies in their concept" if params.get("names_mode") == "taxonomy"
                else "raw-label mass the names match")
        notes.append(f"coverage {params['coverage']:.0%} ({what})")
    if params.get("assign") == "label":
        notes.append(f"{params.get('n_llm_assigned', 0)} items placed by the LLM (labels matching no name)")
    notes.append(f"{params.get('n_unmatched', 0)} items assigned to the closest name without naming it")
    if params.get("names_fallback"):
        notes.append(f"names completed by fallback: {', '.join(params['names_fallback'])}")
    if not summary.reused:  # a reused result made no call
        total = params.get("calls_total", {})
        per_step = ", ".join(f"{name} {c['hits']}/{c['misses']}" for name, c in params.get("calls", {}).items())
        notes.append(f"LLM calls: {total.get('hits', 0)} cached, {total.get('misses', 0)} new (hits/misses: {per_step})")
    return lines + ["  " + "; ".join(notes)]


# Options of the LLM backend (llama.cpp, servers); they change how answers are computed, not which.
LLM_BACKEND_OPTIONS = ("n_ctx", "n_gpu_layers", "n_threads", "temperature", "top_p", "model_name", "concurrency",
                       "timeout")

register_method(MethodSpec(
    "ictc", "IC|TC: an LLM labels each stored description for a criterion, names K clusters and assigns every "
    "item; criterion, k (or auto: the number of values the criterion names, as in 'animal or vehicle', else "
    "chosen from the raw labels' taxonomy) and llm are required, and every LLM "
    "answer is cached in the workspace, so a forced re-run loads no LLM", prepare_ictc, compute_ictc, report=report_ictc,
    options=(
        Option("criterion", short="c", check=lambda c: check_line(str(c), "criterion"),
               help="what to cluster by, e.g. mood"),
        Option("llm", help="a .gguf file, hf:ORG/NAME or a folder, or http://HOST:PORT/v1"),
        Option("generator", type=object, identity=False, help="an open TextGenerator instead of llm"),
        Option("names", default=DEFAULT_NAMES, choices=ICTC_NAMES,
               help="where the K names come from: auto (frequent when the K heaviest raw labels hold half the items "
               "and none is another's parent, else taxonomy), frequent (the heaviest groups of raw labels), hybrid (the LLM's, "
               "barely supported ones replaced), llm (the paper's step 2b) or taxonomy (the label groups in one "
               "tree cut at K, each concept named at its level: its dominant label, else a short LLM name)"),
        Option("levels", type=int, default=1, check=_levels,
               help="taxonomy depth: 2 or 3 stores coarser levels as linked clusterings"),
        Option("assign", default=DEFAULT_ASSIGN, choices=ICTC_ASSIGN,
               help="how step 3 assigns: label-embed (the raw label's name, else the name nearest the description "
               "by the text model), label (the same with the LLM instead), embed (nearest name by the text model), "
               "clip (the names' CLIP text vectors against the stored image vectors), constrained or generate (an "
               "LLM call per item)"),
        Option("clip_on", help="clip assignment: the image set whose vectors the names are scored against",
               shown_default="the only image set"),
        Option("clip_template", default=CLIP_TEMPLATE, check=lambda t: check_template(str(t), "clip_template"),
               help="clip assignment: the template a name is put in ('<>' = the name)"),
        Option("clip_encoder", type=object, identity=False,
               help="an open ClipEncoder instead of the image set's model"),
        Option("device", default="auto", identity=False,
               help="clip assignment: where CLIP encodes the names: auto, cpu or cuda[:N]"),
        Option("text_model", shown_default="all-MiniLM-L6-v2, offline",
               help="sentence-transformers folder or name for embed and for merging near-duplicate labels"),
        Option("max_labels", type=int, default=200, check=at_least_one,
               help="most frequent raw labels shown to the LLM in step 2b"),
        Option("prompts_dir", flag="prompts",
               help="folder of prompt files overriding steps (step2a.txt, step2b.txt, step3.txt)"),
        Option("extra", help="an extra instruction for naming the clusters"),
        Option("min_count", type=int, check=at_least_one, help="drop raw labels seen fewer times"),
        Option("n_ctx", type=int, identity=False, help="GGUF: context window", shown_default="4096"),
        Option("n_gpu_layers", type=int, identity=False, help="GGUF: layers on the GPU (-1 = all)",
               shown_default="0, CPU only"),
        Option("n_threads", type=int, flag="threads", identity=False, check=at_least_one, help="GGUF: CPU threads",
               shown_default="auto: half the CPU cores"),
        Option("temperature", type=float, check=_not_negative, shown_default="0 (greedy)",
               help="sampling temperature"),
        Option("top_p", type=float, check=_fraction, shown_default="1, no cut",
               help="nucleus sampling mass when temperature > 0 (the paper's GPT runs: 0.9)"),
        Option("model_name", help="server: the model name"),
        Option("concurrency", type=int, identity=False, check=at_least_one,
               help="server: requests in flight; GGUF: greedy answers decoded together (faster for long answers; "
               "a near-tie may then round the other way)",
               shown_default="4 on a server, 1 for a GGUF file"),
        timeout_option("the LLM"),
    )))
