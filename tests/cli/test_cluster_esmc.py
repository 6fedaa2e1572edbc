"""`clipclust cluster --method esmc` end to end with tiny random models built in the tests (a 2-layer Llama for
descriptions, a tiny LLaVA for images): states stored once and reused, localisation, names, resume after a
failure mid-run, labels never read, bad requests as one stderr line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipclust.store import ItemRecord, Workspace

from ..models.conftest import tiny_causal_lm_dir, tiny_vlm_dir  # noqa: F401 (fixtures)
from .conftest import one_error_line

DESCRIPTIONS = [
    ("a small red car", "red"), ("the red car is old", "red"), ("a red ship", "red"),
    ("a blue bird", "blue"), ("the blue car is large", "blue"), ("a small blue ship", "blue"),
]


@pytest.fixture(autouse=True)
def _private_hash_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPCLUST_HASH_MEMO", str(tmp_path / "hashes.json"))


@pytest.fixture()
def described(cli, tmp_path: Path) -> Path:
    src = tmp_path / "colors.jsonl"
    src.write_text("".join(json.dumps({"text": t, "color": c}) + "\n" for t, c in DESCRIPTIONS))
    res = cli("describe", "--from", str(src), "--label-field", "color")
    assert res.code == 0, res.err
    return tmp_path / "ws.h5"


def esmc(cli, model: Path, *extra: str):
    return cli("cluster", "--method", "esmc", "--criterion", "color", "-k", "2", "--llm", str(model),
               "--device", "cpu", *extra)


def test_esmc_on_descriptions_stores_states_once_and_names_clusters(cli, described: Path, tiny_causal_lm_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    first = esmc(cli, tiny_causal_lm_dir, "--explain", "--json")
    assert first.code == 0, first.err
    summary = json.loads(first.out)
    assert summary["name"] == "esmc-color" and summary["n_items"] == 6
    params = summary["params"]
    assert params["n_forward"] == 6 and params["layer"] == 2 and params["position"] == -1
    assert len(summary["names"]) == 2 and all(summary["names"])
    ws = Workspace(described)
    kinds = {s.kind: s for s in ws.list_sets()}
    assert kinds["esmc-hidden"].shape == (6, 32) and kinds["esmc-lens"].shape[0] == 6
    assert list(ws.read_clustering("esmc-color")["names"]) == summary["names"]
    exported = cli("export", "esmc-color", "--json")
    assert exported.code == 0 and {json.loads(line)["cluster_name"] for line in exported.out.splitlines()} == set(
        name for i, name in enumerate(summary["names"]) if summary["sizes"].get(str(i)))

    # another K, the lens feature, the head: no model is opened, every state comes from the workspace
    import clipclust.models.hidden as hidden

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every state is stored")

    monkeypatch.setattr(hidden, "load_hidden_model", no_model)
    again = esmc(cli, tiny_causal_lm_dir, "-k", "3", "--feature", "lens", "--refine", "head", "--explain",
                 "--name", "lens3")
    assert again.code == 0, again.err
    assert "0 items through the model" in again.out and "lens feature at layer 2" in again.out
    stored = ws.read_clustering("lens3")
    assert len(stored["names"]) == 3 and stored["params"]["head"]["k"] == 3
    raw = esmc(cli, tiny_causal_lm_dir, "--feature", "lens-raw", "--name", "raw")
    assert raw.code == 0 and "lens-raw feature" in raw.out
    reused = esmc(cli, tiny_causal_lm_dir, "--explain")
    assert reused.code == 0 and "esmc-color: reused" in reused.out


def test_keywords_localise_the_layer_and_the_evidence_is_printed(cli, described: Path,
                                                                 tiny_causal_lm_dir: Path) -> None:
    res = esmc(cli, tiny_causal_lm_dir, "--keywords", "red,blue,green", "--locate-samples", "3")
    assert res.code == 0, res.err
    assert "localised on 3 items with keywords red, blue, green" in res.out and "<- chosen" in res.out
    stored = Workspace(described).read_clustering("esmc-color")["params"]
    located = stored["localisation"]
    assert {row["layer"] for row in located["table"]} == {1, 2}
    assert (stored["layer"], stored["position"]) == (located["layer"], located["position"])
    best = max(located["table"], key=lambda row: row["score"])
    assert best["layer"] == located["layer"]
    hidden_set = next(s for s in Workspace(described).list_sets() if s.kind == "esmc-hidden")
    assert json.loads(hidden_set.attrs["localisation"]) == located
    forced = esmc(cli, tiny_causal_lm_dir, "--keywords", "red,blue", "--layer", "1", "--position", "-2",
                  "--name", "pinned", "--json")
    assert forced.code == 0, forced.err
    assert json.loads(forced.out)["params"]["layer"] == 1 and json.loads(forced.out)["params"]["position"] == -2


def test_a_failure_mid_run_keeps_the_finished_batches_and_the_rerun_resumes(
        cli, described: Path, tiny_causal_lm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import clipclust.methods.esmc.states as states_module
    from clipclust.models.hidden import HiddenModel

    monkeypatch.setattr(states_module, "WRITE_BATCH", 2)
    real_states = HiddenModel.states
    calls = {"n": 0}

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated out of memory")
        return real_states(self, *args, **kwargs)

    monkeypatch.setattr(HiddenModel, "states", failing)
    broken = esmc(cli, tiny_causal_lm_dir)
    assert broken.code == 1 and "simulated out of memory" in one_error_line(broken)
    hidden_set = next(s for s in Workspace(described).list_sets() if s.kind == "esmc-hidden")
    assert hidden_set.shape[0] == 2
    resumed = esmc(cli, tiny_causal_lm_dir, "--json")
    assert resumed.code == 0, resumed.err
    assert json.loads(resumed.out)["params"]["n_forward"] == 4


def test_labels_are_never_read(cli, described: Path, tiny_causal_lm_dir: Path) -> None:
    first = esmc(cli, tiny_causal_lm_dir, "--refine", "head", "--json")
    assert first.code == 0, first.err
    ws = Workspace(described)
    items = ws.items()
    ws.upsert_items([ItemRecord(sha256=s, path=p, label=f"scrambled-{i % 4}") for i, (s, p) in
                     enumerate(zip(items.sha256, items.path))])
    assert set(ws.items().label) != set(items.label)
    second = esmc(cli, tiny_causal_lm_dir, "--refine", "head", "--force", "--name", "after-labels-changed")
    assert second.code == 0, second.err
    before, after = ws.read_clustering("esmc-head-color"), ws.read_clustering("after-labels-changed")
    np.testing.assert_array_equal(before["ids"], after["ids"])


def test_esmc_reads_images_through_an_image_text_model(cli, tmp_path: Path, tiny_vlm_dir: Path) -> None:
    ws = Workspace(tmp_path / "ws.h5")
    rng = np.random.default_rng(0)
    records = []
    for i in range(4):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        records.append(ItemRecord(sha256=f"{i:064x}", path=str(path), width=32, height=32))
    ws.upsert_items(records)
    res = cli("cluster", "--method", "esmc", "--criterion", "color", "-k", "2", "--mllm", str(tiny_vlm_dir),
              "--device", "cpu", "--keywords", "red,blue", "--locate-samples", "2", "--explain", "--json")
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    assert summary["n_items"] == 4 and summary["params"]["n_forward"] == 4 and len(summary["names"]) == 2
    assert summary["params"]["localisation"]["n_samples"] == 2
    assert next(s for s in ws.list_sets() if s.kind == "esmc-hidden").shape == (4, 32)


@pytest.mark.parametrize(("extra", "flag"), [
    (("-k", "2", "--llm", "MODEL"), "--criterion"),
    (("-k", "2", "--criterion", "color"), "--llm"),
    (("-k", "2", "--criterion", "color", "--llm", "MODEL", "--mllm", "MODEL"), "--mllm"),
    (("--criterion", "color", "--llm", "MODEL"), "-k"),
    (("-k", "2", "--criterion", "color", "--llm", "MODEL", "--position", "0"), "--position"),
    (("-k", "2", "--criterion", "color", "--llm", "MODEL", "--feature", "logits"), "--feature"),
    (("-k", "2", "--criterion", "color", "--llm", "MODEL", "--prompt", "no placeholder"), "--prompt"),
    (("-k", "9", "--criterion", "color", "--llm", "MODEL"), "-k"),
    (("-k", "2", "--criterion", "color", "--llm", "MODEL", "--assign", "constrained"), "--assign"),
    (("-k", "2", "--criterion", "color", "--llm", "missing.gguf"), "--llm"),
])
def test_bad_requests_are_one_line_naming_the_flag(cli, described: Path, tiny_causal_lm_dir: Path, extra, flag) -> None:
    args = [str(tiny_causal_lm_dir) if a == "MODEL" else a for a in extra]
    res = cli("cluster", "--method", "esmc", *args)
    assert res.code == 2
    assert one_error_line(res).startswith(f"clipclust: error: {flag}")


def test_keywords_auto_asks_the_llm_through_the_runtime_once(cli, described: Path, tiny_causal_lm_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import clipclust.models.llm as llm
    from clipclust.models.llm import TextGenerator

    asked: list[str] = []

    class Keywords(TextGenerator):
        identity, name = "fake-keywords", "fake"

        def generate(self, requests, params=None):
            asked.extend(r.messages[-1]["content"] for r in requests)
            return ["Red, Blue, Green" for _ in requests]

    monkeypatch.setattr(llm, "load_generator", lambda spec, **opts: Keywords())
    res = esmc(cli, tiny_causal_lm_dir, "--keywords", "auto", "--locate-samples", "2")
    assert res.code == 0, res.err
    assert "keywords Red, Blue, Green" in res.out and len(asked) == 1 and "color" in asked[0]
    again = esmc(cli, tiny_causal_lm_dir, "--keywords", "auto", "--locate-samples", "2", "--force")
    assert again.code == 0 and len(asked) == 1  # the answer came from the workspace's call cache

    class NotLoaded(Keywords):  # what a lazily opened model looks like until its first call
        def generate(self, requests, params=None):
            raise AssertionError("the keyword LLM was run although its answer is cached")

    opened: list[bool] = []
    monkeypatch.setattr(llm, "load_generator", lambda spec, lazy=False, **opts: opened.append(lazy) or NotLoaded())
    cached = esmc(cli, tiny_causal_lm_dir, "--keywords", "auto", "--locate-samples", "2", "--force")
    assert cached.code == 0, cached.err
    assert opened == [True]  # opened lazily: with the answer cached, no weights are loaded


def test_a_gguf_llm_is_read_by_llama_cpp_at_its_last_layer_and_its_states_stored_apart(cli, described: Path) -> None:
    from clipclust.methods.esmc.states import StateRequest, choose_reader

    from ..models.conftest import smollm2_path

    gguf = smollm2_path()
    first = esmc(cli, gguf, "--json")
    assert first.code == 0, first.err
    params = json.loads(first.out)["params"]
    assert (params["reader"], params["layer"], params["position"], params["dtype"]) == ("llama.cpp", 30, -1, "gguf")
    assert params["model"].startswith("llama.cpp:sha256:") and params["n_forward"] == 6
    hidden = next(s for s in Workspace(described).list_sets() if s.kind == "esmc-hidden")
    assert hidden.shape == (6, 576) and hidden.model == params["model"]
    shown = esmc(cli, gguf, "--feature", "lens")
    assert shown.code == 0 and "(llama.cpp, gguf); 0 items through the model" in shown.out

    # the layers llama.cpp cannot give go to transformers, or are refused when llama.cpp is asked for
    refused = esmc(cli, gguf, "--reader", "llama.cpp", "--layer", "12")
    assert refused.code == 2 and one_error_line(refused).startswith("clipclust: error: --reader: llama.cpp cannot")
    assert "last layer (30) only, not layer 12" in one_error_line(refused)
    ws = Workspace(described)
    request = StateRequest(model=str(gguf), criterion="color", template="{description} {criterion}", layer=12)
    fallback = choose_reader(ws, request, images=False)
    assert fallback.name == "transformers" and fallback.identity.startswith("gguf:sha256:")
    assert "not layer 12" in fallback.note
    for changed in ({"layer": 30, "dtype": "fp32"}, {"layer": None, "keywords": ["red"]}, {"reader": "transformers"}):
        assert choose_reader(ws, StateRequest(**{**request.__dict__, **changed}), images=False).name == "transformers"
    assert choose_reader(ws, StateRequest(**{**request.__dict__, "layer": 30}), images=False).name == "llama.cpp"


def test_k_auto_and_levels_store_a_linked_taxonomy_with_the_evidence(cli, described: Path, tiny_causal_lm_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    res = esmc(cli, tiny_causal_lm_dir, "-k", "auto", "--k-range", "3:5", "--levels", "2", "--explain", "--name", "tax")
    assert res.code == 0, res.err
    ws = Workspace(described)
    fine = ws.read_clustering("tax")
    params = fine["params"]
    k = params["k_chosen"]
    assert 3 <= k <= 5 and params["k"] == k and params["request"]["k"] == "auto"
    assert "chosen K=" in params["k_evidence"][-1] and f"  K: chosen K={k}" in res.out
    assert params["levels"] == ["tax.level1", "tax"] and params["parent"] == "tax.level1"
    coarse = ws.read_clustering("tax.level1")
    assert 2 <= coarse["params"]["k"] < k and len(coarse["names"]) == coarse["params"]["k"]
    assert f"levels (tax.level1 > tax): K = {coarse['params']['k']} > {k}" in res.out
    children = [str(c) for c, parent in enumerate(params["parents"]) if parent == 0]
    assert f"    level 1 cluster 0  {coarse['names'][0] or '-'}  > clusters {', '.join(children)}" in res.out
    for c in range(k):  # each fine cluster inside one coarse cluster, as the stored parents say
        assert {int(p) for p in coarse["ids"][fine["ids"] == c]} <= {fine["params"]["parents"][c]}

    import clipclust.models.hidden as hidden

    monkeypatch.setattr(hidden, "load_hidden_model", lambda *a, **k: pytest.fail("loaded a model to reuse"))
    again = esmc(cli, tiny_causal_lm_dir, "-k", "auto", "--k-range", "3:5", "--levels", "2", "--explain", "--name", "tax")
    assert again.code == 0 and "tax: reused" in again.out
    flat = esmc(cli, tiny_causal_lm_dir, "-k", "2", "--levels", "2", "--name", "tax")  # fewer levels: replaced whole
    assert flat.code == 0 and ws.list_clusterings() == ["tax"]
    assert "2 clusters leave no room for 1 coarser level(s)" in flat.err
    bad = esmc(cli, tiny_causal_lm_dir, "--levels", "4")
    assert bad.code == 2 and one_error_line(bad).startswith("clipclust: error: --levels: 4: expected 1 (flat), 2 or 3")


def test_k_auto_takes_the_number_of_values_the_criterion_names(cli, described: Path, tiny_causal_lm_dir: Path) -> None:
    res = esmc(cli, tiny_causal_lm_dir, "-k", "auto", "--criterion", "red or blue", "--k-range", "3:5", "--name", "rb")
    assert res.code == 0, res.err
    params = Workspace(described).read_clustering("rb")["params"]
    assert params["k_chosen"] == 2 and params["k"] == 2  # the criterion's two values, outside the range
    assert params["k_evidence"] == ["the criterion names its values (red, blue): K=2"]
    assert "  K: the criterion names its values (red, blue): K=2" in res.out
    plain = esmc(cli, tiny_causal_lm_dir, "-k", "auto", "--k-range", "3:5", "--name", "plain")
    assert plain.code == 0 and "eigengap" in Workspace(described).read_clustering("plain")["params"]["k_evidence"][0]
