"""Pipes: image paths and descriptions from stdin, descriptions and vector sets out to other tools."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from clipclust.store import Workspace
from clipclust.commands.describe import text_item_sha256

from ..conftest import png_bytes, write_digits
from ..models.conftest import tiny_vlm_dir  # noqa: F401  (fixture re-exported)
from ..workspaces import blob_workspace
from .conftest import one_error_line

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def _private_hash_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPCLUST_HASH_MEMO", str(tmp_path / "hashes.json"))


@pytest.fixture()
def stdin(monkeypatch):
    def feed(text: str) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    return feed


def stored_vectors(path: Path, spec: str = "image") -> dict[str, np.ndarray]:
    ws = Workspace(path)
    keys, rows = ws.read_set(ws.resolve_set(spec).id)
    return dict(zip(keys, rows))


def test_embed_reads_paths_from_stdin_one_a_line_or_nul_separated(cli, tmp_path, tiny_open_clip, stdin):
    digits = write_digits(tmp_path / "digits", 6)
    odd = digits / "5" / "with space\nand newline.png"  # only -0 can carry this name
    odd.write_bytes(png_bytes((10, 200, 10)))
    files = sorted(p for p in digits.rglob("*.png") if p != odd)
    model = ("--model", str(tiny_open_clip), "--workers", "1")

    assert cli("embed", str(digits), *model, cache=tmp_path / "folder.h5").code == 0
    stdin("\n".join(map(str, files)) + "\n\n")
    piped = cli("embed", "-", *model, "--json", cache=tmp_path / "lines.h5")
    assert piped.code == 0, piped.err
    assert piped.json()["found"] == len(files) == 6
    lines = stored_vectors(tmp_path / "lines.h5")
    folder = stored_vectors(tmp_path / "folder.h5")
    assert lines.keys() <= folder.keys() and all(np.array_equal(lines[k], folder[k]) for k in lines)

    stdin("\0".join(map(str, [*files, odd])) + "\0")
    nul = cli("embed", "-", "-0", *model, "--json", cache=tmp_path / "nul.h5")
    assert nul.code == 0, nul.err
    assert nul.json()["found"] == 7
    assert str(odd) in Workspace(tmp_path / "nul.h5").items().path


@pytest.mark.parametrize("args, text, needle", [
    (["embed", "-"], "", "no paths on stdin"),
    (["embed", "-", "-"], "a.png\n", "'-' (paths from stdin) can be given only once"),
    (["embed", "x.png", "-0"], "", "-0 says how paths on stdin are separated"),
    (["embed", "-"], "does/not/exist.png\n", "no such file or folder: does/not/exist.png"),
    (["describe", "--from", "-"], "  \n", "no descriptions on stdin"),
    (["describe", "--from", "-", "--format", "xml"], "{}", "--format xml: expected one of jsonl, json, csv, tsv"),
    (["describe", "--format", "csv", "--vlm", "x"], "", "--format says how the --from file is written"),
    (["describe", "--from", "-"], '{"text": "a"}\n{"text": \n', "stdin:2: invalid JSON"),
])
def test_bad_stdin_is_one_line_exit_2(cli, stdin, args, text, needle):
    stdin(text)
    result = cli(*args)
    assert result.code == 2
    assert needle in one_error_line(result)


@pytest.mark.parametrize("args", [["embed", "-"], ["describe", "--from", "-"]])
def test_a_terminal_on_stdin_is_refused_not_waited_on(cli, monkeypatch, args):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    result = cli(*args)
    assert result.code == 2 and "but stdin is a terminal; pipe them in" in one_error_line(result)


def test_describe_reads_image_paths_from_stdin(cli, tmp_path, tiny_vlm_dir, stdin):
    digits = write_digits(tmp_path / "digits", 3)
    stdin("\n".join(str(p) for p in sorted(digits.rglob("*.png"))) + "\n")
    result = cli("describe", "-", "--vlm", str(tiny_vlm_dir), "--criterion", "digit", "--max-tokens", "2",
                 "--device", "cpu", "--json")
    assert result.code == 0, result.err
    assert (result.json()["n_items"], result.json()["described"]) == (3, 3)


def test_describe_from_stdin_sniffs_jsonl_and_takes_csv_with_format(cli, tmp_path, stdin, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_digits(tmp_path / "digits", 2)
    image = sorted((tmp_path / "digits").rglob("*.png"))[0]
    records = [{"text": "a round zero", "path": str(image.relative_to(tmp_path))}, {"text": "words only", "path": None}]
    stdin("".join(json.dumps(r) + "\n" for r in records))
    result = cli("describe", "--from", "-", "--path-field", "path", "--json")
    assert result.code == 0, result.err
    summary = result.json()
    assert (summary["matched"], summary["text_only"], summary["set"]) == (1, 1, "description:import-stdin")
    assert str(image) in Workspace(tmp_path / "ws.h5").items().path  # relative paths: from the working directory

    stdin("caption;kind\n".replace(";", "\t") + "a thin one\tdigit\n")
    tsv = cli("describe", "--from", "-", "--format", "tsv", "--text-field", "caption", "--label-field", "kind",
              "--json")
    assert tsv.code == 0, tsv.err
    assert tsv.json()["text_only"] == 1
    items = Workspace(tmp_path / "ws.h5").items()
    assert items.label[items.sha256.index(text_item_sha256("a thin one"))] == "digit"

    named = tmp_path / "descriptions.txt"  # a suffix that says nothing: --format says it
    named.write_text("text\nfrom a file\n")
    assert cli("describe", "--from", str(named), "--format", "csv", "--json").json()["new_rows"] == 1


def test_export_descriptions_and_vector_sets(cli, tmp_path, stdin):
    ws, keys, X, y = blob_workspace(tmp_path / "ws.h5", n_per_class=3, n_classes=2, split="train")
    stdin(json.dumps({"text": "a, \"quoted\" description"}) + "\n")
    assert cli("describe", "--from", "-").code == 0

    rows = list(csv.DictReader(io.StringIO(cli("export", "--set", "description:import-stdin").out)))
    assert rows == [{"key": text_item_sha256('a, "quoted" description'), "path": "", "label": "", "split": "",
                     "text": 'a, "quoted" description'}]

    table = list(csv.DictReader(io.StringIO(cli("export", "--set", "image").out)))
    assert [r["key"] for r in table] == keys and {r["split"] for r in table} == {"train"}
    from_csv = np.array([[np.float32(r[f"v{j}"]) for j in range(X.shape[1])] for r in table], dtype=np.float32)
    assert np.array_equal(from_csv, X)  # 9 significant digits: the same float32 back

    lines = cli("export", "--set", "image", "--json").out.splitlines()
    assert [json.loads(line)["key"] for line in lines] == keys
    assert np.array_equal(np.array([json.loads(line)["vector"] for line in lines], dtype=np.float32), X)

    result = cli("export", "--set", "image", "--format", "npy", "-o", str(tmp_path / "image.npy"))
    assert result.code == 0, result.err
    assert result.out.startswith(f"{tmp_path / 'image.npy'}: 6 x 8 float32 of 'image'")
    assert np.array_equal(np.load(tmp_path / "image.npy"), X)
    with open(tmp_path / "image.keys.csv", newline="") as fh:
        assert [r["key"] for r in csv.DictReader(fh)] == keys

    from clipclust.commands.export import export_set  # blocks smaller than the set: the same files, read piece by piece

    streamed = io.StringIO()
    assert export_set(ws, "image", "csv", stream=streamed, chunk=4).rows == 6
    assert streamed.getvalue() == cli("export", "--set", "image").out
    export_set(ws, "image", "npy", out=tmp_path / "blocks", chunk=4)
    assert np.array_equal(np.load(tmp_path / "blocks.npy"), X)


@pytest.mark.parametrize("args, needle", [
    (["export", "--set", "description", "--format", "npy", "-o", "d.npy"], "holds text; export it as csv or jsonl"),
    (["export", "--set", "image", "--format", "npy"], "npy is binary: name the output file"),
    (["export", "--set", "nothing", "-o", "out.csv"], "no stored set matches 'nothing'"),
    (["export", "kmeans", "--set", "image"], "not both"),
    (["export", "--format", "npy"], "npy is for vector sets"),
])
def test_bad_exports_are_one_line_exit_2(cli, tmp_path, stdin, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    blob_workspace(tmp_path / "ws.h5", n_per_class=2, n_classes=2)
    stdin('{"text": "t"}\n')
    assert cli("describe", "--from", "-").code == 0
    result = cli(*args)
    assert result.code == 2
    assert needle in one_error_line(result)
    assert not (tmp_path / "out.csv").exists()
