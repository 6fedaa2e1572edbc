"""Fine-tuning speed and the digits before/after table.

Speed: images per second per training step of `clipclust finetune` (LatteCLIP with class texts, LatteCLIP
with image + group descriptions, FLYP) against a plain open_clip contrastive step on the same batches
(image encoder + one text per image, CLIP loss, AdamW), measured in the same process; the claim is the
ratio.  Images are sklearn digits PNGs; the model is the tests' tiny open_clip or a real-size
architecture with random weights (no downloads).

Quality (--quality): the tests' digits check with more seeds: a tiny CLIP pretrained on half of the
digits, then zero-shot, LatteCLIP and FLYP accuracy on the other half.

    python bench/finetune_speed.py                                   # tiny model, CPU
    python bench/finetune_speed.py --arch ViT-B-32 --batch-size 512 --device cuda --precision fp16
    python bench/finetune_speed.py --quality --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _workspace(path: Path, folder: Path):
    from clipclust.store import ItemRecord, Workspace

    ws = Workspace(path)
    files = sorted(folder.glob("*/*.png"))
    ws.upsert_items([ItemRecord(hashlib.sha256(f.read_bytes()).hexdigest(), str(f)) for f in files])
    return ws, files


def _model_dir(root: Path, arch: str) -> Path:
    from tests.conftest import build_tiny_open_clip

    if arch == "tiny":
        return build_tiny_open_clip(root / "tiny")
    import open_clip
    import torch

    folder = root / arch
    folder.mkdir()
    model = open_clip.create_model(arch)
    config = {"model_cfg": open_clip.get_model_config(arch),
              "preprocess_cfg": {k: list(v) if isinstance(v, tuple) else v
                                 for k, v in open_clip.get_model_preprocess_cfg(model).items()}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def _plain_rate(model_dir: Path, files: list[Path], batch: int, steps: int, device: str, precision: str) -> float:
    """A bare open_clip training step on preprocessed batches (no data loading), images per second."""
    import open_clip
    import torch
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    model.to(device).train()
    pixels = torch.stack([preprocess(Image.open(f).convert("RGB")) for f in files[:batch]]).to(device)
    tokens = tokenizer([f"a photo of a {i % 10}." for i in range(batch)]).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-7, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    loss_fn = open_clip.ClipLoss()
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            img = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
            txt = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
            loss = loss_fn(img, txt, model.logit_scale.exp())
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:  # the first step pays for allocation and kernel choice
            times.append(time.perf_counter() - start)
    return batch / float(np.median(times))


def speed(args: argparse.Namespace) -> None:
    from clipclust.store import SetSpec
    from clipclust.commands.finetune import FinetuneOptions, finetune
    from tests.conftest import write_digits

    root = Path(tempfile.mkdtemp(prefix="ft-speed-"))
    n = args.batch_size * (args.steps + 1)
    folder = write_digits(root / "digits", min(n, 1797))
    ws, files = _workspace(root / "ws.h5", folder)
    keys = list(ws.items().sha256)
    for kind, text, per in (("description", "a handwritten digit, number {} of the set, drawn in grey strokes", 1),
                            ("group-description", "grey handwritten digits of group {}, thick strokes", 4)):
        spec = SetSpec.of(("bench", kind), name=f"{kind}:digit", kind=kind, model="bench", dtype="str")
        ws.write_batch(rows=[(spec, keys, [text.format(i // per) for i in range(len(keys))])])  # all distinct texts
    model_dir = _model_dir(root, args.arch)
    print(f"model: {args.arch}, batch {args.batch_size}, {args.steps} timed steps, device {args.device} "
          f"{args.precision}, {len(files)} images, torch threads {args.threads}")
    rates = {}
    for name, method, own in (("plain open_clip step", None, {}), ("latteclip (class texts)", "latteclip", {"texts": "class"}),
                              ("latteclip (class+image+group)", "latteclip", {"texts": "class,image,group"}),
                              ("flyp", "flyp", {})):
        if method is None:
            rates[name] = _plain_rate(model_dir, files, args.batch_size, args.steps, args.device, args.precision)
        else:
            seen: list[float] = []
            opts = FinetuneOptions(method=method, classes=[str(d) for d in range(10)], model=str(model_dir),
                                   epochs=1, steps=args.steps + 1, lr=1e-7, batch_size=args.batch_size,
                                   device=args.device, precision=args.precision, workers=args.workers, options=own)
            finetune(ws, root / f"out-{len(rates)}", opts, on_step=lambda s: seen.append(s.images_per_second))
            rates[name] = float(np.median(seen[1:]))
        print(f"{name:32s} {rates[name]:10.1f} images/s   ratio to plain {rates[name] / rates['plain open_clip step']:.2f}")


def quality(args: argparse.Namespace) -> None:
    from clipclust.store import SetSpec
    from clipclust.commands.finetune import FinetuneOptions, finetune
    from tests.digits_clip import (CLASSES, TEMPLATE, build_digits_clip, read_prototypes, vlm_like_descriptions,
                                   zero_shot_accuracy)

    root = Path(tempfile.mkdtemp(prefix="ft-quality-"))
    clip = build_digits_clip(root / "clip")
    base = zero_shot_accuracy(clip.model_dir, clip.test_dir)
    ws, _ = _workspace(root / "ws.h5", clip.test_dir)
    print(f"digits, other half ({len(list(clip.test_dir.glob('*/*.png')))} images): zero-shot accuracy {base:.3f}")
    print("LatteCLIP+desc: with VLM-like image and group descriptions (70% / 50% name the right digit)")
    print(f"{'seed':>4} {'zero-shot':>10} {'LatteCLIP':>10} {'+desc':>10} {'FLYP':>10}")
    rows = []
    for seed in args.seeds:
        described = root / f"described-{seed}.h5"
        ws_desc, _ = _workspace(described, clip.test_dir)
        for kind, texts in vlm_like_descriptions(clip.test_dir, seed).items():
            spec = SetSpec.of(("bench-vlm", kind), name=f"{kind}:digit", kind=kind, model="bench-vlm", dtype="str")
            ws_desc.write_batch(rows=[(spec, list(texts), list(texts.values()))])
        accs = []
        for name, method, own, space in (("latteclip", "latteclip", {"texts": "class"}, ws),
                                         ("described", "latteclip", {"texts": "class,image,group"}, ws_desc),
                                         ("flyp", "flyp", {}, ws)):
            out = root / f"{name}-{seed}"
            finetune(space, out, FinetuneOptions(method=method, classes=CLASSES, model=str(clip.model_dir),
                                                 class_template=TEMPLATE, templates=[TEMPLATE], epochs=2, steps=None,
                                                 lr=1e-4, batch_size=64, seed=seed, device="cpu", workers=0,
                                                 options=own))
            accs.append(zero_shot_accuracy(out, clip.test_dir, classifier=read_prototypes(out)))
        rows.append([base, *accs])
        print(f"{seed:>4} " + " ".join(f"{a:>10.3f}" for a in rows[-1]))
    print(f"{'mean':>4} " + " ".join(f"{a:>10.3f}" for a in np.mean(rows, axis=0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny", help="tiny (the tests' model) or an open_clip architecture")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quality", action="store_true", help="print the digits before/after table instead")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    quality(args) if args.quality else speed(args)


if __name__ == "__main__":
    main()
