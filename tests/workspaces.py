"""Workspaces written directly with Workspace.write_batch: synthetic vectors whose right answer is known.

They make the clustering, evaluation, visualize and export tests exact and fast (no model involved); the
tiny-model tests in tests/cli/ show the same commands on embeddings made by `embed`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits

from clipclust.store import ItemRecord, SetSpec, Workspace

MODEL = "synthetic:test@sha256:0000"
TEMPLATE = "a photo of <>"


@contextlib.contextmanager
def one_thread():
    """One BLAS/OpenMP thread and one torch thread: on a busy 2-core machine, threads that spin waiting for
    each other make these small fits a hundred times slower (see tests/methods/conftest.py)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def unit(X: np.ndarray) -> np.ndarray:
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


def spec(kind: str, name: str, prompt: str = "", classes: Sequence[str] | None = None,
         class_map: dict[str, str] | None = None) -> SetSpec:
    return SetSpec(id=sha(f"{kind}|{name}")[:16], name=name, kind=kind, model=MODEL, prompt=prompt,
                   provenance={"class_map": class_map or {}},
                   attrs={} if classes is None else {"classes": json.dumps(list(classes))})


def write_image(folder: Path, name: str, colour: tuple[int, int, int]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    Image.new("RGB", (16, 16), colour).save(path)
    return str(path)


def blob_workspace(path: Path, *, n_per_class: int = 15, n_classes: int = 4, dim: int = 8, labelled: bool = True,
                   split: str = "", seed: int = 0, images: Path | None = None, label_names: Sequence[str] | None = None,
                   ) -> tuple[Workspace, list[str], np.ndarray, np.ndarray]:
    """An 'image' set of well-separated unit-vector groups; returns (workspace, keys, vectors, class ids).

    With ``images`` a small PNG is written per item (a colour per class) and its path stored, for montages.
    ``label_names`` renames the classes (the vectors stay the same), to show labels do not steer clustering.
    """
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_classes, dim))) * 3
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = unit(centres[y] + 0.2 * rng.normal(size=(y.shape[0], dim))).astype(np.float32)
    names = list(label_names) if label_names is not None else [f"c{i}" for i in range(n_classes)]
    keys = [sha(f"item-{seed}-{i}") for i in range(y.shape[0])]
    records = []
    for i, (key, cls) in enumerate(zip(keys, y)):
        colour = tuple(int(v) for v in (np.array([60, 120, 180]) + 50 * cls) % 256)
        file = write_image(images / names[cls], f"{i:03d}", colour) if images is not None else f"/nowhere/{i}.png"
        records.append(ItemRecord(sha256=key, path=file, label=names[cls] if labelled else "", split=split))
    ws = Workspace(path)
    ws.write_batch(items=records, rows=[(spec("image", "image"), keys, X)])
    return ws, keys, X, y


def fused_workspace(path: Path, *, n_classes: int = 5, dim: int = 24, n_train: int = 20, n_test: int = 12,
                    seed: int = 0, class_map: dict[str, str] | None = None, train_labels: bool = True,
                    noise: float = 0.15) -> dict:
    """Items in a 'train' and a 'test' split with image, fused-label (train), fused-all (test) and zero-shot
    sets built exactly as `embed` builds them, from separated class centres and one text vector per prompt.

    With ``class_map`` (label -> group) the prompts name the groups, as `embed --class-map` does.
    """
    rng = np.random.default_rng(seed)
    labels = [str(i) for i in range(n_classes)]
    classes = sorted(set(class_map.values())) if class_map else labels
    centres = unit(rng.normal(size=(n_classes, dim)))
    texts = unit(rng.normal(size=(len(classes), dim)))

    def images(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(n_classes), per_class)
        return unit(centres[y] + noise * rng.normal(size=(y.shape[0], dim))), y

    train_x, train_y = images(n_train)
    test_x, test_y = images(n_test)
    train_keys = [sha(f"train-{seed}-{i}") for i in range(train_y.shape[0])]
    test_keys = [sha(f"test-{seed}-{i}") for i in range(test_y.shape[0])]
    group = (lambda lab: class_map[lab]) if class_map else (lambda lab: lab)
    train_class = np.array([classes.index(group(labels[c])) for c in train_y])
    records = [ItemRecord(sha256=k, path=f"/nowhere/train/{i}.png", label=labels[c] if train_labels else "",
                          split="train") for i, (k, c) in enumerate(zip(train_keys, train_y))]
    records += [ItemRecord(sha256=k, path=f"/nowhere/test/{i}.png", label=labels[c], split="test")
                for i, (k, c) in enumerate(zip(test_keys, test_y))]
    suffix = " [map:groups]" if class_map else ""
    all_keys = train_keys + test_keys
    all_x = np.concatenate([train_x, test_x])
    rows = [
        (spec("image", "image"), all_keys, all_x),
        (spec("zeroshot", f"zeroshot:{TEMPLATE}{suffix}", TEMPLATE, classes, class_map), all_keys, all_x @ texts.T),
        (spec("fused-all", f"fused-all:{TEMPLATE}{suffix}", TEMPLATE, classes, class_map), test_keys,
         (test_x[:, None, :] + texts[None]) / 2),
    ]
    if train_labels:
        rows.append((spec("fused-label", f"fused-label:{TEMPLATE}{suffix}", TEMPLATE, classes, class_map),
                     train_keys, (train_x + texts[train_class]) / 2))
    ws = Workspace(path)
    ws.write_batch(items=records, rows=rows)
    return {"ws": ws, "train_keys": train_keys, "test_keys": test_keys, "train_y": train_y, "test_y": test_y,
            "labels": labels, "classes": classes, "suffix": suffix}


def described_workspace(path: Path, texts: Sequence[str], labels: Sequence[str] | None = None, *,
                        name: str = "description:synthetic", split: str = "") -> tuple[Workspace, list[str]]:
    """Items with one stored description each (a 'description' set, as describe writes it), labels optional;
    returns (workspace, keys)."""
    keys = [sha(f"described-{i}-{text}") for i, text in enumerate(texts)]
    records = [ItemRecord(sha256=key, path=f"/nowhere/{i}.png", label=(labels[i] if labels else ""), split=split)
               for i, key in enumerate(keys)]
    described = SetSpec(id=sha(f"description|{name}")[:16], name=name, kind="description", model="synthetic:vlm",
                        prompt="Describe the image.", dtype="str", provenance={"kind": "description"})
    ws = Workspace(path)
    ws.write_batch(items=records, rows=[(described, keys, list(texts))])
    return ws, keys
