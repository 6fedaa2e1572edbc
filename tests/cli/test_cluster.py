"""`clipclust cluster` as a user runs it: methods, seeds, -k auto, reuse, the head, the fused workflow, errors."""

from __future__ import annotations

import json

import pytest

from ..workspaces import blob_workspace, fused_workspace
from .conftest import PROMPT, one_error_line

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.filterwarnings("ignore:Graph is not fully")]


def exported_ids(cli, name: str) -> list[int]:
    result = cli("export", name, "--format", "jsonl")
    assert result.code == 0, result.err
    return [json.loads(line)["cluster"] for line in result.out.splitlines()]


@pytest.mark.parametrize("method, k", [("kmeans", "5"), ("spectral", "5"), ("agglomerative", "5"), ("hdbscan", None)])
def test_each_method_is_deterministic_under_a_seed(cli, digits_ws, method, k):
    args = ["cluster", "--method", method, "--seed", "7"] + (["-k", k] if k else ["--min-cluster-size", "3"])
    first = cli(*args, "--name", "first")
    assert first.code == 0, first.err
    assert first.out.startswith(f"first: stored ({method} on 'image', 70 items, seed 7)")
    assert cli(*args, "--name", "second").code == 0
    assert exported_ids(cli, "first") == exported_ids(cli, "second")


def test_default_name_json_and_reuse(cli, digits_ws):
    first = cli("--json", "cluster", "-k", "4")
    assert first.code == 0, first.err
    data = first.json()
    assert data["name"] == "kmeans-image" and data["n_items"] == 70 and data["n_clusters"] == 4
    assert not data["reused"] and sum(data["sizes"].values()) == 70
    again = cli("cluster", "-k", "4")
    assert again.code == 0 and again.out.startswith("kmeans-image: reused (kmeans on 'image', 70 items, seed 0)")
    assert "pass --force to recompute" in again.out
    forced = cli("cluster", "-k", "4", "--force", "--json")
    assert forced.json()["reused"] is False
    changed = cli("cluster", "-k", "5")
    assert changed.code == 0 and "kmeans-image: replaced" in changed.out
    assert "exists with other inputs or parameters; replacing it" in changed.err


