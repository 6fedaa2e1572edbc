"""The embed pipeline through the library: stored numbers equal what the model computes, and caching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipclust.store import Workspace
from clipclust.core.images import decode_image
from clipclust.commands.embed import EmbedOptions, embed
from clipclust.errors import InputError
from clipclust.core.templates import GENERIC_32

from ..conftest import write_digits

TEMPLATE = "This is digit <>"


def _by_name(ws: Workspace, name: str) -> dict[str, np.ndarray]:
    info = ws.resolve_set(name, keyed_by=None)
    keys, data = ws.read_set(info.id)
    return dict(zip(keys, data))


def _direct_image_vectors(encoder, paths: list[Path]) -> np.ndarray:
    import torch

    pixels = torch.stack([encoder.preprocess(decode_image(p.read_bytes())) for p in paths])
    with torch.inference_mode():
        feats = encoder.model.encode_image(pixels) if encoder.backend == "open_clip" else \
            encoder.model.get_image_features(pixel_values=pixels)
        feats = getattr(feats, "pooler_output", feats)
    feats = feats.float().numpy()
    return feats / np.linalg.norm(feats, axis=1, keepdims=True)


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_stored_vectors_equal_direct_model_outputs(tmp_path, digits_dir, open_clip_encoder, tiny_open_clip):
    ws = Workspace(tmp_path / "ws.h5")
    opts = EmbedOptions(model=str(tiny_open_clip), prompts=[TEMPLATE], fuse=["label", "zeroshot", "all"],
                        agnostic="builtin:generic-32", batch_size=7, device="cpu")
    summary = embed(ws, [str(digits_dir)], opts, encoder=open_clip_encoder)
    assert summary.new == 40 and summary.cached == 0 and not summary.skipped

    files = sorted(digits_dir.rglob("*.png"))
    direct = _direct_image_vectors(open_clip_encoder, files)
    images = _by_name(ws, "image")
    stored = np.stack([images[_sha(p)] for p in files])
    np.testing.assert_allclose(stored, direct, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)

    classes = [str(d) for d in range(10)]
    texts = _by_name(ws, f"text:{TEMPLATE}")
    import open_clip
    import torch

    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_open_clip}")
    with torch.inference_mode():
        t = open_clip_encoder.model.encode_text(tokenizer([TEMPLATE.replace("<>", c) for c in classes])).numpy()
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    np.testing.assert_allclose(np.stack([texts[c] for c in classes]), t, atol=1e-5)

    zeroshot, fused_label = _by_name(ws, f"zeroshot:{TEMPLATE}"), _by_name(ws, f"fused-label:{TEMPLATE}")
    fused_zs, fused_all = _by_name(ws, f"fused-zeroshot:{TEMPLATE}"), _by_name(ws, f"fused-all:{TEMPLATE}")
    for p, img in zip(files, stored):
        sha, label = _sha(p), p.parent.name
        np.testing.assert_allclose(zeroshot[sha], t @ img, atol=1e-5)
        np.testing.assert_allclose(fused_label[sha], (img + t[classes.index(label)]) / 2, atol=1e-5)
        np.testing.assert_allclose(fused_zs[sha], (img + t[int(np.argmax(t @ img))]) / 2, atol=1e-5)
        np.testing.assert_allclose(fused_all[sha], (img[None] + t) / 2, atol=1e-5)
    agnostic = _by_name(ws, "agnostic:builtin:generic-32")
    assert next(iter(agnostic.values())).shape == (len(GENERIC_32),)
    info = ws.resolve_set(f"fused-label:{TEMPLATE}")
    prov = json.loads(info.attrs["provenance"])
    assert prov["template"] == TEMPLATE and prov["precision"] == "fp32" and "torch" in prov["versions"]


def test_transformers_clip_through_model_path(tmp_path, digits_dir, tiny_hf_clip):
    ws = Workspace(tmp_path / "ws.h5")
    summary = embed(ws, [str(digits_dir)], EmbedOptions(model=str(tiny_hf_clip), prompts=[TEMPLATE], device="cpu"))
    assert summary.new == 40 and summary.model.startswith("transformers:tiny-hf-clip@sha256:")
    from clipclust.models.clip import load_clip

    encoder = load_clip(str(tiny_hf_clip), device="cpu")
    files = sorted(digits_dir.rglob("*.png"))
    images = _by_name(ws, "image")
    np.testing.assert_allclose(np.stack([images[_sha(p)] for p in files]), _direct_image_vectors(encoder, files), atol=1e-5)
    texts = _by_name(ws, f"text:{TEMPLATE}")
    np.testing.assert_allclose(texts["3"], encoder.encode_texts(["This is digit 3"])[0], atol=1e-5)


def test_rerun_computes_nothing_and_new_prompt_only_its_texts(tmp_path, digits_dir, open_clip_encoder, tiny_open_clip):
    ws = Workspace(tmp_path / "ws.h5")
    opts = EmbedOptions(model=str(tiny_open_clip), prompts=[TEMPLATE], batch_size=16)
    embed(ws, [str(digits_dir)], opts, encoder=open_clip_encoder)
    again = embed(ws, [str(digits_dir)], opts)  # no encoder given: it must not need to load one
    assert (again.new, again.cached, again.texts_encoded, again.derived_rows) == (0, 40, 0, 0)
    assert not again.model_loaded

    opts.prompts = [TEMPLATE, "a photo of the number <>"]
    more = embed(ws, [str(digits_dir)], opts, encoder=open_clip_encoder)
    assert (more.new, more.cached, more.texts_encoded) == (0, 40, 10)
    assert more.derived_rows == 40 * 3  # zeroshot, fused-label, fused-zeroshot for the new prompt

    write_digits(digits_dir, 3, offset=500)
    added = embed(ws, [str(digits_dir)], opts, encoder=open_clip_encoder)
    assert (added.new, added.cached, added.texts_encoded) == (3, 40, 0)


def test_interrupted_run_keeps_batches_and_resumes(tmp_path, digits_dir, open_clip_encoder, tiny_open_clip):
    class Exploding:
        """Delegates to the real encoder and fails on the third image batch, as a crash mid-run would."""

        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def encode_images(self, pixels):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("boom")
            return self.inner.encode_images(pixels)

    ws = Workspace(tmp_path / "ws.h5")
    opts = EmbedOptions(model=str(tiny_open_clip), prompts=[TEMPLATE], batch_size=8)
    with pytest.raises(RuntimeError):
        embed(ws, [str(digits_dir)], opts, encoder=Exploding(open_clip_encoder))
    assert len(ws.items()) == 16 and len(ws.set_keys(ws.resolve_set("image").id)) == 16
    assert len(ws.set_keys(ws.resolve_set(f"fused-label:{TEMPLATE}").id)) == 16
    resumed = embed(ws, [str(digits_dir)], opts, encoder=open_clip_encoder)
    assert (resumed.new, resumed.cached) == (24, 16)


def test_duplicates_stored_once_and_labels_csv_and_split(tmp_path, digits_dir, open_clip_encoder, tiny_open_clip):
    first = next(digits_dir.rglob("*.png"))
    copy_dir = tmp_path / "copies"
    copy_dir.mkdir()
    (copy_dir / "same.png").write_bytes(first.read_bytes())
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\ncopies/same.png,seven\n")
    ws = Workspace(tmp_path / "ws.h5")
    summary = embed(ws, [str(digits_dir), str(copy_dir)], EmbedOptions(
        model=str(tiny_open_clip), labels_csv=str(labels), split="train"), encoder=open_clip_encoder)
    assert summary.duplicates == 1 and summary.new == 40
    items = ws.items()
    assert len(items) == 40 and set(items.split) == {"train"}


def test_class_map_groups_prompts(tmp_path, digits_dir, open_clip_encoder, tiny_open_clip):
    class_map = {str(d): ("even" if d % 2 == 0 else "odd") for d in range(10)}
    ws = Workspace(tmp_path / "ws.h5")
    embed(ws, [str(digits_dir)], EmbedOptions(model=str(tiny_open_clip), prompts=["This is an <> digit"],
                                               class_map=class_map, class_map_name="parity"), encoder=open_clip_encoder)
    texts = _by_name(ws, "text:This is an <> digit [map:parity]")
    assert sorted(texts) == ["even", "odd"]
    fused = _by_name(ws, "fused-label:This is an <> digit [map:parity]")
    images = _by_name(ws, "image")
    path = next(p for p in digits_dir.rglob("*.png") if p.parent.name == "3")
    sha = _sha(path)
    np.testing.assert_allclose(fused[sha], (images[sha] + texts["odd"]) / 2, atol=1e-6)


def test_unreadable_files_are_skipped_and_counted(tmp_path, digits_dir, open_clip_encoder, tiny_open_clip):
    bad = digits_dir / "3"
    (bad / "not-an-image.png").write_text("hello")
    good = next(bad.glob("*.png")).read_bytes()
    (bad / "truncated.png").write_bytes(good[: len(good) // 2])
    ws = Workspace(tmp_path / "ws.h5")
    summary = embed(ws, [str(digits_dir)], EmbedOptions(model=str(tiny_open_clip)), encoder=open_clip_encoder)
    assert summary.new == 40 and len(summary.skipped) == 2
    assert {Path(p).name for p, _ in summary.skipped} == {"not-an-image.png", "truncated.png"}
    again = embed(ws, [str(digits_dir)], EmbedOptions(model=str(tiny_open_clip)))  # no encoder to reuse
    assert (again.new, again.cached, len(again.skipped), again.model_loaded) == (0, 40, 2, False)
    (bad / "truncated.png").write_bytes(good)  # repaired: new content, decoded again
    fixed = embed(ws, [str(digits_dir)], EmbedOptions(model=str(tiny_open_clip)), encoder=open_clip_encoder)
    assert (len(fixed.skipped), fixed.new) == (1, 0) and fixed.duplicates == 1  # same bytes as its source


def test_bad_inputs_are_input_errors(tmp_path, tiny_open_clip):
    ws = Workspace(tmp_path / "ws.h5")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        embed(ws, [str(tmp_path / "empty")], EmbedOptions(model=str(tiny_open_clip)))
    with pytest.raises(InputError, match="no such file"):
        embed(ws, [str(tmp_path / "missing")], EmbedOptions(model=str(tiny_open_clip)))
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    # a library caller reads the settings it passed, not command-line flags
    with pytest.raises(InputError, match="prompts needs class names: pass classes a,b,c"):
        embed(ws, [str(flat)], EmbedOptions(model=str(tiny_open_clip), prompts=[TEMPLATE]))
    with pytest.raises(InputError, match="^fuse nope: expected one of label, zeroshot, all$"):
        embed(ws, [str(flat)], EmbedOptions(model=str(tiny_open_clip), fuse=["nope"]))
    with pytest.raises(InputError, match="^batch_size: must be at least 1$"):
        embed(ws, [str(flat)], EmbedOptions(model=str(tiny_open_clip), batch_size=0))
    assert not ws.exists()  # nothing was written by a run that was refused


@pytest.mark.parametrize("store_fused", [False, True], ids=["computed-on-read", "stored"])
def test_relabelled_items_get_their_fused_label_rows_replaced(tmp_path, digits_dir, open_clip_encoder, tiny_open_clip,
                                                              store_fused):
    ws = Workspace(tmp_path / "ws.h5")
    opts = EmbedOptions(model=str(tiny_open_clip), prompts=[TEMPLATE], classes=[str(d) for d in range(10)],
                        fuse=["label"], store_fused=store_fused)
    embed(ws, [str(digits_dir)], opts, encoder=open_clip_encoder)
    path = next(p for p in sorted(digits_dir.rglob("*.png")) if p.parent.name == "3")
    sha = _sha(path)
    digest = ws.set_digest(ws.resolve_set(f"fused-label:{TEMPLATE}").id)
    labels = tmp_path / "labels.csv"
    labels.write_text(f"{path},8\n")
    summary = embed(ws, [str(digits_dir)], EmbedOptions(**{**opts.__dict__, "labels_csv": str(labels)}),
                    encoder=open_clip_encoder)
    assert summary.new == 0 and summary.derived_rows == 1
    texts, images, fused = _by_name(ws, f"text:{TEMPLATE}"), _by_name(ws, "image"), _by_name(ws, f"fused-label:{TEMPLATE}")
    assert len(fused) == 40
    np.testing.assert_allclose(fused[sha], (images[sha] + texts["8"]) / 2, atol=1e-6)
    assert ws.set_digest(ws.resolve_set(f"fused-label:{TEMPLATE}").id) != digest
    assert ws.items().label[ws.items().index()[sha]] == "8"


def test_float16_storage_halves_vectors_and_reads_back_close(tmp_path, digits_dir, open_clip_encoder, tiny_open_clip):
    import h5py

    runs = {}
    for dtype in ("float32", "float16"):
        ws = Workspace(tmp_path / f"{dtype}.h5")
        embed(ws, [str(digits_dir)], EmbedOptions(model=str(tiny_open_clip), prompts=[TEMPLATE], store_dtype=dtype),
              encoder=open_clip_encoder)
        runs[dtype] = {name: _by_name(ws, name) for name in ("image", f"zeroshot:{TEMPLATE}", f"fused-label:{TEMPLATE}")}
        with h5py.File(ws.path, "r") as f:
            # fused sets are computed on read: they store no vectors
            assert {g["data"].dtype.name for g in f["sets"].values() if "derived" not in g.attrs} == {dtype}
    for name, rows in runs["float32"].items():
        half = runs["float16"][name]
        assert all(half[k].dtype == np.float32 for k in rows)
        err = max(float(np.abs(half[k] - rows[k]).max()) for k in rows)
        assert 0 < err < 1e-3, (name, err)  # unit vectors: float16 keeps ~3 significant digits
    with pytest.raises(InputError, match="store dtype"):
        embed(Workspace(tmp_path / "x.h5"), [str(digits_dir)], EmbedOptions(store_dtype="int8"),
              encoder=open_clip_encoder)


def test_set_ids_are_those_older_workspaces_hold():
    """Every kind of set keeps the id the dict-built specs gave it, short_hash(model, kind, prompt, *parts):
    a workspace written before finds its sets again.  The literals were computed by the old code."""
    from clipclust.commands.embed.plan import plan_sets, wanted_texts
    from clipclust.store import short_hash

    model = "open_clip:ViT-B-32/openai@sha256:0123"
    classes = ["0", "1", "2"]
    opts = EmbedOptions(model="ViT-B-32/openai", prompts=["This is digit <>"], classes=classes,
                        fuse=("label", "zeroshot", "all"), agnostic="builtin:generic-32")
    plan = plan_sets(model, opts, wanted_texts(opts, {}), {})
    ids = {s.name: s.id for s in [plan.image, *(t.spec for t in plan.texts), *(d for t in plan.texts for d in t.derived)]}
    assert ids == {
        "image": "9d4391ea55506a00",
        "text:This is digit <>": "526cdd3a6b11a811",
        "zeroshot:This is digit <>": "252e0f5d28552977",
        "fused-label:This is digit <>": "f08161e8a3f3bb59",
        "fused-zeroshot:This is digit <>": "498a902f3abdfd09",
        "fused-all:This is digit <>": "1a7bd8feed1de592",
        "text:builtin:generic-32": "1a73005dc3c26c55",
        "agnostic:builtin:generic-32": "e24e81944d75c124",
    }
    assert ids["image"] == short_hash(model, "image", "")
    assert ids["fused-label:This is digit <>"] == short_hash(model, "fused-label", "This is digit <>", classes, [])
    assert ids["agnostic:builtin:generic-32"] == short_hash(model, "agnostic", "builtin:generic-32", list(GENERIC_32))

    mapped = EmbedOptions(model="ViT-B-32/openai", prompts=["This is an <> digit"], class_map={"0": "even", "1": "odd"},
                          class_map_name="parity", fuse=("label",))
    (text,) = plan_sets(model, mapped, wanted_texts(mapped, {"a": "0", "b": "1"}), {"a": "0", "b": "1"}).texts
    assert [text.spec.id] + [d.id for d in text.derived] == ["f291791ee9ced5c5", "5db23b6ae2c7fb5d", "e995fef76147f4a1"]
    assert text.spec.id == short_hash(model, "text", "This is an <> digit", ["even", "odd"], [("0", "even"), ("1", "odd")])
