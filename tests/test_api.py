"""The public face: docs/api.md's example runs as written (with a small model), and `import clipclust` is light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import clipclust as cc

from .conftest import write_digits

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_the_documented_example_runs(tmp_path, tiny_open_clip, monkeypatch, capsys):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    assert 'model="ViT-B-32/laion2b_s34b_b79k"' in code  # the real name stays in the doc
    write_digits(tmp_path / "digits", 40)
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("ViT-B-32/laion2b_s34b_b79k", str(tiny_open_clip)), str(DOC), "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "40 new, 0 cached"
    assert out[1].startswith("kmeans-image 10 clusters; sizes")
    assert [line.split()[0] for line in out[2:4]] == ["kmeans-image", "spectral-fused-label-this-is-digit"]
    assert all(0.0 <= float(line.split()[2]) <= 1.0 for line in out[2:4])
    assert out[4] == "path,sha256,label,split,cluster,cluster_name,predicted"
    assert out[5] == "40 items"


def test_results_are_dataclasses_with_to_dict(tmp_path, tiny_open_clip):
    images = write_digits(tmp_path / "d", 20)
    summary = cc.embed(tmp_path / "w.h5", images, model=str(tiny_open_clip))
    clustering = cc.cluster(tmp_path / "w.h5", k=3)
    assert summary.to_dict()["new"] == 20 and clustering.to_dict()["n_clusters"] == 3
    assert cc.check(tmp_path / "w.h5").to_dict()["ok"] is True


def test_errors_name_python_settings_not_flags(tmp_path, tiny_open_clip):
    images = write_digits(tmp_path / "d", 4)
    with pytest.raises(cc.InputError) as caught:
        cc.embed(tmp_path / "w.h5", images, model=str(tiny_open_clip), batch_size=0)
    assert caught.value.option == "batch_size" and "--" not in str(caught.value)
    with pytest.raises(AttributeError):
        cc.no_such_thing  # noqa: B018


def test_import_clipclust_loads_no_model_library():
    code = "import sys, clipclust; clipclust.Workspace; print(sorted(m for m in ('torch', 'open_clip', 'sklearn', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
