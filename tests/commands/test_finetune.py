"""`clipclust.commands.finetune`: LatteCLIP must teach a tiny CLIP something without labels, checkpoints round-trip,
a run killed mid-epoch resumes to exactly the uninterrupted result, and labels are never read."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from clipclust.store import ItemRecord, SetSpec, Workspace
from clipclust.errors import InputError
from clipclust.commands.finetune import FinetuneOptions, finetune
from clipclust.models.clip import load_clip

from ..conftest import write_digits
from ..digits_clip import CLASSES, TEMPLATE, read_prototypes, vlm_like_descriptions, zero_shot_accuracy


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


def _workspace(path: Path, folder: Path, limit: int | None = None) -> Workspace:
    ws = Workspace(path)
    files = sorted(folder.glob("*/*.png"))[:limit]
    ws.upsert_items([ItemRecord(hashlib.sha256(f.read_bytes()).hexdigest(), str(f), f.parent.name) for f in files])
    return ws


def _describe(ws: Workspace, kind: str, texts: dict[str, str]) -> None:
    """Descriptions as `describe` stores them (an item-keyed text set), standing in for a VLM."""
    spec = SetSpec.of(("test-vlm", kind), name=f"{kind}:digit", kind=kind, model="test-vlm", dtype="str")
    ws.write_batch(rows=[(spec, list(texts), list(texts.values()))])


def _options(model: Path, **kw) -> FinetuneOptions:
    base = dict(classes=CLASSES, model=str(model), class_template=TEMPLATE, templates=[TEMPLATE], steps=None,
                device="cpu", workers=0)
    if kw.get("method", "latteclip") == "latteclip":
        base["texts"] = ("class",)
    return FinetuneOptions.of(**{**base, **kw})


def _as_cli(error: InputError) -> str:
    """The message as the command line shows it: settings as flags, steps as command lines."""
    return error.render(lambda name: "--" + name.replace("_", "-"), lambda cmd, args: f"'clipclust {cmd} {args}'")


@pytest.mark.parametrize("seed,texts", [(0, ("class",)), (1, ("class",)), (2, ("class", "image", "group"))])
def test_latteclip_raises_zero_shot_accuracy_on_the_unlabelled_half(digits_clip, tmp_path, seed, texts):
    base = zero_shot_accuracy(digits_clip.model_dir, digits_clip.test_dir)
    assert 0.3 < base < 0.8  # the pretrained tiny CLIP has some skill, and room to improve
    ws = _workspace(tmp_path / "ws.h5", digits_clip.test_dir)
    if texts != ("class",):
        for kind, texts_by_key in vlm_like_descriptions(digits_clip.test_dir, seed).items():
            _describe(ws, kind, texts_by_key)
    out = tmp_path / "tuned"
    summary = finetune(ws, out, _options(digits_clip.model_dir, texts=texts, epochs=2, lr=1e-4, batch_size=64, seed=seed))
    assert summary.step == summary.total_steps == 2 * (summary.n_items // 64)
    prototypes = read_prototypes(out)
    tuned = zero_shot_accuracy(out, digits_clip.test_dir, classifier=prototypes)
    assert tuned > base + 0.03, (base, tuned)


def test_flyp_trains_on_its_own_pseudo_labels_and_keeps_class_texts_as_classifier(digits_clip, tmp_path):
    ws = _workspace(tmp_path / "ws.h5", digits_clip.test_dir, limit=128)
    out = tmp_path / "flyp"
    summary = finetune(ws, out, _options(digits_clip.model_dir, method="flyp", epochs=1, lr=1e-4, batch_size=32))
    assert summary.step == 4 and summary.history[0].agreement > 0.3  # labels drift only a little from zero-shot
    meta = json.loads((out / "prototypes.json").read_text())
    assert meta["kind"] == "class-texts" and meta["method"] == "flyp"
    encoder = load_clip(str(out), device="cpu")
    texts = encoder.encode_texts([TEMPLATE.replace("<>", c) for c in CLASSES])
    np.testing.assert_allclose(read_prototypes(out), texts, atol=1e-5)
    base = load_clip(str(digits_clip.model_dir), device="cpu").encode_texts(["a photo of the digit 3."])
    assert not np.allclose(texts[3], base[0], atol=1e-4)  # the text encoder was trained
    assert zero_shot_accuracy(out, digits_clip.test_dir, classifier=read_prototypes(out)) > 0.5  # not collapsed


def _stop_at(step: int):
    def on_step(stats) -> None:
        if stats.step == step:
            raise KeyboardInterrupt
    return on_step


def test_checkpoint_loads_as_a_model_and_a_run_killed_mid_epoch_resumes_exactly(tiny_open_clip, tmp_path):
    folder = write_digits(tmp_path / "digits", 48)
    ws = _workspace(tmp_path / "ws.h5", folder)
    keys = [k for k in ws.items().sha256]
    _describe(ws, "description", {k: f"a thin handwritten stroke number {i % 4}" for i, k in enumerate(keys[:40])})
    _describe(ws, "group-description", {k: f"digits drawn in grey, group {i % 3}" for i, k in enumerate(keys)})
    opts = _options(tiny_open_clip, texts=("class", "image", "group"), epochs=3, lr=1e-3, batch_size=16)
    whole = finetune(ws, tmp_path / "whole", opts)
    assert whole.step == 9 and whole.epochs == 3 and set(whole.texts) == {"image", "group"}

    with pytest.raises(KeyboardInterrupt):
        finetune(ws, tmp_path / "cut", opts, on_step=_stop_at(5))  # killed in the middle of epoch 2
    record = json.loads((tmp_path / "cut" / "finetune.json").read_text())
    assert record["step"] == 3 and record["epoch"] == 1  # epoch 1's checkpoint survived
    with pytest.raises(InputError, match="already holds"):
        finetune(ws, tmp_path / "cut", opts)
    resumed = finetune(ws, tmp_path / "cut", opts, resume=True)
    assert resumed.start_step == 3 and resumed.step == 9

    mid = replace(opts, save_every=2)  # a checkpoint every 2 steps too: step 4 is inside epoch 2
    with pytest.raises(KeyboardInterrupt):
        finetune(ws, tmp_path / "mid", mid, on_step=_stop_at(5))
    assert json.loads((tmp_path / "mid" / "finetune.json").read_text())["step"] == 4
    assert finetune(ws, tmp_path / "mid", mid, resume=True).start_step == 4

    a = load_clip(str(tmp_path / "whole"), device="cpu")
    for other in ("cut", "mid"):
        b = load_clip(str(tmp_path / other), device="cpu")
        for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
            torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5, msg=f"{other}: {name}")
        np.testing.assert_allclose(read_prototypes(tmp_path / "whole"), read_prototypes(tmp_path / other), atol=1e-6)
    base = load_clip(str(tiny_open_clip), device="cpu")
    assert not torch.allclose(a.model.visual.conv1.weight, base.model.visual.conv1.weight)
    initial = base.encode_texts([TEMPLATE.replace("<>", c) for c in CLASSES])
    assert np.abs(read_prototypes(tmp_path / "whole") - initial).max() > 1e-5  # the prototypes moved

    params = json.loads((tmp_path / "whole" / "finetune.json").read_text())["params"]
    assert params["base_model"].startswith("open_clip:tiny-open-clip@sha256:") and params["lr"] == 1e-3
    assert params["image_descriptions"].startswith("description:digit")
    again = finetune(ws, tmp_path / "whole", opts, resume=True)  # finished: nothing loaded, nothing trained
    assert not again.model_loaded and again.step == 9
    with pytest.raises(InputError, match="lr"):
        finetune(ws, tmp_path / "whole", _options(tiny_open_clip, texts=("class", "image", "group"), epochs=3,
                                                   lr=1e-2, batch_size=16), resume=True)


class _NoLabels(list):
    def _fail(self, *args):
        raise AssertionError("fine-tuning read the labels")

    __getitem__ = __iter__ = __contains__ = _fail


def test_labels_are_never_read(tiny_open_clip, tmp_path, monkeypatch):
    ws = _workspace(tmp_path / "ws.h5", write_digits(tmp_path / "digits", 24))
    items = Workspace.items

    def poisoned(self):
        table = items(self)
        table.label = _NoLabels(table.label)
        return table

    monkeypatch.setattr(Workspace, "items", poisoned)
    with pytest.raises(AssertionError, match="read the labels"):  # the trap works when labels are touched
        list(ws.items().label)
    summary = finetune(ws, tmp_path / "out", _options(tiny_open_clip, epochs=1, lr=1e-4, batch_size=8))
    assert summary.step == 3


def test_missing_descriptions_say_which_describe_command_makes_them(tiny_open_clip, tmp_path):
    ws = _workspace(tmp_path / "ws.h5", write_digits(tmp_path / "digits", 8))
    with pytest.raises(InputError, match=r"clipclust.describe\(\).*\(texts class\)") as missing:
        finetune(ws, tmp_path / "out", _options(tiny_open_clip, texts=("class", "image")))
    assert "'clipclust describe --vlm VLM --prompt \"Describe" in _as_cli(missing.value)
    assert _as_cli(missing.value).endswith("or train with class descriptions only (--texts class)")
    with pytest.raises(InputError) as group:
        finetune(ws, tmp_path / "out", _options(tiny_open_clip, texts=("class", "group"), domain="digit"))
    assert "--criterion digit --group-size 4 --group-by zeroshot" in _as_cli(group.value)
    keys = list(ws.items().sha256)
    _describe(ws, "description", {k: "a digit" for k in keys})
    spec_b = SetSpec(id="other", name="description:mood", kind="description", model="m", dtype="str")
    ws.write_batch(rows=[(spec_b, keys, ["calm"] * len(keys))])
    with pytest.raises(InputError, match="several image description sets") as ambiguous:
        finetune(ws, tmp_path / "out", _options(tiny_open_clip, texts=("class", "image")))
    assert _as_cli(ambiguous.value).endswith("name the one to use (--image-descriptions NAME)")
    with pytest.raises(InputError, match="holds description rows, not group-description rows"):
        finetune(ws, tmp_path / "out", _options(tiny_open_clip, texts=("class", "group"), group_descriptions="other"))
    with pytest.raises(InputError, match="transformers model"):
        hf = tmp_path / "hf"
        hf.mkdir()
        (hf / "config.json").write_text("{}")
        (hf / "model.safetensors").write_bytes(b"")
        finetune(ws, tmp_path / "out", _options(hf))
    assert not (tmp_path / "out").exists()  # nothing was written by the failed runs


@pytest.mark.parametrize("setting, value", [("class_template", ""), ("class_template", "  "), ("templates", ["<>", " "])])
def test_an_empty_template_is_refused_naming_its_own_setting(tiny_open_clip, tmp_path, setting, value):
    ws = _workspace(tmp_path / "ws.h5", write_digits(tmp_path / "digits", 4))
    with pytest.raises(InputError, match=f"empty {setting}; give a template") as empty:
        finetune(ws, tmp_path / "out", _options(tiny_open_clip, **{setting: value}))
    assert empty.value.option is None and _as_cli(empty.value).startswith(f"empty --{setting.replace('_', '-')};")
    assert not (tmp_path / "out").exists()


def test_a_file_broken_mid_run_fails_with_its_path_and_keeps_the_last_checkpoint(tiny_open_clip, tmp_path):
    from clipclust.errors import ClipclustError

    folder = write_digits(tmp_path / "digits", 16)
    ws = _workspace(tmp_path / "ws.h5", folder)
    victim = sorted(folder.glob("*/*.png"))[0]
    good = victim.read_bytes()

    def break_file(stats) -> None:
        if stats.step == 2:  # the last step of epoch 1: epoch 2 will read a broken file
            victim.write_bytes(b"not an image")

    opts = _options(tiny_open_clip, epochs=2, lr=1e-4, batch_size=8)
    with pytest.raises(ClipclustError, match=victim.name) as failure:
        finetune(ws, tmp_path / "out", opts, on_step=break_file)
    assert failure.value.exit_code == 1
    assert json.loads((tmp_path / "out" / "finetune.json").read_text())["step"] == 2
    victim.write_bytes(good)
    assert finetune(ws, tmp_path / "out", opts, resume=True).step == 4


class _ZeroShotTargets:
    """A toy third method: contrastive on the class text of each image's zero-shot pseudo-label, scaled."""

    def __init__(self, options):
        self.weight = options["weight"]

    def start(self, texts) -> None:
        pass

    def loss(self, texts, images, zs_labels, rows):
        from clipclust.methods.contrastive import contrastive_loss

        (targets,), _, _ = texts.text_targets([zs_labels], rows)
        return self.weight * contrastive_loss(images, targets, texts.logit_scale), zs_labels

    def state(self):
        return {}

    def restore(self, state) -> None:
        pass

    def classifier(self, texts):
        return texts.frozen_class_features(texts.class_texts).cpu().numpy(), "class-texts"


