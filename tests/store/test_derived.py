"""Fused sets computed on read: the same keys, shapes and values as stored ones, for every consumer."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from clipclust.commands.cluster import run_clustering
from clipclust.commands.embed.embedding import EmbedOptions, embed
from clipclust.store import Workspace
from clipclust.store import derived as derived_module
from clipclust.store.check import check_workspace

from ..conftest import write_digits

TEMPLATE = "This is digit <>"
DIGITS = [str(d) for d in range(10)]
PARITY = {str(d): ("even" if d % 2 == 0 else "odd") for d in range(10)}


def _sets(ws: Workspace) -> dict[str, tuple]:
    """name -> (kind, shape, {key: row}) for every item-keyed set."""
    out = {}
    for info in ws.list_sets():
        keys, rows = ws.read_set(info.id)
        out[info.name] = (info.kind, info.shape, dict(zip(keys, rows)))
    return out


def _embed_both(tmp_path, digits_dir, encoder, model, **kwargs):
    stores = {}
    for store_fused in (True, False):
        ws = Workspace(tmp_path / f"stored-{store_fused}.h5")
        opts = EmbedOptions(model=str(model), prompts=[TEMPLATE], fuse=("label", "zeroshot", "all"),
                            store_fused=store_fused, **kwargs)
        embed(ws, [str(digits_dir)], opts, encoder=encoder)
        stores[store_fused] = ws
    return stores[True], stores[False]


@pytest.mark.parametrize("class_map", [None, PARITY], ids=["labels", "class-map"])
def test_derived_sets_read_as_the_stored_ones(tmp_path, digits_dir, open_clip_encoder, tiny_open_clip, class_map,
                                              monkeypatch):
    extra = {"class_map": class_map, "class_map_name": "parity"} if class_map else {}
    stored, derived = _embed_both(tmp_path, digits_dir, open_clip_encoder, tiny_open_clip, **extra)
    a, b = _sets(stored), _sets(derived)
    assert a.keys() == b.keys() and len(a) == 6  # image, text, zeroshot, three fused
    for name, (kind, shape, rows) in a.items():
        kind_b, shape_b, rows_b = b[name]
        assert (kind, shape) == (kind_b, shape_b) and rows.keys() == rows_b.keys(), name
        for key, row in rows.items():
            np.testing.assert_allclose(rows_b[key], row, atol=1e-6, rtol=0)
    fused = {s.kind: s for s in derived.list_sets() if s.kind.startswith("fused-")}
    assert all(s.derived for s in fused.values()) and not any(s.derived for s in stored.list_sets())
    assert fused["fused-all"].shape == (40, 2 if class_map else 10, 32)
    assert fused["fused-label"].derived_bytes == 40 * 32 * 4
    # a streamed pass gives the same rows in the same order as a whole read
    keys, rows = derived.read_set(fused["fused-all"].id)
    blocks = list(derived.iter_set(fused["fused-all"].id, chunk=7))
    assert [k for ks, _ in blocks for k in ks] == keys
    np.testing.assert_array_equal(np.concatenate([r for _, r in blocks]), rows)
    # a block never holds more computed bytes than the cap: fused-all rows are C x D each
    monkeypatch.setattr(derived_module, "BLOCK_BYTES", 3 * int(np.prod(fused["fused-all"].shape[1:])) * 4)
    assert {len(ks) for ks, _ in derived.iter_set(fused["fused-all"].id)} == {3, 40 % 3}
    assert check_workspace(derived.path).ok
    # the file holds no fused vectors: only keys and the text row each item is fused with
    assert _fused_bytes(derived) * 10 < _fused_bytes(stored)


def _fused_bytes(ws: Workspace) -> int:
    with h5py.File(ws.path, "r") as f:
        return sum(g["data"].id.get_storage_size() for g in f["sets"].values()
                   if str(g.attrs["kind"]).startswith("fused-"))


def test_plain_h5py_computes_a_derived_set_from_its_recipe(tmp_path, digits_dir, open_clip_encoder, tiny_open_clip):
    ws = Workspace(tmp_path / "ws.h5")
    embed(ws, [str(digits_dir)], EmbedOptions(model=str(tiny_open_clip), prompts=[TEMPLATE]), encoder=open_clip_encoder)
    info = ws.resolve_set(f"fused-zeroshot:{TEMPLATE}")
    expected = dict(zip(*ws.read_set(info.id)))
    with h5py.File(ws.path, "r") as f:  # docs/cache-format.md, "Sets computed on read"
        g = f[f"sets/{info.id}"]
        assert g.attrs["derived"] == "fuse-mean" and g.attrs["fuse"] == "zeroshot"
        image, text = f[f"sets/{g.attrs['image_set']}"], f[f"sets/{g.attrs['text_set']}"]
        text_row = {k.decode() if isinstance(k, bytes) else k: i for i, k in enumerate(text["keys"][:])}
        texts = text["data"][:][[text_row[c] for c in json.loads(g.attrs["classes"])]]
        image_row = {k.decode(): i for i, k in enumerate(image["keys"][:])}
        for key, cls in zip(g["keys"][:], g["data"][:]):
            by_hand = (image["data"][image_row[key.decode()]] + texts[cls]) / 2
            np.testing.assert_allclose(by_hand, expected[key.decode()], atol=1e-6)


def test_fused_method_gives_the_same_result_either_way(tmp_path, open_clip_encoder, tiny_open_clip):
    train, test = write_digits(tmp_path / "train", 40), write_digits(tmp_path / "test", 20, offset=40)
    results = []
    for store_fused in (True, False):
        ws = Workspace(tmp_path / f"ws-{store_fused}.h5")
        for folder, split, fuse in ((train, "train", ("label",)), (test, "test", ("all",))):
            embed(ws, [str(folder)], EmbedOptions(model=str(tiny_open_clip), prompts=[TEMPLATE], split=split, fuse=fuse,
                                                  classes=DIGITS, store_fused=store_fused), encoder=open_clip_encoder)
        summary = run_clustering(ws, method="fused", k=6)
        results.append(ws.read_clustering(summary.name))
    stored, derived = results
    assert len(set(derived["ids"].tolist())) > 1 and len(set(derived["predicted"])) > 1  # not degenerate
    for field in ("keys", "test_keys", "predicted", "names"):
        assert stored[field] == derived[field], field
    for field in ("ids", "test_ids"):
        np.testing.assert_array_equal(stored[field], derived[field])
    np.testing.assert_allclose(stored["centroids"], derived["centroids"], atol=1e-6)


def test_a_stored_fused_set_stays_stored_and_info_shows_what_is_derived(tmp_path, open_clip_encoder, tiny_open_clip,
                                                                       cli):
    first, more = write_digits(tmp_path / "a", 20), write_digits(tmp_path / "b", 10, offset=20)
    ws = Workspace(tmp_path / "ws.h5")
    embed(ws, [str(first)], EmbedOptions(model=str(tiny_open_clip), prompts=[TEMPLATE], store_fused=True),
          encoder=open_clip_encoder)
    # a later default run adds rows to the existing set the way it was made; a new template is derived
    embed(ws, [str(first), str(more)], EmbedOptions(model=str(tiny_open_clip), prompts=[TEMPLATE, "a <>"]),
          encoder=open_clip_encoder)
    old, new = ws.resolve_set(f"fused-label:{TEMPLATE}"), ws.resolve_set("fused-label:a <>")
    assert not old.derived and old.shape == (30, 32) and new.derived and new.shape == (30, 32)
    images, texts, rows = (dict(zip(*ws.read_set(ws.resolve_set(n, keyed_by=None).id)))
                           for n in ("image", f"text:{TEMPLATE}", f"fused-label:{TEMPLATE}"))
    labels = dict(zip(ws.items().sha256, ws.items().label))
    for key, row in rows.items():
        np.testing.assert_allclose(row, (images[key] + texts[labels[key]]) / 2, atol=1e-6)
    out = cli("info", "--json", cache=ws.path).json()
    by_name = {s["name"]: s for s in out["sets"]}
    assert by_name["fused-label:a <>"]["derived"] and by_name["fused-label:a <>"]["bytes_not_stored"] == 30 * 32 * 4
    assert not by_name[f"fused-label:{TEMPLATE}"]["derived"]
    table = cli("info", cache=ws.path).out
    assert "computed on read" in table


def test_check_reports_a_derived_set_whose_image_set_is_gone(tmp_path, digits_dir, open_clip_encoder, tiny_open_clip):
    ws = Workspace(tmp_path / "ws.h5")
    embed(ws, [str(digits_dir)], EmbedOptions(model=str(tiny_open_clip), prompts=[TEMPLATE]), encoder=open_clip_encoder)
    image = ws.resolve_set("image").id
    with h5py.File(ws.path, "a") as f:
        del f[f"sets/{image}"]
    report = check_workspace(ws.path)
    assert not report.ok and any("computed on read" in p and image in p for p in report.problems)
