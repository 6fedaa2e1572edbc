"""Embedding throughput: clipclust's library vs a plain open_clip loop, and a fully cached re-run.

Both paths embed the same PNG files (Fashion-MNIST if installed, else sklearn digits) with the same model,
batch size and torch threads, in one process, alternating so that machine noise hits both.  The model is
a real-size architecture with random weights (no downloads here): the compute is the real one.

    python bench/embed_throughput.py                      # ViT-B-32, 512 images
    python bench/embed_throughput.py --arch ViT-B-16 --images 256 --device cuda --precision fp16
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def write_images(folder: Path, n: int, jpeg_size: int = 0) -> list[Path]:
    """n grayscale PNGs (or photo-sized JPEGs); Fashion-MNIST when installed, else sklearn digits."""
    if FASHION.exists():
        with gzip.open(FASHION) as fh:
            pixels = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        source = "fashion-mnist"
    else:
        from sklearn.datasets import load_digits

        pixels = (load_digits().images * 15).astype(np.uint8)
        source = "sklearn digits"
    paths = []
    for i in range(n):
        image = Image.fromarray(pixels[i % len(pixels)])
        if jpeg_size:
            path = folder / f"{i:05d}.jpg"
            image.convert("RGB").resize((jpeg_size, jpeg_size), Image.BICUBIC).save(path, quality=90)
        else:
            path = folder / f"{i:05d}.png"
            image.save(path)
        paths.append(path)
    shape = f"{jpeg_size}x{jpeg_size} JPEG" if jpeg_size else f"{pixels.shape[1]}x{pixels.shape[2]} PNG"
    print(f"images: {n} from {source} ({shape})")
    return paths


def plain_loop(model, preprocess, paths: list[Path], batch_size: int, device: str, dtype) -> np.ndarray:
    """What a user would write by hand: open, convert, preprocess, stack, encode, normalise."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            batch = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths[start : start + batch_size]])
            feats = model.encode_image(batch.to(device, dtype=dtype))
            out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jpeg-size", type=int, default=0, help="write photo-sized JPEGs of this side instead of PNGs")
    args = parser.parse_args()

    import open_clip
    import torch

    from clipclust.store import Workspace
    from clipclust.commands.embed import EmbedOptions, default_workers, embed
    from clipclust.models.clip import load_clip

    workers = args.workers or default_workers()
    print(f"torch threads: {torch.get_num_threads()}, decode workers: {workers}, batch size: {args.batch_size}, "
          f"device: {args.device}")
    with tempfile.TemporaryDirectory(prefix="clipclust-bench-") as tmp:
        tmp_path = Path(tmp)
        images = tmp_path / "images"
        images.mkdir()
        paths = write_images(images, args.images, args.jpeg_size)
        checkpoint = tmp_path / f"{args.arch}.pt"
        torch.manual_seed(0)
        torch.save(open_clip.create_model(args.arch).state_dict(), checkpoint)
        spec = f"{args.arch}/{checkpoint}"

        encoder = load_clip(spec, device=args.device, precision=args.precision)
        model, _, preprocess = open_clip.create_model_and_transforms(args.arch, pretrained=str(checkpoint))
        model = model.eval().to(args.device, dtype=encoder.dtype)
        print(f"model: {args.arch} (random weights), precision {encoder.precision}")

        plain_loop(model, preprocess, paths[: args.batch_size], args.batch_size, args.device, encoder.dtype)  # warm-up
        plain_times, lib_times, cached_times = [], [], []
        for round_ in range(args.rounds):
            t0 = time.perf_counter()
            reference = plain_loop(model, preprocess, paths, args.batch_size, args.device, encoder.dtype)
            plain_times.append(time.perf_counter() - t0)

            ws = Workspace(tmp_path / f"ws{round_}.h5")
            opts = EmbedOptions(model=spec, batch_size=args.batch_size, workers=workers, device=args.device,
                                precision=encoder.precision)
            t0 = time.perf_counter()
            summary = embed(ws, [str(images)], opts, encoder=encoder)
            lib_times.append(time.perf_counter() - t0)
            assert summary.new == len(paths), summary

            t0 = time.perf_counter()
            again = embed(ws, [str(images)], opts)  # no encoder: a cached run must not need the model
            cached_times.append(time.perf_counter() - t0)
            assert again.new == 0 and not again.model_loaded

        keys, vectors = ws.read_set(ws.resolve_set("image").id)
        order = {k: i for i, k in enumerate(keys)}
        import hashlib

        stored = vectors[[order[hashlib.sha256(p.read_bytes()).hexdigest()] for p in paths]]
        max_diff = float(np.abs(stored - reference).max())

    n = len(paths)
    plain, lib, cached = min(plain_times), min(lib_times), min(cached_times)
    print(f"plain open_clip loop : {n / plain:8.1f} images/s  ({plain:.2f}s, best of {args.rounds})")
    print(f"clipclust embed      : {n / lib:8.1f} images/s  ({lib:.2f}s, hashing + decode threads + HDF5 writes)")
    print(f"clipclust cached     : {n / cached:8.1f} images/s  ({cached:.3f}s, nothing to compute)")
    print(f"ratio clipclust / plain loop  : {plain / lib:.2f}x")
    print(f"ratio first run / cached re-run: {lib / cached:.1f}x")
    print(f"max |clipclust - plain| over stored vectors: {max_diff:.2e}"
          + ("  (JPEGs: clipclust decodes at reduced DCT scale)" if args.jpeg_size else ""))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
