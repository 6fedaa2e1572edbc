"""IC|TC (seed 003): an LLM labels each description for a criterion, names K clusters, assigns every item."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..cache import SetInfo, Workspace
from ..errors import InputError
from ..progress import Reporter
from .inputs import check_k, default_name, keys_digest, parse_k, slugify, split_keys
from .registry import ClusterRequest, MethodOutput, MethodSpec, Option, PreparedInput, register_method

ICTC_ASSIGN = ("generate", "constrained", "embed")
DESCRIPTION_KINDS = ("description", "group-description")


def _description_set(workspace: Workspace, on: str | None, model: str | None) -> SetInfo:
    """The description set IC|TC clusters: ``--on`` (name, kind or id), else the only one stored."""
    if not workspace.exists():
        raise InputError(f"no workspace at {workspace.path}; run 'clipclust describe' first or pass the workspace's path")
    if on is not None:
        info = workspace.resolve_set(on, model=model, keyed_by="item")
        if info.kind not in DESCRIPTION_KINDS:
            raise InputError(f"the ictc method clusters descriptions; '{info.name}' is a {info.kind} set "
                             "(name a description set that 'clipclust info' lists)", option="on")
        return info
    found = [s for s in workspace.list_sets() if s.kind in DESCRIPTION_KINDS and s.keyed_by == "item"
             and (not model or s.model == model or s.model.endswith(model))]
    if not found:
        raise InputError("the ictc method needs descriptions and the workspace holds none; run 'clipclust describe "
                         "IMAGES --criterion C --vlm MODEL' or 'clipclust describe --from FILE' first")
    if len(found) > 1:
        listing = "; ".join(f"{s.id} = {s.name}" for s in found)
        raise InputError(f"{len(found)} description sets are stored ({listing}); name one or give its id",
                         option="on")
    return found[0]


def prepare_ictc(workspace: Workspace, req: ClusterRequest) -> PreparedInput:
    from ..methods.ictc import default_prompts, STEPS
    from ..models.llm import DecodeParams, load_generator

    criterion = req.option("criterion")
    if not criterion or not str(criterion).strip():
        raise InputError("the ictc method needs a criterion (what to cluster by, e.g. mood)", option="criterion")
    k = parse_k(req.k)
    if k is None or k == "auto":
        raise InputError("the ictc method needs the number of clusters the LLM names; 'auto' is not supported",
                         option="k")
    mode = req.option("assign")
    llm, generator = req.option("llm"), req.option("generator")
    if llm is None and generator is None:
        raise InputError("the ictc method needs an LLM (a .gguf file, hf:ORG/NAME or http://HOST:PORT/v1)",
                         option="llm")
    info = _description_set(workspace, req.on, req.model)
    keys, texts = workspace.read_set(info.id)
    keep = split_keys(workspace, info, keys, req.split)
    if req.split is not None:
        keys, texts = [keys[i] for i in keep], texts[keep]
    if not keys:
        raise InputError(f"set '{info.name}' is empty; run 'clipclust describe' first", option="on")
    check_k(int(k), len(keys), info, req.split)
    criterion = str(criterion).strip()
    prompts = default_prompts(criterion, prompt_dir=req.option("prompts_dir"))
    seed = 0 if req.seed is None else req.seed
    backend = {name: req.options.get(name) for name in LLM_BACKEND_OPTIONS if req.options.get(name) is not None}
    params = DecodeParams(temperature=float(backend.pop("temperature", 0.0)), seed=seed)
    if "model_name" in backend:
        backend["model"] = backend.pop("model_name")
    owned = generator is None
    if owned:
        generator = load_generator(llm, seed=seed, **backend)  # type: ignore[arg-type]
    identity = {
        "method": "ictc", "set_id": info.id, "split": req.split or "", "n_items": len(keys),
        "keys_sha256": keys_digest(keys), "texts_sha256": keys_digest([str(t) for t in texts]),
        "criterion": criterion, "k": int(k), "assign": mode, "llm": generator.identity, "params": params.to_dict(),
        "prompts": {step: getattr(prompts, step) for step in STEPS}, "extra": req.option("extra"),
        "min_count": req.option("min_count"),
    }
    return PreparedInput(
        identity, default_name(workspace, f"ictc-{slugify(criterion)}", info), {"input": info}, keys,
        np.asarray(texts, dtype=object),
        {"workspace": workspace, "generator": generator, "criterion": criterion, "k": int(k), "mode": mode,
         "prompts": prompts, "params": params, "seed": seed},
        cleanup=generator.close if owned else None,
    )


def compute_ictc(prepared: PreparedInput, req: ClusterRequest, reporter: Reporter) -> MethodOutput:
    from ..methods.ictc import ngram_embedder, run_ictc
    from ..models.llm import CachedGenerator

    ctx = prepared.context
    cached = CachedGenerator(ctx["generator"], ctx["workspace"])
    result = run_ictc(
        cached, [str(t) for t in prepared.vectors], ctx["criterion"], ctx["k"], mode=ctx["mode"],
        prompts=ctx["prompts"], params=ctx["params"], min_count=req.option("min_count"), extra=req.option("extra"),
        embed=ngram_embedder() if ctx["mode"] == "embed" else None,
    )
    n = len(prepared.keys)
    details = {
        "seed": ctx["seed"], "k": ctx["k"], "criterion": result.criterion, "assign": result.mode,
        "llm": cached.identity, "llm_name": cached.name, "prompts_source": result.prompts_source,
        "extra": result.extra, "decode": result.params.to_dict(), "names": result.names,
        "dictionary": result.dictionary, "kept": result.kept, "min_count": result.min_count,
        "names_outputs": result.names_outputs, "names_attempts": result.names_attempts,
        "names_fallback": result.names_fallback, "n_unmatched": result.n_unmatched,
        "calls": {step: {"hits": c.hits, "misses": c.misses} for step, c in result.stats.items()},
        "calls_total": {"hits": cached.stats.hits, "misses": cached.stats.misses},
    }
    extra: dict[str, Any] = {"answers": [str(a) for a in result.answers],
                             "matched": np.asarray(result.matched, dtype=np.int8)}
    if len(result.raw_labels) == n:
        extra["raw_labels"] = [str(lab) for lab in result.raw_labels]
        extra["raw_outputs"] = [str(o) for o in result.raw_outputs]
    return MethodOutput(keys=prepared.keys, ids=np.asarray(result.cluster_ids, dtype=np.int64),
                        cluster_names=list(result.names), extra=extra, details=details)


def _assign_mode(value: Any) -> str:
    if value not in ICTC_ASSIGN:
        raise ValueError(f"'{value}': expected one of {', '.join(ICTC_ASSIGN)}")
    return str(value)


def _at_least_one(value: Any) -> int:
    if int(value) < 1:
        raise ValueError(f"{value}: expected 1 or more")
    return int(value)


# Options of the LLM backend (llama.cpp, servers); they change how answers are computed, not which.
LLM_BACKEND_OPTIONS = ("n_ctx", "n_gpu_layers", "n_threads", "temperature", "model_name", "concurrency")

register_method(MethodSpec(
    "ictc", "IC|TC: an LLM labels each description for a criterion, names K clusters and assigns every item "
    "(assign generate|constrained|embed)", prepare_ictc, compute_ictc,
    options=(
        Option("criterion", help="what to cluster by, e.g. mood"),
        Option("llm", help="a .gguf file, hf:ORG/NAME or a folder, or http://HOST:PORT/v1"),
        Option("generator", help="an open TextGenerator (library use) instead of llm", identity=False),
        Option("assign", "generate", "how step 3 assigns: generate, constrained or embed", check=_assign_mode),
        Option("prompts_dir", help="folder of prompt files overriding steps"),
        Option("extra", help="an extra instruction for naming the clusters"),
        Option("min_count", help="drop raw labels seen fewer times", check=_at_least_one),
        Option("n_ctx", help="GGUF: context window", identity=False),
        Option("n_gpu_layers", help="GGUF: layers on the GPU (-1 = all)", identity=False),
        Option("n_threads", help="GGUF: CPU threads", identity=False),
        Option("temperature", help="0 = greedy (default)"),
        Option("model_name", help="server: the model name"),
        Option("concurrency", help="server: requests in flight", identity=False),
    )))

