"""The report use case: what the page holds, thumbnails kept in the workspace, bad input, and the page itself
opened in headless Chromium (no console error, every card, a drawn map, the switcher, search and CSV)."""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipclust.commands.report import ReportSummary, report
from clipclust.commands.report import thumbnails as thumbs_module
from clipclust.commands.report.thumbnails import thumbnail_spec
from clipclust.errors import InputError
from clipclust.methods.inputs import set_ref
from clipclust.store import ItemRecord, SetSpec, Workspace

from ..browser import need_chromium, open_page, screenshot
from ..conftest import write_digits
from ..workspaces import MODEL, blob_workspace, one_thread, sha, spec, unit, write_image

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.filterwarnings("ignore:Graph is not fully")]


def payload(page: Path) -> dict:
    """The data a report inlines (gzip + base64 JSON), as the page reads it."""
    text = page.read_text(encoding="utf-8")
    data = re.search(r'<script id="cc-data" type="application/octet-stream">([^<]*)</script>', text).group(1)
    return json.loads(gzip.decompress(base64.b64decode(data)))


@pytest.fixture(scope="module")
def digits(tmp_path_factory, open_clip_encoder):
    """40 digits embedded by the tiny open_clip model and clustered two ways: a real workspace, made once."""
    from clipclust.commands.cluster import run_clustering
    from clipclust.commands.embed.embedding import EmbedOptions, embed

    root = tmp_path_factory.mktemp("report-digits")
    ws = Workspace(root / "ws.h5")
    with one_thread():
        embed(ws, [str(write_digits(root / "digits", 40))], EmbedOptions(), encoder=open_clip_encoder)
        run_clustering(ws, method="kmeans", k=4)
        run_clustering(ws, method="agglomerative", k=3)
    return ws


def llm_workspace(path: Path, images: Path, *, n_text: int = 4, image_set: bool = True) -> tuple[Workspace, list[str]]:
    """Twelve images and ``n_text`` text-only items, all described, clustered by a made-up IC|TC run on the
    descriptions (names, criterion and the LLM's raw labels), and (``image_set``) image vectors for the map."""
    keys, records, texts = [], [], []
    for i in range(12):
        file = write_image(images / ("warm" if i < 6 else "cold"), f"{i:02d}", (220, 60 + 10 * i, 40) if i < 6
                           else (30, 60 + 10 * i, 220))
        keys.append(sha(f"image-{i}"))
        records.append(ItemRecord(sha256=keys[-1], path=file, label="warm" if i < 6 else "cold", width=16, height=16,
                                  size=Path(file).stat().st_size))
        texts.append(f"a {'sunny beach' if i < 6 else 'snowy hill'} picture number {i}")
    for i in range(n_text):
        texts.append(f"a note about {'summer' if i % 2 == 0 else 'winter'} {i}")
        keys.append(sha(texts[-1]))
        records.append(ItemRecord(sha256=keys[-1], path="", label=""))
    ws = Workspace(path)
    described = SetSpec.of(["descriptions"], name="description:mood", kind="description", model=MODEL, dtype="str",
                           prompt="Describe the mood")
    vectors = unit(np.random.default_rng(0).normal(size=(12, 8)) + np.repeat([[3] * 8, [-3] * 8], 6, axis=0))
    rows = [(described, keys, texts)] + ([(spec("image", "image"), keys[:12], vectors)] if image_set else [])
    ws.write_batch(items=records, rows=rows)
    ids = np.array([0] * 6 + [1] * 6 + [i % 2 for i in range(n_text)])
    raw = ["joyful", "happy", "happy", "bright", "happy", "joyful", "calm", "cold", "calm", "calm", "quiet", "cold"]
    raw += ["happy" if i % 2 == 0 else "calm" for i in range(n_text)]
    ws.save_clustering("ictc-mood", keys=keys, ids=ids, cluster_names=["cheerful", "serene"],
                       params={"method": "ictc", "criterion": "mood",
                               "sets": {"input": set_ref(ws.resolve_set("description"))}},
                       extra={"raw_labels": raw})
    if image_set:  # a clustering of the images alone, stored in another order: its own rows of the catalog
        ws.save_clustering("kmeans-image", keys=keys[:12][::-1], ids=np.array([0] * 4 + [1] * 4 + [2] * 4),
                           params={"method": "kmeans", "sets": {"input": set_ref(ws.resolve_set("image"))}})
    return ws, keys


