"""--model as open_clip names models (local-dir:, hf-hub:), and honest failure when the hub cannot be used."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from clipclust.store import Workspace
from clipclust.errors import InputError
from clipclust.models.clip import load_clip, model_identity, parse_model_spec

from ..cli.conftest import one_error_line
from ..conftest import write_digits

HUB_REPO = "clipclust-test/tiny-open-clip"


def hub_cache(root: Path, model_dir: Path) -> Path:
    """A Hugging Face cache holding the tiny open_clip model as if downloaded from HUB_REPO."""
    revision = "0" * 40
    repo = root / ("models--" + HUB_REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name in ("open_clip_config.json", "open_clip_pytorch_model.bin"):
        shutil.copyfile(model_dir / name, snapshot / name)
    return root


def image_vectors(ws_path: Path) -> dict[str, np.ndarray]:
    ws = Workspace(ws_path)
    image = ws.resolve_set("image")
    keys, rows = ws.read_set(image.id)
    return dict(zip(keys, rows))


def test_local_dir_is_the_same_model_as_the_plain_folder(tiny_open_clip, tmp_path):
    plain, prefixed = parse_model_spec(str(tiny_open_clip)), parse_model_spec(f"local-dir:{tiny_open_clip}")
    assert prefixed.backend == "open_clip" and prefixed.path == plain.path
    assert model_identity(prefixed) == model_identity(plain)
    with pytest.raises(InputError, match="is not a folder with open_clip_config.json"):
        parse_model_spec(f"local-dir:{tmp_path}")
    with pytest.raises(InputError, match="name the hub repository"):
        parse_model_spec("hf-hub:")


def test_embed_with_local_dir_reuses_what_the_folder_computed(cli, tiny_open_clip, tmp_path):
    images = write_digits(tmp_path / "digits", 6)
    first = cli("embed", str(images), "--model", str(tiny_open_clip), "--workers", "1", "--json")
    assert first.code == 0, first.err
    again = cli("embed", str(images), "--model", f"local-dir:{tiny_open_clip}", "--workers", "1", "--json")
    assert again.code == 0, again.err
    assert (again.json()["new"], again.json()["cached"]) == (0, 6)
    other = cli("embed", str(images), "--model", f"local-dir:{tiny_open_clip}", "--workers", "1",
                "--cache", str(tmp_path / "other.h5"), "--json")
    assert other.json()["new"] == 6
    mine, theirs = image_vectors(tmp_path / "ws.h5"), image_vectors(tmp_path / "other.h5")
    assert mine.keys() == theirs.keys() and all(np.allclose(mine[k], theirs[k], atol=1e-6) for k in mine)


def test_hf_hub_model_loads_from_the_local_cache_offline(tiny_open_clip, tmp_path, monkeypatch, single_thread):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache(tmp_path / "hub", tiny_open_clip)))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub = load_clip(f"hf-hub:{HUB_REPO}", device="cpu")
    local = load_clip(str(tiny_open_clip), device="cpu")
    assert hub.identity == f"hf-hub:{HUB_REPO}"
    texts = ["a photo of a cat", "digit 3"]
    assert np.allclose(hub.encode_texts(texts), local.encode_texts(texts), atol=1e-6)


@pytest.fixture()
def no_network(monkeypatch):
    """Count connection attempts and refuse them all."""
    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_hf_hub_offline_fails_at_once_with_one_line(cli, tmp_path, monkeypatch, no_network):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    images = write_digits(tmp_path / "digits", 2)
    result = cli("embed", str(images), "--model", "hf-hub:nobody/missing", "--workers", "1")
    assert result.code == 2 and result.out == ""
    line = one_error_line(result)
    assert ("could not load model 'hf-hub:nobody/missing': it is not in the local cache and cannot be downloaded "
            "(HF_HUB_OFFLINE is set)") in line
    assert no_network == []  # HF_HUB_OFFLINE is respected: not even the reachability probe


def test_unreachable_hub_fails_fast_for_the_default_model(cli, tmp_path, monkeypatch, no_network, caplog):
    """The issue's case: no HF_HUB_OFFLINE, no network, the default model; one probe, one line, no retries."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    images = write_digits(tmp_path / "digits", 2)
    result = cli("embed", str(images), "--workers", "1")
    assert result.code == 2
    line = one_error_line(result)  # huggingface_hub's retry warnings and open_clip's log lines stay hidden
    assert ("could not load model 'ViT-B-32/laion2b_s34b_b79k': it is not in the local cache and cannot be "
            "downloaded (huggingface.co cannot be reached") in line
    assert len(no_network) == 1 and no_network[0][0] == "huggingface.co"  # the probe, and nothing retried
    assert "Failed to download" not in caplog.text  # open_clip's own log record did not get out

    debug = cli("--debug", "embed", str(images), "--workers", "1")
    assert debug.code == 2 and "Failed to download" in caplog.text  # --debug lets the libraries speak
