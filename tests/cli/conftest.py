"""Fixtures for the cluster / evaluate / visualize / export command tests.

``digits_ws`` is a workspace embedded once per session by the tiny open_clip model (40 training digits fused
with their label's prompt, 30 test digits fused with every prompt) and copied for each test, so that every
test starts from real `embed` output without paying for the embedding again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ..conftest import write_digits
from ..workspaces import one_thread

PROMPT = "This is digit <>"


@pytest.fixture(scope="session")
def digits_template(tmp_path_factory: pytest.TempPathFactory, open_clip_encoder) -> Path:
    from clipclust.store import Workspace
    from clipclust.commands.embed.embedding import EmbedOptions, embed

    root = tmp_path_factory.mktemp("digits-ws")
    train = write_digits(root / "train", 40)
    test = write_digits(root / "test", 30, offset=40)
    ws = Workspace(root / "template.h5")
    with one_thread():
        embed(ws, [str(train)], EmbedOptions(prompts=[PROMPT], fuse=("label",), split="train"), encoder=open_clip_encoder)
        embed(ws, [str(test)], EmbedOptions(prompts=[PROMPT], fuse=("all",), split="test"), encoder=open_clip_encoder)
    return ws.path


@pytest.fixture()
def digits_ws(tmp_path: Path, digits_template: Path) -> Path:
    """A fresh copy of the embedded digits at the path the ``cli`` fixture uses by default."""
    target = tmp_path / "ws.h5"
    shutil.copyfile(digits_template, target)
    return target


def one_error_line(result) -> str:
    """The single stderr line of a failed command (asserting there is exactly one)."""
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("clipclust: error: "), lines[0]
    return lines[0]