def test_the_payload_holds_a_card_per_cluster_with_typical_and_borderline_members(digits, tmp_path):
    summary = report(digits, out=tmp_path / "r.html")
    assert isinstance(summary, ReportSummary) and summary.clusterings == ["agglomerative-image", "kmeans-image"]
    assert summary.n_items == 40 and summary.n_cards == 7 and summary.map == "tsne of 'image'"
    data = payload(tmp_path / "r.html")
    assert len(data["items"]["paths"]) == 40 and data["map"]["kind"] == "tsne"
    assert all(0 <= v <= 65535 for v in data["map"]["x"] + data["map"]["y"])
    kmeans = data["clusterings"][1]
    stored = digits.read_clustering("kmeans-image")
    assert kmeans["ids"] == stored["ids"].tolist() and kmeans["rows"] is None  # the catalog is in its order
    assert sorted(card["id"] for card in kmeans["cards"]) == [0, 1, 2, 3]
    assert [card["size"] for card in kmeans["cards"]] == sorted((card["size"] for card in kmeans["cards"]),
                                                                reverse=True)
    vectors = digits.read_set(digits.resolve_set("image").id)[1]
    X = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.asarray(kmeans["ids"])
    for card in kmeans["cards"]:
        members = np.flatnonzero(ids == card["id"])
        centre = X[members].mean(axis=0)
        nearest = members[np.argsort(-(X[members] @ centre))][: len(card["representatives"])]
        assert card["representatives"] == nearest.tolist()
        assert len(card["representatives"]) == min(6, members.size)
        for row, near in card["borderline"]:
            assert ids[row] == card["id"] and near != card["id"] and row not in card["representatives"]
    assert kmeans["scores"]["n_labelled"] == 40 and 0 <= kmeans["scores"]["acc"] <= 1
    table = kmeans["table"]
    assert np.asarray(table["counts"]).sum() == 40 and sorted(table["labels"]) == [str(d) for d in range(10)]


def test_thumbnails_are_kept_so_a_second_report_decodes_nothing(digits, tmp_path, monkeypatch):
    first = report(digits, out=tmp_path / "a.html", thumbnails="folder")
    assert first.thumbnails_made + first.thumbnails_reused == 40 and first.folder == str(tmp_path / "a_files")
    packs = sorted((tmp_path / "a_files").iterdir())
    assert [p.name for p in packs] == ["thumbs-0000.js"] and packs[0].read_text().startswith("clipclustPack(0,[")
    kept = digits.resolve_set("thumbnail")
    assert kept.id == thumbnail_spec(64).id and kept.name == "thumbnails:64px" and kept.shape == (40,)
    image = Image.open(io.BytesIO(base64.b64decode(digits.read_set(kept.id)[1][0])))
    assert image.format == "WEBP" and max(image.size) <= 64

    def no_decoding(*args, **kwargs):
        raise AssertionError("a second report decoded an image")

    monkeypatch.setattr(thumbs_module, "decode_image", no_decoding)
    second = report(digits, out=tmp_path / "b.html", thumbnails="folder")
    assert second.thumbnails_made == 0 and second.thumbnails_reused == 40
    assert (tmp_path / "b_files" / "thumbs-0000.js").read_bytes() == packs[0].read_bytes()
    assert second.map_cached


def test_llm_names_raw_labels_text_items_and_missing_images(tmp_path):
    ws, keys = llm_workspace(tmp_path / "ws.h5", tmp_path / "images")
    for name in ("00.png", "01.png"):
        (tmp_path / "images" / "warm" / name).unlink()
    summary = report(ws, ["ictc-mood", "kmeans-image"], out=tmp_path / "r.html")
    assert summary.n_text_items == 4 and sorted(Path(p).name for p in summary.missing) == ["00.png", "01.png"]
    data = payload(tmp_path / "r.html")
    view, images = data["clusterings"]
    assert images["name"] == "kmeans-image" and images["rows"] == list(range(12))[::-1]
    assert [card["name"] for card in view["cards"]] == ["cheerful", "serene"] and view["criterion"] == "mood"
    assert view["cards"][0]["raw_labels"][0] == ["happy", 5]
    assert data["texts"][0]["name"] == "description:mood" and view["text"] == 0
    assert data["texts"][0]["texts"][12] == "a note about summer 0"
    assert data["items"]["kinds"] == [1, 1] + [0] * 10 + [2] * 4
    assert data["map"]["x"][12:] == [-1] * 4  # text items have no image vector: not on the map
    assert view["ranked_by"].startswith("spread")  # the text items have no image vector to rank them by