def test_k_auto_prints_the_silhouette_table(cli, tmp_path):
    blob_workspace(tmp_path / "ws.h5")
    result = cli("cluster", "-k", "auto", "--k-range", "2:6")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert "silhouette" in lines[0]
    rows = [line for line in lines if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["2", "3", "4", "5", "6"]
    assert "<- chosen" in next(row for row in rows if row.split("│")[1].strip() == "4")
    assert lines[-1].startswith("kmeans-image: stored") and "-> 4 clusters" in lines[-1]
    table = cli("--json", "cluster", "-k", "auto", "--k-range", "2:6").json()
    assert table["reused"] and [row["k"] for row in table["k_table"]] == [2, 3, 4, 5, 6] and table["k"] == 4


def test_refine_head_on_a_stored_set(cli, digits_ws):
    result = cli("cluster", "-k", "5", "--refine", "head", "--ratio", "0.4", "--epochs", "20", "--device", "cpu")
    assert result.code == 0, result.err
    assert result.out.startswith("kmeans-head-image: stored (kmeans + ESMC head on 'image', 70 items, seed 0)")
    params = cli("--json", "cluster", "-k", "5", "--refine", "head", "--ratio", "0.4", "--epochs", "20").json()
    assert params["reused"] and params["params"]["head"]["ratio"] == 0.4 and params["params"]["head"]["epochs"] == 20
    paper = cli("--json", "cluster", "-k", "5", "--refine", "head", "--epochs", "5", "--lr", "1e-4", "--batch-size",
                "1024").json()
    assert not paper["reused"] and paper["params"]["head"]["lr"] == 1e-4
    assert paper["params"]["head"]["batch_size"] == 1024


def test_clustering_another_set_and_one_split(cli, digits_ws):
    result = cli("--json", "cluster", "--method", "agglomerative", "--on", f"fused-label:{PROMPT}", "-k", "10",
                 "--linkage", "average")
    assert result.code == 0, result.err
    data = result.json()
    assert data["name"] == "agglomerative-fused-label-this-is-digit" and data["n_items"] == 40
    assert data["params"]["method_params"]["linkage"] == "average"
    test_only = cli("--json", "cluster", "--on", "zeroshot", "-k", "3", "--split", "test").json()
    assert test_only["name"] == "kmeans-zeroshot-this-is-digit-test" and test_only["n_items"] == 30


def test_fused_workflow_end_to_end(cli, tmp_path, tiny_open_clip):
    from ..conftest import write_digits

    train = write_digits(tmp_path / "train", 40)
    test = write_digits(tmp_path / "test", 20, offset=40)  # no 9 among them: the class list is given explicitly
    model = ["-m", str(tiny_open_clip), "-p", PROMPT, "--classes", ",".join(map(str, range(10)))]
    assert cli("embed", str(train), *model, "--split", "train", "--fuse", "label").code == 0
    assert cli("embed", str(test), *model, "--split", "test", "--fuse", "all").code == 0
    fused = cli("cluster", "--method", "fused")
    assert fused.code == 0, fused.err
    assert fused.out.startswith("fused-this-is-digit: stored (fused on 'fused-label:This is digit <>', 40 items, "
                                "seed 42) -> ")
    assert "20 test items of 'fused-all:This is digit <>' classified" in fused.out
    baseline = cli("cluster", "--method", "fused", "--on", "image", "-k", "10")
    assert baseline.code == 0 and baseline.out.startswith("fused-image: stored (fused on 'image', 40 items")
    table = cli("evaluate", "fused-this-is-digit", "fused-image")
    assert table.code == 0, table.err
    rows = {line.split("│")[1].strip(): line for line in table.out.splitlines() if line.startswith("│")}
    assert set(rows) == {"fused-this-is-digit", "fused-image"}
    data = cli("--json", "evaluate").json()
    for name in ("fused-this-is-digit", "fused-image"):
        assert 0.0 <= data[name]["accuracy"] <= 1.0 and data[name]["n_predicted_labelled"] == 20
        assert f"{data[name]['accuracy']:.3f} (20)" in rows[name]
    assert data["fused-this-is-digit"]["n_clusters"] == 20  # 2 x 10 prompts by default


@pytest.mark.parametrize(
    "args, message",
    [
        (["cluster", "--on", "nope", "-k", "3"], "no stored set matches 'nope' (known: "),
        (["cluster", "-k", "500"], "-k: 500 is larger than the 70 items of set 'image'; ask for 70 clusters or fewer"),
        (["cluster", "-k", "three"], "-k: 'three': expected a whole number of clusters or 'auto'"),
        (["cluster"], "-k: the kmeans method needs the number of clusters"),
        (["cluster", "-k", "auto", "--k-range", "2-9"], "--k-range: 2-9: expected MIN:MAX"),
        (["cluster", "--method", "voodoo", "-k", "3"], "--method: 'voodoo' is not a method; expected one of agglomerative, esmc, fused"),
        (["cluster", "--on", "fused-all", "-k", "3"], "one vector per class for each item"),
        (["cluster", "--method", "hdbscan", "-k", "3"], "hdbscan decides the number of clusters itself"),
        (["cluster", "--method", "fused", "--test-split", "val"], "is in split 'val'"),
        (["cluster", "-k", "3", "--linkage", "ward"], "--linkage: applies to the agglomerative method, not kmeans"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, digits_ws, args, message):
    result = cli(*args)
    assert result.code == 2 and result.out == ""
    assert message in one_error_line(result)


def test_fused_without_training_labels_is_exit_2(cli, tmp_path):
    fused_workspace(tmp_path / "ws.h5", train_labels=False)
    for args in (["cluster", "--method", "fused"], ["cluster", "--method", "fused", "--on", "image"]):
        result = cli(*args)
        assert result.code == 2
        line = one_error_line(result)
        assert "needs a 'fused-label' set" in line or "needs labelled training items" in line


def test_no_workspace_is_exit_2(cli, tmp_path):
    result = cli("cluster", "-k", "3", cache=tmp_path / "absent.h5")
    assert result.code == 2 and "no workspace at" in one_error_line(result)


# ------------------------------------------------------------------- options generated from the method registry
def test_options_without_a_flag_before_now_have_one(cli, tmp_path):
    blob_workspace(tmp_path / "ws.h5")
    kmeans = cli("--json", "cluster", "-k", "4", "--n-init", "3")
    assert kmeans.code == 0, kmeans.err
    assert kmeans.json()["params"]["method_params"]["n_init"] == 3
    agglomerative = cli("--json", "cluster", "--method", "agglomerative", "-k", "4", "--linkage", "average",
                        "--metric", "cosine")
    assert agglomerative.code == 0, agglomerative.err
    assert agglomerative.json()["params"]["method_params"] == {"linkage": "average", "metric": "cosine"}
    hdbscan = cli("--json", "cluster", "--method", "hdbscan", "--min-cluster-size", "4", "--min-samples", "2")
    assert hdbscan.code == 0, hdbscan.err
    assert hdbscan.json()["params"]["method_params"] == {"min_cluster_size": 4, "min_samples": 2}


@pytest.mark.parametrize(
    "args, message",
    [
        (["-k", "3", "--criterion", "mood"], "clipclust: error: --criterion: applies to the esmc or ictc or text method, not kmeans"),
        (["-k", "3", "--ratio", "0.5"], "clipclust: error: --ratio: applies to --refine head, not kmeans"),
        (["-k", "3", "--refine", "head", "--epochs", "0"], "--epochs: 0: expected a whole number of 1 or more"),
        (["-k", "3", "--refine", "head", "--ratio", "2"], "--ratio: 2.0: expected a fraction in (0, 1], e.g. 0.3"),
        (["--method", "agglomerative", "-k", "3", "--metric", "chebyshev"],
         "--metric: 'chebyshev': expected one of euclidean, cosine, manhattan, l1, l2"),
        (["--method", "ictc", "-k", "3", "--criterion", "mood", "--llm", "x.gguf", "--threads", "0"],
         "--threads: 0: expected a whole number of 1 or more"),
        (["--method", "ictc", "-k", "3", "--criterion", "mood", "--llm", "x.gguf", "--names", "best"],
         "--names: 'best': expected one of auto, frequent, hybrid, llm"),
        (["-k", "3", "--layer", "two"], "Invalid value for '--layer'"),
    ],
)
def test_generated_flags_are_checked_by_their_method(cli, tmp_path, args, message):
    blob_workspace(tmp_path / "ws.h5")
    result = cli("cluster", *args)
    assert result.code == 2 and result.out == ""
    assert message in one_error_line(result)


def test_a_toy_method_brings_its_own_flag_help_section_and_value(cli, tmp_path, monkeypatch):
    """Adding a method (and its option) touches its own code alone: the flag, the help section and the value."""
    import numpy as np

    from clipclust.methods import METHODS, MethodOutput, MethodSpec, Option, PreparedInput, register_method

    ws, keys, X, _ = blob_workspace(tmp_path / "ws.h5")
    seen = {}

    def prepare(workspace, req):
        seen.update(req.options)
        return PreparedInput({"method": "halves", "cut": req.option("cut")}, "halves",
                             {"input": workspace.resolve_set("image")}, keys, X)

    def compute(prepared, req, reporter):
        return MethodOutput(prepared.keys, (np.arange(len(prepared.keys)) >= req.option("cut")).astype(int),
                            cluster_names=["first", "second"], details={"k": 2})

    monkeypatch.setitem(METHODS, "halves", None)  # so that the registration is undone after the test
    register_method(MethodSpec(
        "halves", "items before and after a cut", prepare, compute, report=lambda summary: ["  cut made"],
        options=(Option("cut", type=int, default=30, flag="cut-at", short="u", help="where the halves meet"),)))

    shown = cli("cluster", "--help").out
    assert "halves:\n  items before and after a cut\n  -u, --cut-at <int>  where the halves meet  [default: 30]" in shown
    result = cli("cluster", "--method", "halves", "--cut-at", "20")
    assert result.code == 0, result.err
    assert seen == {"cut": 20} and result.out.endswith(" -> 2 clusters, sizes 20-40 in " + result.out.split(" in ")[-1])
    assert result.out.splitlines()[-1] == "  cut made"
    assert cli("cluster", "-k", "2", "--cut-at", "3").err.strip() == (
        "clipclust: error: --cut-at: applies to the halves method, not kmeans")


def help_sections(text: str) -> dict[str, list[str]]:
    """The long flags listed under each heading of a help text (the lines before the first heading left out)."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            current = sections.setdefault(line[:-1], [])
        elif current is not None and line.startswith("  -"):
            current.append(next(word.rstrip(",") for word in line.split() if word.startswith("--")))
    return sections


def test_help_lists_each_methods_options_under_its_own_heading(cli):
    result = cli("cluster", "--help")
    assert result.code == 0, result.err
    section = help_sections(result.out)
    assert list(section) == ["Options", "kmeans", "spectral", "agglomerative", "hdbscan", "fused", "ictc", "esmc",
                             "text", "head refinement"]
    assert section["Options"][:4] == ["--method", "--on", "--clusters", "--k-range"]
    assert not {"--ratio", "--criterion", "--n-neighbors"} & set(section["Options"])
    assert section["kmeans"] == ["--n-init"] and section["hdbscan"] == ["--min-cluster-size", "--min-samples"]
    assert {"--criterion", "--llm", "--names", "--threads", "--prompts"} <= set(section["ictc"])
    assert {"--criterion", "--llm", "--mllm", "--explain", "--device"} <= set(section["esmc"])
    assert section["head refinement"] == ["--ratio", "--epochs", "--lr", "--batch-size", "--device"]
    assert "  --names [auto|frequent|hybrid|llm|taxonomy]" in result.out
    assert "  --n-init <int>  k-means restarts  [default: 10]" in result.out
    assert "what to cluster by, e.g. mood (also esmc," in result.out
    assert section["text"] == ["--criterion", "--text-model", "--device", "--encode-batch"]
    examples = [line for line in result.out.splitlines() if line.lstrip().startswith("clipclust cluster ")]
    assert len(examples) == 4 and all(line.startswith("    clipclust cluster ") for line in examples)


def test_the_mission_spelling_of_ictc_reaches_the_method(cli, monkeypatch):
    from clipclust.errors import InputError

    seen = []

    def run_clustering(workspace, request, reporter):
        seen.append(request)
        raise InputError("seen")

    monkeypatch.setattr("clipclust.cli.cluster.run_clustering", run_clustering)
    result = cli("cluster", "--method", "ictc", "--criterion", "mood", "-k", "4", "--llm", "x.gguf")
    assert result.code == 2 and one_error_line(result) == "clipclust: error: seen"
    assert seen[0].method == "ictc" and seen[0].k == "4"
    assert seen[0].options == {"criterion": "mood", "llm": "x.gguf"}


GOLDEN = """\
ictc-mood: stored (ictc on 'description:x', 12 items, seed 0) -> 3 clusters, sizes 3-5 in 1.2s
  0  happy  (5 items)
  1  sad  (4 items)
  2  angry  (3 items)
  names: 'z' -> 'w' (no support)
  coverage 81% (raw-label mass the names match); 2 items placed by the LLM (labels matching no name); 3 items \
assigned to the closest name without naming it; names completed by fallback: x, y; LLM calls: 5 cached, 7 new \
(hits/misses: step2a 3/4, step3 2/3)
esmc-head-color: stored (esmc + ESMC head on 'images', 12 items, seed 0) -> 2 clusters, sizes 5-7 in 3.0s
  localised on 10 items with keywords red, blue: keyword probability of the logit lens per layer (best position), \
top tokens
    layer   2 @-2  0.1234  'a' ' b'
    layer   3 @-1  0.5000  'red'  <- chosen
  hidden feature at layer 3, position -1 (fp32); 12 items through the model, the others read from the workspace
  0  red  (5 items)
  1  blue  (7 items)
hdbscan-image: stored (hdbscan on 'image', 70 items, seed 0) -> 4 clusters, sizes 10-20, 5 noise; 30 test items of \
'fused-all:x' classified in 0.5s
ictc-bare: stored (ictc on 'd', 4 items, seed 1) -> 2 clusters, sizes 2-2 in 0.1s
  0  a  (2 items)
  1  b  (2 items)
  0 items assigned to the closest name without naming it; LLM calls: 0 cached, 0 new (hits/misses: )
ictc-mood: reused (ictc on 'description:x', 12 items, seed 0) -> 3 clusters, sizes 3-5; pass --force to recompute
  0  happy  (5 items)
  1  sad  (4 items)
  2  angry  (3 items)
  names: 'z' -> 'w' (no support)
  coverage 81% (raw-label mass the names match); 2 items placed by the LLM (labels matching no name); 3 items \
assigned to the closest name without naming it; names completed by fallback: x, y
esmc-head-color: reused (esmc + ESMC head on 'images', 12 items, seed 0) -> 2 clusters, sizes 5-7; pass --force to \
recompute
  localised on 10 items with keywords red, blue: keyword probability of the logit lens per layer (best position), \
top tokens
    layer   2 @-2  0.1234  'a' ' b'
    layer   3 @-1  0.5000  'red'  <- chosen
  hidden feature at layer 3, position -1 (fp32)
  0  red  (5 items)
  1  blue  (7 items)
hdbscan-image: reused (hdbscan on 'image', 70 items, seed 0) -> 4 clusters, sizes 10-20, 5 noise; 30 test items of \
'fused-all:x' classified; pass --force to recompute
ictc-bare: reused (ictc on 'd', 4 items, seed 1) -> 2 clusters, sizes 2-2; pass --force to recompute
  0  a  (2 items)
  1  b  (2 items)
  0 items assigned to the closest name without naming it
"""


def test_each_method_formats_its_own_summary_lines(capsys):
    """The text printed before the summary hook moved into the methods, character for character."""
    from clipclust.cli.cluster import print_summary
    from clipclust.commands.cluster import ClusteringSummary

    ictc = dict(coverage=0.8125, assign="label", n_llm_assigned=2, n_unmatched=3, names_fallback=["x", "y"],
                names_replacements=["'z' -> 'w' (no support)"], calls_total={"hits": 5, "misses": 7},
                calls={"step2a": {"hits": 3, "misses": 4}, "step3": {"hits": 2, "misses": 3}},
                warnings=["one cluster holds 95%"], refine="")
    esmc = dict(localisation={"n_samples": 10, "keywords": ["red", "blue"], "layer": 3, "position": -1,
                              "table": [{"layer": 2, "position": -2, "score": 0.1234, "top": ["a", " b"]},
                                        {"layer": 3, "position": -1, "score": 0.5, "top": ["red"]}]},
                feature="hidden", layer=3, position=-1, dtype="fp32", n_forward=12, refine="head")
    for reused in (False, True):
        for summary in (
            ClusteringSummary("ictc-mood", "ictc", "description:x", 12, 3, 0, {"0": 5, "1": 4, "2": 3}, 0, 3,
                              reused=reused, seconds=1.25, params=dict(ictc), names=["happy", "sad", "angry"]),
            ClusteringSummary("esmc-head-color", "esmc", "images", 12, 2, 0, {"0": 5, "1": 7}, 0, 2, reused=reused,
                              seconds=3.0, params=dict(esmc), names=["red", "blue"]),
            ClusteringSummary("hdbscan-image", "hdbscan", "image", 70, 4, 5,
                              {"-1": 5, "0": 20, "1": 15, "2": 20, "3": 10}, 0, None, reused=reused, seconds=0.5,
                              params={"refine": ""}, n_test=30, test_on="fused-all:x"),
            ClusteringSummary("ictc-bare", "ictc", "d", 4, 2, 0, {"0": 2, "1": 2}, 1, 2, reused=reused, seconds=0.1,
                              params={"refine": ""}, names=["a", "b"]),
        ):
            print_summary(summary)
    captured = capsys.readouterr()
    assert captured.out == GOLDEN
    assert captured.err == "warning: one cluster holds 95%\n"  # once: a reused run repeats the stored warnings


def test_the_json_summary_is_the_dataclass_to_dict(cli, tmp_path):
    blob_workspace(tmp_path / "ws.h5")
    data = cli("--json", "cluster", "-k", "4").json()
    assert list(data) == ["names", "name", "method", "on", "n_items", "n_clusters", "n_noise", "sizes", "seed", "k",
                          "reused", "replaced", "k_table", "n_test", "test_on", "seconds", "params"]


@pytest.mark.parametrize("option, message", [
    ({"name": "criterion", "type": int}, "option 'criterion' of clash differs in type or spelling from ictc's"),
    ({"name": "force"}, "the option 'force' of clash clashes with the command's own"),
    ({"name": "splits", "flag": "split"}, "clashes with the command's own --split"),
])
def test_a_method_option_that_cannot_be_one_flag_is_refused_when_the_command_is_built(monkeypatch, option, message):
    import typer.main

    from clipclust.cli.app import app
    from clipclust.methods import METHODS, MethodSpec, Option, load_builtin_methods, register_method

    load_builtin_methods()
    monkeypatch.setitem(METHODS, "clash", None)
    name = option.pop("name")
    register_method(MethodSpec("clash", "a method whose option cannot be a flag", None, None,  # type: ignore[arg-type]
                               options=(Option(name, **option),)))
    with pytest.raises(ValueError, match=message):
        typer.main.get_command(app).commands["cluster"]
