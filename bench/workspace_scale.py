"""Workspace cost per operation as it grows: 10k, 100k, 1M items (synthetic items, vectors and answers).

No model: a fake encoder returns fixed random unit vectors, so what is measured is the store alone.  Each
(size, case) runs in a fresh child process (a cold index, a true peak RSS).  Per-op costs are printed
with their growth against the smallest size; the `plain` column is the floor each case cannot beat,
measured in the same child: one os.stat per file for a cached embed re-run, one h5py pass over the
stored vectors for adding a prompt.

    python bench/workspace_scale.py                               # 10k and 100k, every case
    python bench/workspace_scale.py --sizes 10000 100000 1000000 --cases calls info reuse
    python bench/workspace_scale.py --sizes 1000000 --cases embed --dim 512   # needs 1M files on disk

Cases: calls (put + get of one answer per call, as describe and ictc do), embed (a cached re-run of N
unchanged files), prompt (adding a prompt to N cached items), info, reuse (a clustering reuse check:
Workspace.set_digest), size (file bytes per item one template adds, fused sets stored or computed on
read; not in the default cases: `--sizes 2000 --cases size --dim 512`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

def _image_set():
    from clipclust.store import SetSpec

    return SetSpec.for_model(model="bench:fake", kind="image", prompt="", name="image")


IMAGE_SET = _image_set()  # the id embed derives for the fake encoder's image set


def sha(i: int) -> str:
    return hashlib.sha256(f"item {i}".encode()).hexdigest()


class FakeEncoder:
    """What embed needs from an encoder; texts map to fixed random unit vectors."""

    identity = "bench:fake"
    precision = "fp32"
    device = "cpu"
    describe = "fake"
    input_size = 8

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def encode_texts(self, texts, batch_size: int = 256) -> np.ndarray:
        rng = np.random.default_rng(len(texts))
        v = rng.normal(size=(len(texts), self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill(ws_path: Path, n: int, dim: int, files: Path | None) -> None:
    """N items with vectors (and N files of distinct content when ``files`` is given), 10k per batch."""
    from clipclust.store import ItemRecord, Workspace

    ws = Workspace(ws_path)
    rng = np.random.default_rng(0)
    step = 10000
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        records = []
        for i in range(lo, hi):
            if files is not None:
                path = files / f"{i // 1000:04d}" / f"{i}.png"
                path.parent.mkdir(exist_ok=True)
                data = f"item {i}".encode()
                path.write_bytes(data)
                st = path.stat()
                records.append(ItemRecord(hashlib.sha256(data).hexdigest(), str(path.resolve()), "", "", 8, 8,
                                          st.st_size, st.st_mtime_ns))
            else:
                records.append(ItemRecord(sha(i), f"/data/{i // 1000:04d}/{i}.png", "", "", 8, 8, 9, 0))
        vecs = rng.normal(size=(hi - lo, dim)).astype(np.float32)
        ws.write_batch(items=records, rows=[(IMAGE_SET, [r.sha256 for r in records], vecs)])


def fill_calls(ws_path: Path, n: int) -> None:
    from clipclust.store import Workspace

    ws = Workspace(ws_path)
    for lo in range(0, n, 50000):
        ws.put_many({sha(-1 - i): f"answer number {i}, a short description" for i in range(lo, min(n, lo + 50000))})


def case_calls(ws_path: Path, n: int, ops: int = 300) -> dict:
    from clipclust.store import Workspace

    ws = Workspace(ws_path)
    t0 = time.perf_counter()
    ws.get_many([sha(-1)])  # the first lookup builds this process's index
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(ops):
        key = sha(10**9 + i)
        ws.put_many({key: f"new answer {i}"})
        assert ws.get_many([key])[key] == f"new answer {i}"
    per = (time.perf_counter() - t0) / ops
    return {"per_op_ms": per * 1000, "first_ms": first * 1000, "bytes_per_answer": os.path.getsize(ws_path) / n}


def case_embed(ws_path: Path, n: int, files: Path) -> dict:
    from clipclust.commands.embed import EmbedOptions, embed
    from clipclust.store import Workspace

    t0 = time.perf_counter()
    count = 0
    for dirpath, _, names in os.walk(files):
        for name in names:
            os.stat(os.path.join(dirpath, name))
            count += 1
    plain = time.perf_counter() - t0
    encoder = FakeEncoder(0)
    t0 = time.perf_counter()
    summary = embed(Workspace(ws_path), [str(files)], EmbedOptions(model="ViT-B-32/openai", folder_labels=False),
                    encoder=encoder)  # type: ignore[arg-type]
    took = time.perf_counter() - t0
    assert summary.cached == n and summary.new == 0, summary.to_dict()
    return {"seconds": took, "plain_s": plain, "ratio": took / plain}


def case_prompt(ws_path: Path, n: int, dim: int) -> dict:
    """The derived rows of a new prompt for N cached items (what embed's derive_from_store does)."""
    import h5py

    from clipclust.commands.embed import EmbedOptions
    from clipclust.commands.embed.derive import derive_from_store
    from clipclust.commands.embed.plan import plan_sets, wanted_texts
    from clipclust.store import Workspace

    t0 = time.perf_counter()
    with h5py.File(ws_path, "r") as f:
        ds = f[f"sets/{IMAGE_SET.id}/data"]
        for lo in range(0, ds.shape[0], 65536):
            ds[lo : lo + 65536].sum()
    plain = time.perf_counter() - t0
    ws = Workspace(ws_path)
    shas = [sha(i) for i in range(n)]
    classes = [f"class {c}" for c in range(10)]
    enc = FakeEncoder(dim)
    t0 = time.perf_counter()
    opts = EmbedOptions(model="bench:fake", prompts=["a photo of <>"], classes=classes, fuse=())
    plan = plan_sets("bench:fake", opts, wanted_texts(opts, {}), {})  # no labels: no item has a class
    (text,) = plan.texts
    text.vectors = enc.encode_texts(text.texts)
    wanted = {d.id: set(shas) for d in text.derived}
    rows = derive_from_store(ws, plan, shas, wanted)
    took = time.perf_counter() - t0
    assert rows == n
    return {"seconds": took, "plain_s": plain, "ratio": took / plain}


def case_size(ws_path: Path, n: int, dim: int) -> dict:
    """File bytes per item that one template adds: default --fuse with 10 classes, --fuse all with 100,
    fused sets stored (--store-fused) or computed on read (the default)."""
    import shutil

    from clipclust.commands.embed import EmbedOptions
    from clipclust.commands.embed.derive import derive_from_store, plan_fused_storage
    from clipclust.commands.embed.plan import plan_sets, wanted_texts
    from clipclust.store import Workspace

    t0 = time.perf_counter()
    shas = [sha(i) for i in range(n)]
    out = {"image_only_b": os.path.getsize(ws_path) / n}
    for fuse, n_classes in ((("label", "zeroshot"), 10), (("all",), 100)):
        classes = [f"class {c}" for c in range(n_classes)]
        for store_fused in (True, False):
            copy = ws_path.with_name("size.h5")
            shutil.copyfile(ws_path, copy)
            ws = Workspace(copy)
            opts = EmbedOptions(model="bench:fake", prompts=["a photo of <>"], classes=classes, fuse=fuse)
            plan = plan_sets("bench:fake", opts, wanted_texts(opts, {}), {})
            plan.item_class = lambda s, classes=classes: classes[int(s[:8], 16) % len(classes)]
            (text,) = plan.texts
            text.vectors = FakeEncoder(dim).encode_texts(text.texts)
            ws.write_batch(rows=[(text.spec, classes, text.vectors)])
            plan_fused_storage(ws, text, IMAGE_SET.id, store_fused)
            wanted = {d.id: set(shas) for d in text.derived}
            derive_from_store(ws, plan, shas, wanted)
            label = f"{'+'.join(fuse)}{n_classes}_{'stored' if store_fused else 'derived'}_b"
            out[label] = (os.path.getsize(copy) - os.path.getsize(ws_path)) / n
            copy.unlink()
    out["seconds"] = time.perf_counter() - t0
    return out


def case_info(ws_path: Path, n: int) -> dict:
    from clipclust.commands.info import info
    from clipclust.store import ItemRecord, Workspace

    # a workspace filled by an older clipclust gets its kept counts at its first item write
    Workspace(ws_path).upsert_items([ItemRecord(sha(0), "/data/0000/0.png", "", "", 8, 8, 9, 0)])
    t0 = time.perf_counter()
    assert info(Workspace(ws_path)).items == n
    return {"seconds": time.perf_counter() - t0}


def case_reuse(ws_path: Path, n: int) -> dict:
    from clipclust.store import Workspace

    ws = Workspace(ws_path)
    t0 = time.perf_counter()
    for _ in range(20):
        ws.set_digest(IMAGE_SET.id)
    return {"per_op_ms": (time.perf_counter() - t0) / 20 * 1000}


def child(args: argparse.Namespace) -> None:
    root = Path(args.root)
    kind = {"calls": "calls", "embed": "files"}.get(args.case, "items")
    ws_path = root / f"{kind}-{args.size}.h5"
    files = root / f"files-{args.size}" if args.case == "embed" else None
    if files is not None:
        files.mkdir(exist_ok=True)
    if not ws_path.exists():
        (fill_calls if args.case == "calls" else lambda p, n: fill(p, n, args.dim, files))(ws_path, args.size)
    if args.case == "prompt":  # it adds sets: work on a copy
        import shutil

        shutil.copyfile(ws_path, root / "prompt.h5")
        ws_path = root / "prompt.h5"
    result = {"calls": lambda: case_calls(ws_path, args.size),
              "embed": lambda: case_embed(ws_path, args.size, files),  # type: ignore[arg-type]
              "prompt": lambda: case_prompt(ws_path, args.size, args.dim),
              "info": lambda: case_info(ws_path, args.size),
              "size": lambda: case_size(ws_path, args.size, args.dim),
              "reuse": lambda: case_reuse(ws_path, args.size)}[args.case]()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["file_mb"] = os.path.getsize(ws_path) / 2**20
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--cases", nargs="+", default=["calls", "embed", "prompt", "info", "reuse"])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--root", help="where workspaces and files go (kept between runs when given)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    root = args.root or tempfile.mkdtemp(prefix="clipclust-scale-")
    Path(root).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for case in args.cases:
        base = None
        for size in args.sizes:
            out = subprocess.run([sys.executable, __file__, "--child", "--case", case, "--size", str(size), "--root",
                                  root, "--dim", str(args.dim)], env=env, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{case:7s} n={size:>8,}: FAILED {out.stderr.strip().splitlines()[-1:]}")
                continue
            res = json.loads(out.stdout.strip().splitlines()[-1])
            key = "per_op_ms" if "per_op_ms" in res else "seconds"
            base = base or res[key]
            extra = "  ".join(f"{k}={v:.3g}" for k, v in res.items() if k != key)
            print(f"{case:7s} n={size:>8,}: {key}={res[key]:.4g}  growth x{res[key] / base:.2f} vs n={args.sizes[0]:,}  "
                  f"{extra}", flush=True)
    if not args.root:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