def test_no_vectors_no_map_and_none_thumbnails_decode_nothing(tmp_path, monkeypatch):
    ws, keys = llm_workspace(tmp_path / "ws.h5", tmp_path / "images", image_set=False)
    monkeypatch.setattr(thumbs_module, "decode_image", lambda *a, **k: pytest.fail("decoded with thumbnails none"))
    summary = report(ws, out=tmp_path / "r.html", thumbnails="none")
    assert summary.n_thumbnails == 0 and summary.thumbnails_made == 0 and summary.map is None
    data = payload(tmp_path / "r.html")
    assert data["items"]["thumb"] == [-1] * 16 and data["map"] is None
    with pytest.raises(InputError, match="holds no vectors"):
        report(ws, out=tmp_path / "r.html", map_on="description:mood")


@pytest.mark.parametrize("kwargs, message", [
    ({"names": ["nope"]}, "no clustering named 'nope' (known: kmeans-image)"),
    ({"thumbnails": "all"}, "thumbnails: all: expected one of inline, folder, none"),
    ({"layout": "umap"}, "layout: umap: expected one of auto, tsne, pca"),
    ({"per_cluster": 0}, "per_cluster must be at least 1 and borderline at least 0"),
])
def test_bad_input_speaks_python_and_writes_nothing(tmp_path, kwargs, message):
    ws, *_ = blob_workspace(tmp_path / "ws.h5", n_per_class=5, n_classes=3)
    ws.save_clustering("kmeans-image", keys=ws.read_set(ws.resolve_set("image").id)[0], ids=np.repeat([0, 1, 2], 5),
                       params={"method": "kmeans", "sets": {"input": set_ref(ws.resolve_set("image"))}})
    with pytest.raises(InputError) as caught:
        report(ws, out=tmp_path / "out" / "r.html", **kwargs)
    assert str(caught.value) == message
    assert not (tmp_path / "out").exists()


