"""The merge use case: workspaces joined through the Workspace API, a MergeReport of what happened."""

from __future__ import annotations

import numpy as np
import pytest

from clipclust.commands.merge import MergeReport, SetMerge, merge_workspaces
from clipclust.errors import InputError
from clipclust.store import SetSpec

from ..workspaces import blob_workspace


def _with_text_and_fused(ws, keys, y):
    """A class-keyed text set and a fused set computed on read from it and the image set."""
    image = ws.resolve_set("image")
    text = SetSpec(id="t" * 16, name="text:<>", kind="text", model=image.model, keyed_by="class")
    fused = SetSpec(id="f" * 16, name="fused-label:<>", kind="fused-label", model=image.model,
                    attrs={"classes": '["c0", "c1"]'},
                    recipe={"image_set": image.id, "text_set": text.id, "fuse": "label", "row_shape": [8]})
    ws.write_batch(rows=[(text, ["c0", "c1"], np.eye(2, 8, dtype=np.float32)), (fused, keys, y.astype(np.int32))])


def test_two_workspaces_merge_and_the_report_says_how(tmp_path):
    a, keys_a, _, y_a = blob_workspace(tmp_path / "a.h5", n_per_class=3, n_classes=2, seed=1)
    b, keys_b, _, y_b = blob_workspace(tmp_path / "b.h5", n_per_class=3, n_classes=2, seed=2)
    _with_text_and_fused(a, keys_a, y_a)
    _with_text_and_fused(b, keys_b, y_b)
    b.put_many({"question": "answer"})
    report = merge_workspaces([a.path, b.path], tmp_path / "m.h5")
    assert isinstance(report, MergeReport) and report.items_added == 12 and report.calls_added == 1
    by_name = {s.name: s for s in report.sets}
    assert isinstance(by_name["image"], SetMerge) and by_name["image"].added == 12
    assert by_name["text:<>"].added == 2 and by_name["text:<>"].duplicates == 2
    data = report.to_dict()
    assert list(data) == ["output", "inputs", "items_added", "items_known", "sets", "calls_added", "calls_duplicate",
                          "clusterings_added", "clusterings_same", "unreadable_added", "conflicts", "notes", "seconds"]
    assert list(data["sets"][0]) == ["id", "name", "model", "added", "duplicates", "differing", "max_difference"]

    from clipclust.store import Workspace

    merged = Workspace(tmp_path / "m.h5")
    assert {s.id for s in merged.list_sets()} == {s.id for s in a.list_sets()}  # ids as stored
    assert merged.is_derived("f" * 16)  # a set computed on read stays one
    keys, rows = merged.read_set("f" * 16)
    _, image = merged.read_set(merged.resolve_set("image").id)
    np.testing.assert_allclose(rows, (image + np.eye(2, 8)[[0, 0, 0, 1, 1, 1] * 2]) / 2, atol=1e-6)


def test_nothing_to_merge_is_bad_input(tmp_path):
    a, *_ = blob_workspace(tmp_path / "a.h5", n_per_class=1, n_classes=2)
    with pytest.raises(InputError, match="merge needs at least one workspace other than the output"):
        merge_workspaces([a.path], a.path)
    with pytest.raises(InputError, match="no workspace file"):
        merge_workspaces([tmp_path / "nope.h5"], tmp_path / "m.h5")
