"""Criteria discovery on a labelled description set: what `clipclust discover` proposes, whether the labelled
criterion is among the top 3, the group estimate against the true number of labels, and seconds per item.

The descriptions are imported into a workspace (``--workspace``, default under /tmp, so a re-run is served
from its call cache), discover runs through the real use case with the GGUF model, and each model call is
timed where it is computed (a cached call costs nothing). A proposed criterion "is" the labelled one when
its all-MiniLM-L6-v2 cosine similarity to ``--criterion`` (the word that names the labels, e.g. object) is
at least ``--match`` (0.6: "main object"/"object" and "type of object"/"object" pass; "animal",
"colour", "setting" do not).

    python bench/discover_quality.py --model /tmp/qwen.gguf --threads 2 --criterion object \\
        --descriptions /work/shared/data/ictc/cifar10-llava-200.jsonl --sample 24 --label-sample 16
    python bench/discover_quality.py --criterion mood --descriptions bench/sets/moods-24.jsonl --label-sample 12 -n 3
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROPOSAL_MARK = "sort photo collections"


class Timed:
    """A text generator that adds the seconds of each computed call to its step: propose or labels."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.identity, self.name = inner.identity, inner.name
        self.default_params, self.max_concurrency = inner.default_params, inner.max_concurrency
        self.seconds = {"propose": 0.0, "labels": 0.0}
        self.calls = {"propose": 0, "labels": 0}

    @property
    def loaded(self) -> bool:
        return bool(getattr(self.inner, "loaded", True))

    def _step(self, request: Any) -> str:
        return "propose" if PROPOSAL_MARK in request.messages[0]["content"] else "labels"

    def generate(self, requests: Sequence[Any], params: Any = None) -> list[str]:
        return [text for _, text in sorted(self.generate_iter(requests, params))]

    def generate_iter(self, requests: Sequence[Any], params: Any = None):
        steps = [self._step(r) for r in requests]
        started = time.perf_counter()
        for i, text in self.inner.generate_iter(requests, params):
            now = time.perf_counter()
            # calls of one chunk decode together: each answer is charged the time since the previous one
            self.seconds[steps[i]] += now - started
            self.calls[steps[i]] += 1
            started = now
            yield i, text

    def close(self) -> None:
        self.inner.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--descriptions", default="/work/shared/data/ictc/cifar10-llava-200.jsonl")
    parser.add_argument("--model", default="/tmp/qwen.gguf", help="a .gguf file")
    parser.add_argument("--criterion", default="object", help="the word that names the labelled criterion")
    parser.add_argument("--label-field", default="label")
    parser.add_argument("-n", type=int, default=5)
    parser.add_argument("--sample", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--label-sample", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--match", type=float, default=0.6, help="MiniLM cosine from which a criterion matches")
    parser.add_argument("--workspace", default=None, help="default /tmp/discover-bench-STEM.h5")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import numpy as np

    from clipclust.commands.describe import import_into_workspace
    from clipclust.commands.discover import discover
    from clipclust.models.llm import load_generator
    from clipclust.models.text_encoder import TextEncoder
    from clipclust.store import Workspace

    src = Path(args.descriptions)
    labels = [json.loads(line).get(args.label_field) for line in src.read_text().splitlines() if line.strip()]
    n_true = len({lab for lab in labels if lab is not None})
    ws = Workspace(args.workspace or f"/tmp/discover-bench-{src.stem}.h5")
    if not ws.exists():
        import_into_workspace(ws, str(src), label_field=args.label_field)
    options = {"n_threads": args.threads, "n_ctx": 4096, "seed": args.seed}
    if args.concurrency is not None:
        options["concurrency"] = args.concurrency
    generator = Timed(load_generator(args.model, lazy=True, **options))
    encoder = TextEncoder()
    started = time.perf_counter()
    report = discover(ws, generator=generator, n=args.n, sample=args.sample, batch=args.batch,
                      label_sample=args.label_sample, seed=args.seed, text_encoder=encoder)
    wall = time.perf_counter() - started
    names = [c["criterion"] for c in report.criteria]
    sims = list(np.ravel(encoder(names) @ encoder([args.criterion])[0])) if names else []
    matched = [i for i, s in enumerate(sims[:3]) if s >= args.match]
    found = report.criteria[matched[0]] if matched else None
    label_items = generator.calls["labels"]
    result = {
        "descriptions": str(src), "items": report.n_items, "true_labels": n_true, "criterion": args.criterion,
        "model": report.llm_name, "sample": report.sample, "batches": report.n_batches,
        "label_sample": report.label_sample, "proposed": report.n_candidates,
        "criteria": [{**{k: c[k] for k in ("criterion", "explanation", "groups", "batches")},
                      "values": [f"{v['value']} {v['count']}" for v in c["values"]], "similarity": round(s, 3)}
                     for c, s in zip(report.criteria, sims)],
        "dropped": report.dropped, "warnings": report.warnings,
        "in_top3": bool(matched), "rank": (matched[0] + 1) if matched else None,
        "groups_estimate": found["groups"] if found else None,
        "groups_error": (found["groups"] - n_true) / n_true if found else None,
        "seconds": round(wall, 1), "reused": report.reused,
        "seconds_per_item": {
            "propose": round(generator.seconds["propose"] / max(report.sample, 1), 3),
            "labels": round(generator.seconds["labels"] / max(label_items, 1), 3)},
        "calls": {**generator.calls, **{"cache_" + k: v for k, v in report.calls.items()}},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{src.name}: {report.n_items} items, {n_true} labels; {report.llm_name}; sample {report.sample} in "
          f"{report.n_batches} batches, {report.label_sample} labelled per criterion; {report.n_candidates} proposed")
    for i, c in enumerate(result["criteria"], start=1):
        print(f"  {i}. {c['criterion']:<18} sim {c['similarity']:.2f}  groups {c['groups']:>3}  batches "
              f"{c['batches']}/{report.n_batches}  {c['explanation'][:50]!r}  values: {', '.join(c['values'][:6])}")
    for d in report.dropped:
        print(f"  dropped {d['criterion']}: {d['reason']}")
    for w in report.warnings:
        print(f"  warning: {w}")
    where = f"rank {result['rank']}" if matched else "not in the top 3"
    estimate = (f"groups estimate {found['groups']} vs {n_true} true ({result['groups_error']:+.0%})" if found
                else "no estimate")
    print(f"'{args.criterion}': {where} (MiniLM similarity >= {args.match}); {estimate}")
    print(f"seconds per item: propose {result['seconds_per_item']['propose']} (per sampled description), labels "
          f"{result['seconds_per_item']['labels']} (per labelled description and criterion); {wall:.0f}s in all; "
          f"calls computed: {generator.calls}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