def test_empty_workspace_unwritable_output_and_a_failure_midway_leave_nothing(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="no workspace at"):
        report(Workspace(tmp_path / "none.h5"), out=tmp_path / "r.html")
    ws, *_ = blob_workspace(tmp_path / "ws.h5", n_per_class=5, n_classes=3)
    with pytest.raises(InputError, match="holds no clustering yet"):
        report(ws, out=tmp_path / "r.html")
    ws.save_clustering("hand", keys=ws.read_set(ws.resolve_set("image").id)[0], ids=np.repeat([0, 1, 2], 5),
                       params={"method": "hand", "sets": {"input": set_ref(ws.resolve_set("image"))}})
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(InputError) as caught:
        report(ws, out=tmp_path / "file" / "r.html")
    assert caught.value.option == "output" and "cannot write" in str(caught.value)
    from clipclust.commands.report import build

    monkeypatch.setattr(build, "render_page", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(OSError):
        report(ws, out=tmp_path / "site" / "r.html", thumbnails="folder")
    assert not (tmp_path / "site").exists()  # no page, no temporary file, no folder


# ---------- in the browser ----------

def test_the_page_in_chromium_cards_map_switcher_search_and_csv(digits, tmp_path):
    need_chromium()
    report(digits, out=tmp_path / "r.html")
    page = open_page(tmp_path / "r.html")
    assert page.console == [] and page.body["ready"] == "1", page.console
    assert page.body["clustering"] == "agglomerative-image" and sorted(page.shown_cards) == [0, 1, 2]
    assert int(page.body["map-points"]) == 40 and int(page.body["map-pixels"]) > 40 * 5
    assert page.images >= 24 and "tile missing" not in page.tiles

    switched = open_page(tmp_path / "r.html", "clustering=kmeans-image")
    assert switched.console == [] and switched.body["clustering"] == "kmeans-image"
    assert sorted(switched.shown_cards) == [0, 1, 2, 3] and switched.elements["table-box"].get("hidden") is None

    stored = digits.read_clustering("kmeans-image")
    items = digits.items()
    label = dict(zip(items.sha256, items.label))
    sevens = [k for k in stored["keys"] if label[k] == "7"]
    found = open_page(tmp_path / "r.html", "clustering=kmeans-image&q=digits/7/&csv=1")
    assert found.console == [] and found.body["matches"] == str(len(sevens))
    holding = {int(c) for k, c in zip(stored["keys"], stored["ids"]) if label[k] == "7"}
    assert sorted(found.shown_cards) == sorted(holding) and all(int(p) > 0 for p in [found.body["map-pixels"]])
    rows = list(csv.DictReader(io.StringIO(found.text_of("csv-check"))))
    assert sorted(r["sha256"] for r in rows) == sorted(sevens) and {r["label"] for r in rows} == {"7"}

    cluster = open_page(tmp_path / "r.html", "clustering=kmeans-image&cluster=2&csv=1")
    in_two = sorted(k for k, c in zip(stored["keys"], stored["ids"]) if c == 2)
    assert cluster.elements["drawer"].get("hidden") is None
    assert sorted(r["sha256"] for r in csv.DictReader(io.StringIO(cluster.text_of("csv-check")))) == in_two


def test_llm_cards_text_items_placeholders_and_folder_packs_in_chromium(tmp_path):
    need_chromium()
    ws, keys = llm_workspace(tmp_path / "ws.h5", tmp_path / "images")
    (tmp_path / "images" / "cold" / "11.png").unlink()
    report(ws, out=tmp_path / "r.html", thumbnails="folder", per_cluster=8, borderline=0)
    page = open_page(tmp_path / "r.html", f"item={keys[6][:12]}")
    assert page.console == [] and page.body["ready"] == "1", page.console
    assert sorted(page.shown_cards) == [0, 1] and "cheerful" in page.dom and "serene" in page.dom
    assert 'class="chip">happy' in page.dom and "a note about summer 0" in page.dom
    assert page.tiles.count("tile text") == 4 and page.tiles.count("tile missing") == 1
    assert "1 image missing" in page.dom
    assert int(page.body["map-points"]) == 12 and page.elements["table-box"].get("hidden") is None
    searched = open_page(tmp_path / "r.html", "q=winter")
    assert searched.body["matches"] == "2" and searched.shown_cards == [1]
    named = open_page(tmp_path / "r.html", "q=cheerful")  # a cluster's name finds all its items
    assert named.body["matches"] == "8" and named.shown_cards == [0]
    other = open_page(tmp_path / "r.html", "clustering=kmeans-image&q=warm/&csv=1")
    assert other.console == [] and sorted(other.shown_cards) == [1, 2] and other.body["map-points"] == "12"
    rows = list(csv.DictReader(io.StringIO(other.text_of("csv-check"))))
    assert sorted(r["sha256"] for r in rows) == sorted(keys[:6])  # the images of warm/, by the clustering's rows
    assert {r["cluster"] for r in rows} == {"1", "2"} and rows[0]["description"].startswith("a sunny beach")

    report(ws, out=tmp_path / "r.html", thumbnails="folder", per_cluster=1, borderline=0)
    data = payload(tmp_path / "r.html")
    off_cards = [i for i, (t, slot) in enumerate(zip(data["items"]["thumb"], data["items"]["slot"])) if t < 0 <= slot]
    hovered = open_page(tmp_path / "r.html", f"item={keys[off_cards[0]][:12]}")
    tip = re.search(r'<div id="tip"[^>]*>(.*?)</div></div>', hovered.dom, re.S)
    assert hovered.console == [] and tip and 'src="data:image/webp;base64,' in tip.group(1)  # from the pack


def test_a_screenshot_of_the_digits_report_is_not_blank(digits, tmp_path):
    need_chromium()
    report(digits, out=tmp_path / "r.html")
    shot = screenshot(tmp_path / "r.html", tmp_path / "r.png", "clustering=kmeans-image", size=(1200, 1400))
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int64)
    assert pixels.shape == (1400, 1200, 3)
    colours = {tuple(p) for p in pixels[::7, ::7].reshape(-1, 3)}
    assert len(colours) > 50  # cards, thumbnails and the map, not an empty page
