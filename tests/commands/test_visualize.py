"""The visualize use case: one PNG per call, a VisualSummary, and projections kept under pinned ids."""

from __future__ import annotations

import pytest

from clipclust.commands.visualize import VisualSummary, visualize
from clipclust.errors import InputError

from ..workspaces import blob_workspace

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.filterwarnings("ignore:Graph is not fully")]


@pytest.fixture()
def hand(tmp_path):
    """A workspace with one hand-made clustering (the true classes) of 15 blob vectors."""
    ws, keys, _, y = blob_workspace(tmp_path / "ws.h5", n_per_class=5, n_classes=3)
    image = ws.resolve_set("image")
    ws.save_clustering("hand", keys=keys, ids=y, params={
        "method": "hand", "sets": {"input": {"id": image.id, "name": "image", "model": image.model, "prompt": ""}}})
    return ws


def test_a_projection_is_stored_under_the_id_it_always_had_and_reused(hand, tmp_path):
    first = visualize(hand, "hand", "pca", tmp_path / "p.png", seed=3)
    assert isinstance(first, VisualSummary) and not first.cached and first.n_points == 15
    again = visualize(hand, kind="pca", out=tmp_path / "q.png", seed=3)  # the only clustering, by default
    assert again.cached and again.clustering == "hand"
    visualize(hand, "hand", "tsne", tmp_path / "t.png", perplexity=4)
    # the ids clipclust derived before SetSpec: a change here would recompute every stored layout
    assert {s.kind: s.id for s in hand.list_sets()} == {"image": "2f81fba132b71c06", "pca": "ab108a3380974749",
                                                         "tsne": "da37309cd0c54e8d"}
    projection = hand.resolve_set("pca")
    assert projection.name == "pca:image" and projection.shape == (15, 2)


def test_to_dict_is_what_visualize_json_prints(hand, tmp_path):
    summary = visualize(hand, "hand", "confusion", tmp_path / "c.png")
    assert summary.to_dict() == {"path": str(tmp_path / "c.png"), "kind": "confusion", "clustering": "hand",
                                 "width": summary.width, "height": summary.height, "n_points": 15,
                                 "cached_coordinates": False, "skipped_images": []}
    assert summary.width > 0 and summary.height > 0


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "globe"}, "kind globe: expected one of tsne, pca, confusion, montage"),
    ({"perplexity": 0}, "perplexity 0: expected a number above 0"),
    ({"thumb": 4}, "per_cluster must be at least 1 and thumb from 8 to 1024 pixels"),
    ({"kind": "montage"}, r"has an image .*list the members with clipclust.export\(\) instead"),
])
def test_bad_input_speaks_python(hand, tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        visualize(hand, "hand", out=tmp_path / "x.png", **kwargs)
    assert not (tmp_path / "x.png").exists()
