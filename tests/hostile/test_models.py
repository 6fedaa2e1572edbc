"""Hostile model servers and broken models: a server that hangs, is unreachable, answers garbage, fails once,
drops the connection, answers too much or nothing; a CLIP model that outputs NaN; a layer that does not
exist; fine-tuning without naming the model; llama.cpp's leftover file handles.

Every case runs the CLI and holds it to the promise (tests/hostile/conftest.py): the exit code, the exact
stderr lines (no traceback), and a workspace that still passes `check` with nothing lost.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from .cases import (DROP, HANG, Hostile, blackhole, ictc_llm, refused_url, server, set_rows,  # noqa: F401
                    template, ws)

DESCRIBE = ("describe", "--criterion", "shape")
ICTC = ("cluster", "--method", "ictc", "-c", "shape", "-k", "2", "--names", "llm", "--assign", "label")


@pytest.fixture(autouse=True)
def _private_hash_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Model-file hashes are memoised in a file; keep it out of the user's cache directory."""
    monkeypatch.setenv("CLIPCLUST_HASH_MEMO", str(tmp_path / "hashes.json"))


def answer(text: str):
    return lambda n, body: text


@pytest.fixture()
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The client's waits between tries, recorded instead of slept."""
    waits: list[int] = []
    monkeypatch.setattr("clipclust.models.llm.client._pause", waits.append)
    return waits


# -- a server that never answers, or cannot be reached


def test_describe_gives_up_on_a_server_that_never_answers_after_the_timeout_with_a_notice(ws: Hostile, server):
    srv = server(lambda n, body: HANG)
    before = ws.snapshot()
    ws.run(*DESCRIBE, "--vlm", srv.url, "--timeout", "1", code=2, lines=2, guard=30,
           match=r"(?s)warning: .*has not answered for 0.5 s.*sent no answer within 1 s.*--timeout")
    assert srv.chats <= 4  # the requests in flight; none sent again after its timeout
    ws.intact(before, same=True)


def test_ictc_gives_up_on_a_server_that_never_answers_after_the_timeout(ws: Hostile, server):
    srv = server(lambda n, body: HANG)
    before = ws.snapshot()
    ws.run(*ICTC, "--llm", srv.url, "--timeout", "1", code=2, lines=2, guard=30,
           match=r"sent no answer within 1 s; .*allow longer with --timeout")
    assert srv.chats <= 4
    ws.intact(before, same=True)


def test_a_slow_server_that_answers_in_time_gets_a_notice_and_the_run_completes(ws: Hostile, server):
    import time

    srv = server(lambda n, body: (time.sleep(1.5), "a slow digit")[1])
    ws.run(*DESCRIBE, "--vlm", srv.url, "--timeout", "2", "--concurrency", "12", lines=1, guard=30,
           match="has not answered for 1 s; waiting up to 2 s")
    assert set_rows(ws, "description")["description:shape"] == 12


def test_describe_reports_a_host_that_never_accepts_the_connection_without_retrying(ws: Hostile, blackhole):
    before = ws.snapshot()
    ws.run(*DESCRIBE, "--vlm", blackhole, "--timeout", "1", code=2, guard=20,
           match=r"is not answering \(no connection within 1 s\)")
    ws.intact(before, same=True)


def test_ictc_reports_a_host_that_never_accepts_the_connection(ws: Hostile, blackhole):
    before = ws.snapshot()
    ws.run(*ICTC, "--llm", blackhole, "--timeout", "1", code=2, guard=20, match="no connection within 1 s")
    ws.intact(before, same=True)


