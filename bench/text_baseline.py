"""The no-LLM baseline of the quality benches: the text route (``clipclust cluster --method text``) on a labelled
description file, scored against its labels.

:func:`text_baseline` imports the descriptions into a temporary workspace through clipclust's API, runs the
real method (the packaged all-MiniLM-L6-v2 unless another text model is named, k-means, ``k`` or ``"auto"``),
and returns ACC / NMI / ARI (:func:`clipclust.core.metrics.clustering_report`).  ``label_map`` (fine label ->
coarse label, ``"*"`` for every other label) scores a coarse K against coarse labels: the CIFAR-10 animal vs
vehicle split is ``airplane=vehicle,automobile=vehicle,ship=vehicle,truck=vehicle,*=animal``.  The criterion is
passed as the method receives it: an instruction-aware text model is told it, a plain one (MiniLM) is not, and
the row says which.  The quality benches (esmc_quality.py, ictc_quality.py) print :func:`baseline_row` beside
their own rows in the same run.

    python bench/text_baseline.py -k 10                      # the CIFAR-10 dev descriptions, K = 10
    python bench/text_baseline.py -k 2 --criterion "animal or vehicle" \\
        --label-map airplane=vehicle,automobile=vehicle,ship=vehicle,truck=vehicle,*=animal
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the dev descriptions beside the checkout (a worktree sits one level deeper than the main checkout)
DEV = next((p / "shared" / "data" / "ictc" / "cifar10-llava-200.jsonl" for p in ROOT.parents
            if (p / "shared" / "data" / "ictc" / "cifar10-llava-200.jsonl").is_file()),
           ROOT.parent / "shared" / "data" / "ictc" / "cifar10-llava-200.jsonl")
CIFAR10_VEHICLES = "airplane=vehicle,automobile=vehicle,ship=vehicle,truck=vehicle,*=animal"


def parse_label_map(text: str | None) -> dict[str, str] | None:
    """``fine=coarse,...`` (``*=coarse`` for every other label) or a JSON file of the same mapping."""
    if not text:
        return None
    if Path(text).is_file():
        return {str(k): str(v) for k, v in json.loads(Path(text).read_text()).items()}
    pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"{text!r}: expected fine=coarse,... (or a JSON file)")
    return {fine.strip(): coarse.strip() for fine, coarse in pairs}


def _mapped(label: str, label_map: Mapping[str, str] | None) -> str:
    if label_map is None:
        return label
    if label in label_map:
        return label_map[label]
    if "*" in label_map:
        return label_map["*"]
    raise ValueError(f"label {label!r} is not in the label map (add it, or a '*' default)")


def text_baseline(descriptions: str | Path, k: int | str, *, label_map: Mapping[str, str] | None = None,
                  criterion: str | None = None, text_model: str | None = None, text_field: str = "text",
                  label_field: str = "label", seed: int = 0, workspace: str | Path | None = None) -> dict[str, Any]:
    """ACC / NMI / ARI of the text route on ``descriptions`` (JSONL/CSV with ``text_field`` and ``label_field``)
    at ``k`` clusters (or ``"auto"``), the labels mapped through ``label_map`` first when given.

    The workspace is temporary unless ``workspace`` names one (a second call on it then loads no model).
    """
    import clipclust as cc
    from clipclust.core.metrics import clustering_report

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="text-baseline-") as tmp:
        ws = cc.Workspace(workspace or Path(tmp) / "text.h5")
        cc.import_descriptions(ws, descriptions, text_field=text_field, label_field=label_field)
        summary = cc.cluster(ws, method="text", k=k, criterion=criterion, text_model=text_model, seed=seed,
                             name="text-baseline", force=True)
        stored = ws.read_clustering(summary.name)
        items = ws.items()
        label_of = dict(zip(items.sha256, items.label))
        truth = [_mapped(str(label_of[key]), label_map) for key in stored["keys"]]
        report = clustering_report(truth, list(stored["ids"]))
    params = summary.params
    return {
        "k": summary.k, "k_asked": k, "n_items": summary.n_items, "n_classes": report["n_classes"],
        "acc": report["acc"], "nmi": report["nmi"], "ari": report["ari"], "text_model": params["text_model_name"],
        "criterion": criterion, "criterion_used": params["criterion_used"], "prompt": params["prompt"],
        "k_table": summary.k_table, "seconds": time.perf_counter() - began,
    }


def baseline_row(result: Mapping[str, Any], width: int = 22) -> str:
    """One printed row, in the benches' ACC / NMI / ARI format."""
    k = f"K={result['k']}" + (" (auto)" if result["k_asked"] == "auto" else "")
    criterion = ""
    if result["criterion"]:
        criterion = "  criterion " + ("as instruction" if result["criterion_used"] else "not used by the model")
    return (f"{'text route (no LLM)':{width}s} ACC {result['acc']:.3f}  NMI {result['nmi']:.3f}  ARI "
            f"{result['ari']:.3f}  {k}, {result['n_items']} items, {result['n_classes']} classes, "
            f"{result['text_model']} + k-means{criterion}  {result['seconds']:.1f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--descriptions", default=str(DEV), help="labelled JSONL/CSV (default: the CIFAR-10 dev set)")
    ap.add_argument("-k", default="auto", help="number of clusters, or auto (silhouette over 2..10)")
    ap.add_argument("--label-map", default=None, help="fine=coarse,... with *=coarse for the rest, or a JSON file; "
                    f"'cifar10-vehicles' = {CIFAR10_VEHICLES}")
    ap.add_argument("--criterion", default=None, help="given to an instruction-aware text model")
    ap.add_argument("--text-model", default=None, help="sentence-transformers folder (default all-MiniLM-L6-v2)")
    ap.add_argument("--text-field", default="text")
    ap.add_argument("--label-field", default="label")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    label_map = parse_label_map(CIFAR10_VEHICLES if args.label_map == "cifar10-vehicles" else args.label_map)
    k: int | str = "auto" if args.k == "auto" else int(args.k)
    result = text_baseline(args.descriptions, k, label_map=label_map, criterion=args.criterion,
                           text_model=args.text_model, text_field=args.text_field, label_field=args.label_field,
                           seed=args.seed)
    print(baseline_row(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
