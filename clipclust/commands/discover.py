"""The discover use case: propose criteria for a description set, store them, reuse them.

The result is kept in the workspace memo under a key derived from everything it depends on (the set's
keys and texts, the numbers asked, the seed, the LLM's and the text model's identities, the prompt), so
the same request again returns the stored result without opening any model; every LLM answer is in the
call cache as well, so a changed request recomputes only what changed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from clipclust.core.progress import Reporter, SilentReporter
from clipclust.errors import InputError
from clipclust.methods.inputs import description_set, keys_digest, split_keys
from clipclust.store import Workspace

MEMO_PREFIX = "discover:"
FORMAT = 4
"""Bumped when the proposal or the checks change what a request returns: old results are not reused."""

BACKEND_OPTIONS = ("n_ctx", "n_gpu_layers", "n_threads", "model_name", "concurrency", "timeout")
"""How the LLM runs, not what it answers: outside the request's identity."""


@dataclass
class DiscoverReport:
    """Criteria proposed for a description set, best first, with what was dropped and why."""

    on: str
    set_id: str
    n_items: int
    n: int
    sample: int
    batch: int
    label_sample: int
    seed: int
    llm: str
    llm_name: str
    criteria: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    n_batches: int
    n_candidates: int
    warnings: list[str]
    key: str
    calls: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    reused: bool = False
    model_loaded: bool = False
    answers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_positive(value: int, name: str, what: str, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InputError(f"{what} must be a whole number of at least {least}, got {value!r}", option=name)
    return value


def discover(workspace: Workspace, *, on: str | None = None, llm: str | None = None, generator: Any = None,
             n: int = 5, sample: int = 48, batch: int = 8, label_sample: int = 24, check: int | None = None,
             seed: int = 0, split: str | None = None, model: str | None = None, text_model: str | None = None,
             text_encoder: Any = None, force: bool = False, reporter: Reporter | None = None,
             **backend: Any) -> DiscoverReport:
    """Propose ``n`` criteria for the description set ``on`` with the LLM ``llm`` (a .gguf file, hf:ORG/NAME,
    http://HOST:PORT/v1) or an open ``generator``; see :func:`clipclust.methods.discover.run_discover`."""
    reporter = reporter or SilentReporter()
    _check_positive(n, "n", "the number of criteria")
    _check_positive(sample, "sample", "the sample", 2)
    _check_positive(batch, "batch", "the batch size")
    _check_positive(label_sample, "label_sample", "the label sample", 2)
    unknown = sorted(set(backend) - set(BACKEND_OPTIONS))
    if unknown:
        raise InputError(f"unknown option {unknown[0]!r}; the LLM options are {', '.join(BACKEND_OPTIONS)}")
    if llm is None and generator is None:
        raise InputError("discovering criteria needs an LLM (a .gguf file, hf:ORG/NAME or http://HOST:PORT/v1)",
                         option="llm")
    info = description_set(workspace, on, model, reader="discovering criteria", missing_option="on")
    keys, texts = workspace.read_set(info.id)
    if split is not None:
        keep = split_keys(workspace, info, keys, split)
        keys, texts = [keys[i] for i in keep], texts[keep]
    texts = [str(t) for t in texts]
    if len(keys) < 2:
        raise InputError(f"set '{info.name}' holds {len(keys)} descriptions; criteria need at least 2", option="on")
    if text_encoder is None:
        from clipclust.models.text_encoder import TextEncoder  # the identity now, the weights on the first call

        text_encoder = TextEncoder(text_model)
    owned = generator is None
    if owned:
        from clipclust.models.llm import load_generator

        options = {k: v for k, v in backend.items() if v is not None}
        if "model_name" in options:
            options["model"] = options.pop("model_name")
        generator = load_generator(llm, lazy=True, seed=seed, **options)  # type: ignore[arg-type]
    try:
        return _discover(workspace, info, keys, texts, generator, text_encoder, n=n, sample=sample, batch=batch,
                         label_sample=label_sample, check=check, seed=seed, split=split, force=force,
                         reporter=reporter)
    finally:
        if owned:
            generator.close()


def _discover(workspace: Workspace, info: Any, keys: list[str], texts: list[str], generator: Any, text_encoder: Any,
              *, n: int, sample: int, batch: int, label_sample: int, check: int | None, seed: int, split: str | None,
              force: bool, reporter: Reporter) -> DiscoverReport:
    from clipclust.methods.discover import COMMON_CRITERIA, EXAMPLE_ANSWER, run_discover
    from clipclust.methods.discover.prompts import PROPOSE_SYSTEM

    identity = {"format": FORMAT, "set_id": info.id, "split": split or "", "keys_sha256": keys_digest(keys),
                "texts_sha256": keys_digest(texts), "n": n, "sample": sample, "batch": batch,
                "label_sample": label_sample, "check": check, "seed": seed, "llm": generator.identity,
                "text_model": getattr(text_encoder, "identity", repr(text_encoder)),
                "prompt": [PROPOSE_SYSTEM, list(EXAMPLE_ANSWER), list(COMMON_CRITERIA)]}
    key = MEMO_PREFIX + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    stored = None if force else workspace.memo_get(key)
    if stored is not None:
        report = DiscoverReport(**stored)
        report.reused, report.model_loaded, report.calls = True, False, {}
        return report
    from clipclust.models.llm import CachedGenerator, tell_slow

    tell_slow(generator, reporter.warn)
    cached = CachedGenerator(generator, workspace)
    started = time.perf_counter()
    with reporter.task("proposing criteria", None) as advance:
        result = run_discover(cached, texts, n, sample=sample, batch=batch, label_sample=label_sample, check=check,
                              seed=seed, embed=text_encoder, progress=lambda stage, done, total: advance(1))
    for warning in result.warnings:
        reporter.warn(warning)
    report = DiscoverReport(
        on=info.name, set_id=info.id, n_items=len(keys), n=n, sample=result.n_sampled, batch=batch,
        label_sample=result.n_label_sample, seed=seed, llm=cached.identity, llm_name=str(cached.name),
        criteria=[c.to_dict() for c in result.criteria], dropped=result.dropped, n_batches=result.n_batches,
        n_candidates=result.n_candidates, warnings=result.warnings, key=key, calls=result.calls,
        seconds=round(time.perf_counter() - started, 3), answers=result.answers,
        model_loaded=bool(getattr(generator, "loaded", True)))
    workspace.memo_put(key, {k: v for k, v in report.to_dict().items() if k not in ("reused", "model_loaded")})
    return report