@pytest.mark.parametrize("command", [DESCRIBE, ICTC], ids=["describe", "ictc"])
def test_nothing_listening_is_reported_at_once(ws: Hostile, command: tuple[str, ...]):
    before = ws.snapshot()
    flag = "--vlm" if command[0] == "describe" else "--llm"
    ws.run(*command, flag, refused_url(), code=2, guard=20, match="is not answering .*refused")
    ws.intact(before, same=True)


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf"])
def test_a_timeout_that_is_not_a_positive_number_is_refused(ws: Hostile, value: str):
    before = ws.snapshot()
    refused = r"Invalid value for '--timeout'|--timeout: -?[\d.]+: expected a number of seconds above 0"
    ws.run(*DESCRIBE, "--vlm", "http://127.0.0.1:9/v1", "--timeout", value, code=2, match=refused)
    ws.run(*ICTC, "--llm", "http://127.0.0.1:9/v1", "--timeout", value, code=2, match=refused)
    ws.intact(before, same=True)


# -- a server that answers wrongly


def test_describe_refuses_an_answer_that_is_not_json(ws: Hostile, server):
    srv = server(lambda n, body: (200, b"<html><body>502 Bad Gateway</body></html>"))
    before = ws.snapshot()
    ws.run(*DESCRIBE, "--vlm", srv.url, code=1, match="answered with something that is not JSON")
    ws.intact(before, same=True)


def test_describe_refuses_json_that_is_not_a_chat_completion(ws: Hostile, server):
    srv = server(lambda n, body: (200, {"result": "a digit"}))
    before = ws.snapshot()
    ws.run(*DESCRIBE, "--vlm", srv.url, code=1, match="answered without choices")
    ws.intact(before, same=True)


def test_ictc_refuses_an_answer_that_is_not_json(ws: Hostile, server):
    srv = server(lambda n, body: (200, b"{{{ not json"))
    before = ws.snapshot()
    ws.run(*ICTC, "--llm", srv.url, code=1, match="not JSON")
    ws.intact(before, same=True)


def test_a_model_listing_that_is_not_json_is_refused(ws: Hostile, server):
    srv = server(answer("a digit"), models=(200, b"<html>login</html>"))
    before = ws.snapshot()
    ws.run(*DESCRIBE, "--vlm", srv.url, code=1, match="/models answered with something that is not JSON")
    ws.intact(before, same=True)


def test_a_server_with_several_models_asks_which(ws: Hostile, server):
    srv = server(answer("a digit"), models=("llava", "qwen-vl"))
    before = ws.snapshot()
    ws.run(*DESCRIBE, "--vlm", srv.url, code=2, match=r"serves several models \(llava, qwen-vl\); pass one")
    ws.intact(before, same=True)


def test_a_refused_key_says_how_to_pass_one(ws: Hostile, server):
    srv = server(answer("a digit"), models=(401, {"error": {"message": "invalid api key"}}))
    before = ws.snapshot()
    ws.run(*DESCRIBE, "--vlm", srv.url, code=2, match="set OPENAI_API_KEY")
    ws.intact(before, same=True)


def test_a_prompt_too_long_for_the_context_says_what_to_change(ws: Hostile, server):
    srv = server(lambda n, body: (400, {"error": {"message": "the request exceeds the context length (n_ctx 512)"}}))
    before = ws.snapshot()
    ws.run(*DESCRIBE, "--vlm", srv.url, code=2, match="does not fit the context window")
    ws.intact(before, same=True)


def test_a_server_error_then_success_is_retried_and_the_run_completes(ws: Hostile, server):
    srv = server(lambda n, body: (500, {"error": {"message": "busy"}}) if n == 1 else "a digit")
    before = ws.snapshot()
    ws.run(*DESCRIBE, "--vlm", srv.url, "--concurrency", "1")
    assert srv.chats == 13 and set_rows(ws, "description")["description:shape"] == 12
    ws.intact(before)


def test_a_server_that_keeps_failing_is_reported_once_its_retries_are_spent(ws: Hostile, server, pauses):
    srv = server(lambda n, body: (503, {"error": {"message": "overloaded"}}))
    before = ws.snapshot()
    ws.run(*DESCRIBE, "--vlm", srv.url, "--concurrency", "1", code=1, guard=30, match="HTTP 503")
    assert srv.chats == 4 and pauses == [0, 1, 2]  # the first try and three retries, after a backoff each
    ws.intact(before, same=True)


