"""Deterministic fault injection: the writer SIGKILLs itself at its Nth low-level write step, for every N.

Each job (an embed, a describe, an IC|TC run, a clustering replace) is run once to count its write steps,
then once per step in a forked child that tears that write in half and kills itself.  After every kill
the workspace must pass ``check`` and a re-run must finish with every item stored exactly once.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from clipclust.commands.describe.describing import describe_items
from clipclust.commands.embed.embedding import EmbedOptions, embed
from clipclust.methods.ictc import run_ictc
from clipclust.models.llm import CachedGenerator
from clipclust.store import Workspace, journal
from clipclust.store.check import check_workspace

from ..conftest import write_digits
from ..methods.test_ictc import Scripted
from ..commands.test_describe import SizeDescriber

Job = Callable[[Path], None]


def _steps_of(job: Job, base: Path, work: Path) -> int:
    shutil.copyfile(base, work) if base.exists() else None
    before = journal.write_steps()
    job(work)
    return journal.write_steps() - before


def _kill_at(job: Job, work: Path, step: int) -> None:
    """Run ``job`` in a forked child that kills itself at its ``step``-th write step."""
    target = journal.write_steps() + step
    pid = os.fork()
    if pid == 0:  # the child: no pytest teardown, no flushing of the parent's buffers
        try:
            os.environ["CLIPCLUST_FAULT_AT"] = str(target)
            job(work)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"step {step} was never reached"


def _all_steps(job: Job, base: Path, tmp: Path, verify: Callable[[Workspace], None]) -> int:
    work = tmp / "ws.h5"
    steps = _steps_of(job, base, work)
    verify(Workspace(work))
    assert steps > 5
    for step in range(1, steps + 1):
        for leftover in (work, journal.journal_path(work)):
            leftover.unlink(missing_ok=True)
        if base.exists():
            shutil.copyfile(base, work)
        _kill_at(job, work, step)
        report = check_workspace(work)
        assert report.ok, f"after a kill at write step {step}/{steps}: {report.verdict()}"
        job(work)  # the re-run completes the job
        verify(Workspace(work))
    return steps


def _once_each(ws: Workspace, kind: str, n: int) -> None:
    for info in ws.list_sets():
        if info.kind == kind:
            keys, _ = ws.read_set(info.id)
            assert len(keys) == len(set(keys)) == n, (kind, len(keys))
            return
    raise AssertionError(f"no {kind} set")


@pytest.fixture()
def no_fault(monkeypatch):
    monkeypatch.delenv("CLIPCLUST_FAULT_AT", raising=False)


def test_kill_at_every_write_step_of_an_embed(tmp_path, open_clip_encoder, no_fault, single_thread):
    images = write_digits(tmp_path / "d", 5)
    opts = EmbedOptions(prompts=["digit <>"], fuse=["label"], batch_size=2, workers=1, device="cpu")

    def job(ws_path: Path) -> None:
        embed(Workspace(ws_path), [str(images)], opts, encoder=open_clip_encoder)

    def verify(ws: Workspace) -> None:
        assert len(ws.items()) == 5 and len(set(ws.items().sha256)) == 5
        _once_each(ws, "image", 5)
        _once_each(ws, "fused-label", 5)

    assert _all_steps(job, tmp_path / "none.h5", tmp_path, verify) > 10


def test_kill_at_every_write_step_of_a_describe(tmp_path, no_fault):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (10 + i, 8), (i * 40, 0, 0)).save(images / f"{i}.png")

    def job(ws_path: Path) -> None:
        describe_items(Workspace(ws_path), [str(images)], describer=SizeDescriber(), criterion="colour")

    def verify(ws: Workspace) -> None:
        _once_each(ws, "description", 3)
        assert ws.count_calls() == 3

    _all_steps(job, tmp_path / "none.h5", tmp_path, verify)


def test_kill_at_every_write_step_of_an_ictc_run_and_a_clustering_replace(tmp_path, no_fault):
    texts = ["a dog", "a cat", "a dog again"]
    base = tmp_path / "base.h5"
    Workspace(base).save_clustering("c", keys=["0" * 64], ids=np.array([0]), params={"old": True})

    def job(ws_path: Path) -> None:
        ws = Workspace(ws_path)
        gen = CachedGenerator(Scripted(lambda r: "Answer: cat" if "a cat" in str(r) else "Answer: dog"), ws)
        result = run_ictc(gen, texts, "animal", 2, names=["cat", "dog"])
        ws.save_clustering("c", keys=[f"{i:064x}" for i in range(3)], ids=np.array(result.cluster_ids),
                           params={"names": result.names}, cluster_names=result.names)

    def verify(ws: Workspace) -> None:
        c = ws.read_clustering("c")
        assert c["params"] == {"names": ["cat", "dog"]} and list(c["ids"]) == [1, 0, 1]
        assert ws.count_calls() == 3 and ws.list_clusterings() == ["c"]

    _all_steps(job, base, tmp_path, verify)
