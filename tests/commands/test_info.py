"""The info use case: what a workspace holds, as a dataclass, without reading rows."""

from __future__ import annotations

import numpy as np
import pytest

from clipclust.commands.info import SetSummary, WorkspaceInfo, info
from clipclust.errors import InputError
from clipclust.store import ItemRecord, Workspace

from ..workspaces import blob_workspace, sha


def test_info_counts_items_sets_clusterings_and_calls(tmp_path):
    ws, keys, _, y = blob_workspace(tmp_path / "ws.h5", n_per_class=5, n_classes=3, split="train")
    ws.upsert_items([ItemRecord(sha("unlabelled"), "/nowhere/u.png")])
    ws.save_clustering("hand", keys=keys, ids=y, params={"k": 3})
    ws.put_many({"a question": "an answer"})
    held = info(ws)
    assert isinstance(held, WorkspaceInfo)
    assert held.items == 16 and held.cached_calls == 1 and held.clusterings == ["hand"]
    assert held.splits == {"(none)": {"(none)": 1}, "train": {"c0": 5, "c1": 5, "c2": 5}}
    assert held.size_on_disk == ws.path.stat().st_size and held.cache == str(ws.path)
    (image,) = held.sets
    assert isinstance(image, SetSummary)
    assert (image.name, image.kind, image.shape, image.keyed_by, image.derived) == ("image", "image", [15, 8], "item", False)
    assert image.bytes >= 15 * 8 * 4 and image.bytes_not_stored == 0


def test_to_dict_is_what_info_json_prints(tmp_path):
    ws, *_ = blob_workspace(tmp_path / "ws.h5", n_per_class=2, n_classes=2)
    data = info(ws).to_dict()
    assert list(data) == ["cache", "size_on_disk", "items", "splits", "sets", "clusterings", "cached_calls"]
    assert list(data["sets"][0]) == ["id", "name", "kind", "shape", "model", "prompt", "keyed_by", "created",
                                     "updated", "bytes", "derived", "bytes_not_stored"]


def test_no_workspace_is_bad_input_in_python_words(tmp_path):
    with pytest.raises(InputError) as caught:
        info(Workspace(tmp_path / "missing.h5"))
    assert str(caught.value).endswith("run clipclust.embed() first or pass cache")
    assert not (tmp_path / "missing.h5").exists()


def test_derived_sets_say_what_they_would_take(tmp_path):
    from clipclust.store import SetSpec

    ws, keys, X, y = blob_workspace(tmp_path / "ws.h5", n_per_class=3, n_classes=2)
    image = ws.resolve_set("image")
    text = SetSpec(id="t" * 16, name="text:<>", kind="text", model=image.model, keyed_by="class")
    ws.write_batch(rows=[(text, ["c0", "c1"], np.eye(2, 8, dtype=np.float32))])
    fused = SetSpec(id="f" * 16, name="fused-label:<>", kind="fused-label", model=image.model,
                    attrs={"classes": '["c0", "c1"]'},
                    recipe={"image_set": image.id, "text_set": "t" * 16, "fuse": "label", "row_shape": [8]})
    ws.write_batch(rows=[(fused, keys, y.astype(np.int32))])
    by_name = {s.name: s for s in info(ws).sets}
    assert by_name["fused-label:<>"].derived and by_name["fused-label:<>"].shape == [6, 8]
    assert by_name["fused-label:<>"].bytes_not_stored == 6 * 8 * 4