def test_a_connection_dropped_mid_answer_is_retried(ws: Hostile, server):
    srv = server(lambda n, body: DROP if n == 1 else "a digit")
    before = ws.snapshot()
    ws.run(*DESCRIBE, "--vlm", srv.url, "--concurrency", "1")
    assert set_rows(ws, "description")["description:shape"] == 12
    ws.intact(before)


def test_a_server_that_always_drops_the_connection_is_reported(ws: Hostile, server, pauses):
    srv = server(lambda n, body: DROP)
    before = ws.snapshot()
    ws.run(*DESCRIBE, "--vlm", srv.url, "--concurrency", "1", code=2, guard=30, match="is not answering")
    assert srv.chats == 4 and pauses == [0, 1, 2]
    ws.intact(before, same=True)


def test_a_huge_answer_is_cut_and_said_once(ws: Hostile, server):
    srv = server(answer("digit " * 400_000))
    before = ws.snapshot()
    ws.run(*DESCRIBE, "--vlm", srv.url, "--max-tokens", "50", lines=1,
           match=r"sent an answer of 2,400,000 characters for at most 50 tokens; answers are cut at 4,096")
    from clipclust.store import Workspace

    w = Workspace(ws.ws)
    info = next(s for s in w.list_sets() if s.name == "description:shape")
    assert max(len(t) for t in w.read_set(info.id)[1]) == 4096
    ws.intact(before)


def test_empty_answers_are_neither_stored_nor_cached(ws: Hostile, server):
    srv = server(answer("   "))
    before = ws.snapshot()
    ws.run(*DESCRIBE, "--vlm", srv.url, code=1, match="answered all 12 requests with an empty text; nothing was stored")
    after = ws.intact(before, same=True)
    assert after.calls == before.calls


def test_some_empty_answers_are_counted_and_asked_again_next_time(ws: Hostile, server):
    empty = [True]
    srv = server(lambda n, body: "" if empty[0] and n % 3 == 0 else "a digit")
    before = ws.snapshot()
    result = ws.run(*DESCRIBE, "--vlm", srv.url, "--concurrency", "1", "--json", lines=1,
                    match="4 of the VLM's answers were empty: not stored, a re-run asks again")
    assert result.json()["empty"] == 4 and set_rows(ws, "description")["description:shape"] == 8
    empty[0], asked = False, srv.chats
    again = ws.run(*DESCRIBE, "--vlm", srv.url, "--json").json()
    assert (again["described"], again["cached"], again["empty"], srv.chats) == (4, 8, 0, asked + 4)
    assert set_rows(ws, "description")["description:shape"] == 12
    ws.intact(before)


def test_an_ictc_run_survives_a_server_error_and_reuses_every_answer_after(ws: Hostile, server):
    srv = server(lambda n, body: (500, {"error": {"message": "warming up"}}) if n == 1 else ictc_llm(n, body))
    before = ws.snapshot()
    result = ws.run(*ICTC, "--llm", srv.url, "--concurrency", "1", "--json", lines=ICTC_WARNINGS)
    assert result.json()["n_items"] == 12
    calls = srv.chats
    ws.run(*ICTC, "--llm", srv.url, "--force", "--json", lines=ICTC_WARNINGS)
    assert srv.chats == calls  # every answer came from the workspace
    ws.intact(before)


ICTC_WARNINGS = 0


# -- models that are broken


@pytest.fixture()
def nan_model(template, tmp_path: Path) -> Path:
    """A copy of the tiny CLIP whose projections are NaN: what a fine-tuning run that diverged would save."""
    import torch

    folder = shutil.copytree(template.model, tmp_path / "nan-clip")
    weights = folder / "open_clip_pytorch_model.bin"
    state = torch.load(weights)
    state["visual.proj"][:] = float("nan")
    state["text_projection"][:] = float("nan")
    torch.save(state, weights)
    return folder


def test_embed_refuses_a_model_that_outputs_nan_and_stores_nothing(ws: Hostile, nan_model: Path):
    before = ws.snapshot()
    ws.run("embed", str(ws.images), "-m", nan_model, "--device", "cpu", code=2,
           match=r"outputs NaN or inf for \d+ of \d+ (images|texts).*nothing it computed was stored")
    ws.intact(before, same=True)