def test_a_method_registered_from_outside_runs_without_the_loop_naming_it(tiny_open_clip, tmp_path, monkeypatch):
    from clipclust.methods.finetuning import FINETUNE_METHODS, FinetuneMethod, finetune_methods
    from clipclust.methods.registry import Option

    finetune_methods()
    spec = FinetuneMethod("zeroshot", "Zero-shot targets", "contrastive on zero-shot labels", _ZeroShotTargets,
                          options=(Option("weight", default=1.0, type=float),))
    monkeypatch.setitem(FINETUNE_METHODS, "zeroshot", spec)
    ws = _workspace(tmp_path / "ws.h5", write_digits(tmp_path / "digits", 16))
    summary = finetune(ws, tmp_path / "out", _options(tiny_open_clip, method="zeroshot", weight=0.5, epochs=1,
                                                      lr=1e-4, batch_size=8))
    assert summary.step == 2 and summary.history[0].agreement == 1.0  # its labels are the zero-shot ones
    record = json.loads((tmp_path / "out" / "finetune.json").read_text())
    assert record["method"] == "zeroshot" and record["params"]["weight"] == 0.5
    with pytest.raises(InputError, match="weight = 0.5, this run asks for 0.25"):
        finetune(ws, tmp_path / "out", _options(tiny_open_clip, method="zeroshot", weight=0.25, epochs=1, lr=1e-4,
                                                batch_size=8), resume=True)
    with pytest.raises(InputError, match="applies to the zeroshot method, not latteclip"):
        finetune(ws, tmp_path / "other", _options(tiny_open_clip, weight=0.5))
