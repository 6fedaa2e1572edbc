"""`clipclust info`: items by split and label, sets with shape, model, prompt and date."""

from __future__ import annotations


def test_info_table_and_json(cli, digits_dir, tiny_open_clip):
    assert cli("embed", str(digits_dir), "-m", str(tiny_open_clip), "--split", "train", "-p", "digit <>",
               "--agnostic", "builtin:generic-32").code == 0
    data = cli("info", "--json").json()
    assert data["items"] == 40 and sum(data["splits"]["train"].values()) == 40
    by_name = {s["name"]: s for s in data["sets"]}
    assert by_name["image"]["shape"] == [40, 32]
    assert by_name["zeroshot:digit <>"]["shape"] == [40, 10] and by_name["zeroshot:digit <>"]["prompt"] == "digit <>"
    assert by_name["agnostic:builtin:generic-32"]["shape"] == [40, 32]
    assert by_name["text:digit <>"]["keyed_by"] == "class"
    assert all(s["model"].startswith("open_clip:tiny-open-clip@sha256:") and s["created"] for s in data["sets"])
    table = cli("info")
    assert table.code == 0 and "40 items" in table.out and "train" in table.out and "zeroshot:digit" in table.out


def test_a_bad_lock_timeout_is_one_line_exit_2(cli, monkeypatch):
    monkeypatch.setenv("CLIPCLUST_LOCK_TIMEOUT", "soon")
    res = cli("info")
    assert res.code == 2 and res.err.count("\n") == 1 and "CLIPCLUST_LOCK_TIMEOUT='soon'" in res.err


def test_info_shows_bytes_per_set_and_size_on_disk(cli, tmp_path):
    from clipclust.cli.info import human_bytes

    from ..workspaces import blob_workspace

    blob_workspace(tmp_path / "ws.h5", n_per_class=300, n_classes=2, dim=64)
    data = cli("info", "--json").json()
    assert data["size_on_disk"] == (tmp_path / "ws.h5").stat().st_size
    image = {s["name"]: s for s in data["sets"]}["image"]
    assert 600 * 64 * 4 <= image["bytes"] <= data["size_on_disk"]  # the float32 rows, stored uncompressed
    table = cli("info").out
    assert f"{human_bytes(data['size_on_disk'])} on disk" in table.splitlines()[0]
    assert human_bytes(image["bytes"]) in table
    assert [human_bytes(n) for n in (999, 1000, 1_234_567, 5 * 10**12, 7 * 10**15)] == \
        ["999 B", "1.0 kB", "1.2 MB", "5.0 TB", "7000.0 TB"]


def test_info_json_is_pinned(cli, tmp_path):
    """`info --json` byte for byte: its keys, their order, and the values of a known workspace."""
    import json

    from ..workspaces import MODEL, blob_workspace

    ws, keys, _, y = blob_workspace(tmp_path / "ws.h5", n_per_class=2, n_classes=2, split="train")
    ws.save_clustering("hand", keys=keys, ids=y, params={"k": 2})
    (image,) = ws.list_sets()
    expected = {
        "cache": str(tmp_path / "ws.h5"), "size_on_disk": (tmp_path / "ws.h5").stat().st_size, "items": 4,
        "splits": {"train": {"c0": 2, "c1": 2}},
        "sets": [{"id": image.id, "name": "image", "kind": "image", "shape": [4, 8], "model": MODEL, "prompt": "",
                  "keyed_by": "item", "created": image.created, "updated": image.updated,
                  "bytes": ws.set_storage_bytes()[image.id], "derived": False, "bytes_not_stored": 0}],
        "clusterings": ["hand"], "cached_calls": 0,
    }
    res = cli("info", "--json")
    assert res.code == 0 and res.out == json.dumps(expected, indent=2) + "\n"
    lines = cli("info").out.splitlines()
    assert lines[0] == f"workspace {tmp_path / 'ws.h5'}: 4 items, {human_bytes_of(tmp_path / 'ws.h5')} on disk"
    assert lines[-1] == "clusterings: hand"


def test_no_workspace_is_one_line_exit_2(cli, tmp_path):
    res = cli("info")
    assert res.code == 2
    assert res.err == (f"clipclust: error: no workspace at {tmp_path / 'ws.h5'}; run 'clipclust embed IMAGES' first "
                       "or pass --cache\n")


def human_bytes_of(path) -> str:
    from clipclust.cli.info import human_bytes

    return human_bytes(path.stat().st_size)