def test_embed_refuses_nan_text_vectors_before_storing_any(ws: Hostile, nan_model: Path, tmp_path: Path):
    before = ws.snapshot()
    ws.run("embed", str(ws.images), "-m", nan_model, "--device", "cpu", "-p", "a drawing of <>", code=2,
           match=r"outputs NaN or inf for 10 of 10 texts")
    ws.intact(before, same=True)


def test_esmc_refuses_a_layer_the_model_lacks_before_loading_it(ws: Hostile, tiny_llm: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    import clipclust.models.hidden as hidden

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(hidden, "load_hidden_model", never)
    before = ws.snapshot()
    ws.run("cluster", "--method", "esmc", "--llm", tiny_llm, "-c", "shape", "-k", "2", "--layer", "999", code=2,
           match=r"--layer: 999: there is no such layer; .* has layers 0..2")
    ws.intact(before, same=True)


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer transformers Llama folder (random weights; its config is what the case reads)."""
    from transformers import LlamaConfig

    folder = tmp_path_factory.mktemp("tiny-llm")
    LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=2, max_position_embeddings=64).save_pretrained(folder)
    return folder


def test_finetune_without_a_model_takes_the_image_sets_model(ws: Hostile, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    from clipclust.commands.finetune import settings

    chosen: list[str] = []
    real = settings.base_model
    monkeypatch.setattr("clipclust.commands.finetune.train.base_model",
                        lambda *a, **k: chosen.append(real(*a, **k)) or chosen[-1])
    before = ws.snapshot()
    ws.run("finetune", "-o", tmp_path / "tuned", "--classes", "0,1,2,3,4,5,6,7,8,9", "--texts", "class",
           "--steps", "1", "--batch-size", "4", "--device", "cpu", "--workers", "0", "--quiet", "--json")
    assert chosen == [str(ws.model)]
    ws.intact(before)


def test_finetune_without_a_model_asks_which_when_the_images_were_embedded_with_several(
        ws: Hostile, tmp_path: Path, open_clip_encoder: Any):
    from clipclust.commands.embed import EmbedOptions, embed
    from clipclust.store import Workspace

    other = shutil.copytree(ws.model, tmp_path / "another-clip")
    (other / "note.txt").write_text("a copy is another model file set")
    embed(Workspace(ws.ws), [str(ws.images)], EmbedOptions(model=str(other)), encoder=_renamed(open_clip_encoder))
    before = ws.snapshot()
    ws.run("finetune", "-o", tmp_path / "tuned", "--classes", "0,1", code=2,
           match=r"--model: the workspace's images were embedded with 2 models \(.*another-clip.*\); name the one")
    ws.intact(before, same=True)


def _renamed(encoder: Any) -> Any:
    """The session's encoder under another identity (a second model, without loading one)."""
    import copy

    clone = copy.copy(encoder)
    clone.identity = "open_clip:another-clip@sha256:1111"
    return clone


def test_no_resource_warning_lines_after_llama_cpp_was_used(ws: Hostile, tmp_path: Path):
    """llama-cpp-python leaves two /dev/null files open from its import; the CLI's main() must leave no
    ResourceWarning line behind at the interpreter's exit, with Python's warnings shown (-W default)."""
    import os
    import subprocess

    from .conftest import Outcome, _package_root, assert_promise

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    before = ws.snapshot()
    argv = ["--cache", str(ws.ws), *ICTC, "--llm", str(broken)]
    code = f"import sys; from clipclust.cli.app import main; sys.exit(main({argv!r}))"
    env = {**os.environ, "PYTHONPATH": str(_package_root())}  # the checkout under test
    env.pop("CLIPCLUST_DEBUG", None)
    done = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert_promise(Outcome(done.returncode, done.stdout, done.stderr), 2, 1, match="could not load .*broken.gguf")
    ws.intact(before, same=True)
