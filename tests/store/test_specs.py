"""SetSpec: the one place a set's id is derived; the ids are pinned so old workspaces keep their sets."""

from __future__ import annotations

import numpy as np
import pytest

from clipclust.store import SetSpec, Workspace, short_hash
from clipclust.store.specs import as_spec


def test_ids_are_pinned():
    """The ids embed and visualize derived before SetSpec existed: a change here orphans every stored set."""
    spec = SetSpec.for_model(model="ViT-B-32/laion2b_s34b_b79k", kind="zeroshot", prompt="This is digit <>",
                             key_parts=(["0", "1"], {}), name="zeroshot:This is digit <>")
    assert spec.id == "c0b1d5657e55b551"
    assert (spec.model, spec.kind, spec.prompt) == ("ViT-B-32/laion2b_s34b_b79k", "zeroshot", "This is digit <>")
    assert SetSpec.of(("projection", "tsne", "abcd", "digest", 0, 30.0), name="tsne:image", kind="tsne").id == \
        "35f64da5b6338ccb" == short_hash("projection", "tsne", "abcd", "digest", 0, 30.0)


def test_the_dict_form_is_still_accepted_and_checked():
    spec = SetSpec(id="s", name="image", kind="image", provenance={"device": "cpu"})
    assert as_spec(spec) is spec
    assert as_spec({"id": "s", "name": "image", "kind": "image", "provenance": {"device": "cpu"}, "dtype": None}) == spec
    with pytest.raises(ValueError, match="unknown set spec fields: colour"):
        as_spec({"id": "s", "name": "image", "kind": "image", "colour": "red"})


def test_a_spec_and_its_dict_form_write_the_same_set(tmp_path):
    spec = SetSpec(id="s", name="text:<>", kind="text", keyed_by="class", dtype="str", attrs={"classes": "[]"})
    a, b = Workspace(tmp_path / "a.h5"), Workspace(tmp_path / "b.h5")
    a.write_batch(rows=[(spec, ["x", "y"], np.array(["one", "two"], dtype=object))])
    b.write_batch(rows=[(spec.to_dict(), ["x", "y"], np.array(["one", "two"], dtype=object))])
    (info_a,), (info_b,) = a.list_sets(), b.list_sets()
    assert (info_a.id, info_a.keyed_by, info_a.attrs["classes"]) == (info_b.id, info_b.keyed_by, info_b.attrs["classes"])
    assert a.read_set("s")[1].tolist() == b.read_set("s")[1].tolist() == ["one", "two"]
