"""The hostile-input harness: run a command as a user would and hold it to clipclust's promise.

The promise, for every case: the exit code is the one expected (0 done, 2 bad input, 1 runtime); stderr
holds exactly the expected number of lines (one ``clipclust: error: ...`` line for a failure, one
``warning: ...`` line per thing a successful run skipped or changed, none for a clean run), never a
traceback nor an "internal error"; and the workspace still passes ``check`` with nothing it held lost.

``hostile`` runs the CLI in-process (``hostile.run``), or as a subprocess where a hang or a signal is the
point (``hostile.spawn``, killed and failed after ``timeout`` seconds).  ``hostile.snapshot()`` and
``hostile.intact(before)`` compare the workspace before and after.  ``embedded`` / ``clustered`` give a
workspace of 12 digit images in class folders embedded by the session's tiny CLIP (and clustered).

Read-only paths and full disks: CI runs as root, where mode bits stop nothing.  :func:`read_only` uses a
read-only bind mount where the machine allows one (``mount --bind`` then ``remount,ro,bind``), else it
injects EROFS into the Python calls that open for writing (``os.open``, ``open``, ``os.replace``, ...);
:func:`small_disk` mounts a small tmpfs (ENOSPC) where it can, else lowers RLIMIT_FSIZE (EFBIG).
Each says which it used (``mode``), and ``HOSTILE_NO_MOUNT=1`` forces the fallbacks.

``HOSTILE_RECORD=FILE`` appends one JSON line per command run (test, arguments, exit code, stderr lines)
before anything is asserted: the before/after table of issue 17 is made by running this suite once
against another checkout (``PYTHONPATH=/other/checkout``) and once against this one.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import functools
import io
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ..conftest import write_digits

ERROR = "clipclust: error: "
WARNING = "warning: "
HINTS = ("see it: ",)  # a successful command's next step on stderr (cluster's report hint): not counted
N_IMAGES = 12  # digits 0-9, two each of 0 and 1: ten class folders
PROMPT = "a photo of the digit <>"


@dataclass
class Outcome:
    """What one command did: exit code, stdout, and its stderr lines (blank lines dropped)."""

    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        """The stderr lines that report something (errors, warnings), next-step hints left out."""
        return [line for line in self.hints_and_lines if not line.startswith(HINTS)]

    @property
    def hints_and_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    @property
    def line(self) -> str:
        """The one stderr line (after the promise was asserted)."""
        return self.lines[0] if self.lines else ""

    def json(self) -> Any:
        return json.loads(self.out)


def assert_promise(result: Outcome, code: int, lines: int, match: str | None = None) -> None:
    """Exit code, exactly ``lines`` stderr lines, none a traceback or an internal error, each a known kind."""
    shown = f"exit {result.code}\n--- stderr ---\n{result.err}--- stdout ---\n{result.out[-2000:]}"
    assert "Traceback (most recent call last)" not in result.err, shown
    assert "internal error" not in result.err, shown
    assert result.code == code, shown
    assert len(result.lines) == lines, shown
    assert result.code == 0 or len(result.hints_and_lines) == lines, shown  # no hint after a failure
    for line in result.lines:
        assert line.startswith((ERROR, WARNING)), shown
    if code != 0 and result.lines:  # (check's verdict on a broken file goes to stdout, with exit 1)
        assert result.lines[-1].startswith(ERROR), shown
    if match is not None:
        assert re.search(match, result.err), f"stderr does not match {match!r}\n{shown}"


# -- the workspace before and after


@dataclass(frozen=True)
class Snapshot:
    """What a workspace holds, to tell that nothing was lost or silently changed."""

    items: dict[str, tuple[str, str, str]]  # sha256 -> (path, label, split)
    sets: dict[str, frozenset[str]]  # set id -> its keys
    clusterings: frozenset[str]
    calls: int


def snapshot(cache: Path) -> Snapshot:
    from clipclust.store import Workspace

    ws = Workspace(cache)
    if not ws.exists():
        return Snapshot({}, {}, frozenset(), 0)
    items = ws.items()
    return Snapshot(
        items={s: (p, lab, sp) for s, p, lab, sp in zip(items.sha256, items.path, items.label, items.split)},
        sets={info.id: frozenset(ws.set_keys(info.id)) for info in ws.list_sets()},
        clusterings=frozenset(ws.list_clusterings()),
        calls=ws.count_calls(),
    )


def assert_nothing_lost(before: Snapshot, after: Snapshot, same: bool = False, changed: set[str] = frozenset()) -> None:
    """Every item, set row, clustering and cached call of ``before`` is in ``after``; items keep their path,
    label and split (but those in ``changed``); with ``same`` nothing was added either."""
    if same:
        assert after == before, "the workspace changed"
        return
    lost_items = set(before.items) - set(after.items)
    assert not lost_items, f"{len(lost_items)} items lost"
    moved = {s for s, row in before.items.items() if s not in changed and after.items[s] != row}
    assert not moved, f"items changed silently: {[(before.items[s], after.items[s]) for s in sorted(moved)][:3]}"
    for set_id, keys in before.sets.items():
        assert set_id in after.sets, f"set {set_id} lost"
        assert keys <= after.sets[set_id], f"set {set_id} lost {len(keys - after.sets[set_id])} rows"
    assert before.clusterings <= after.clusterings, f"clusterings lost: {before.clusterings - after.clusterings}"
    assert after.calls >= before.calls, "cached calls lost"


# -- running the CLI


def _package_root() -> Path:
    """The checkout whose clipclust is imported (PYTHONPATH decides): subprocesses run the same code."""
    import clipclust

    return Path(clipclust.__file__).resolve().parents[1]


class Hostile:
    """Runs commands against ``ws`` (default workspace) and asserts the promise on each."""

    def __init__(self, request: pytest.FixtureRequest, tmp: Path, capsys: pytest.CaptureFixture[bytes],
                 monkeypatch: pytest.MonkeyPatch) -> None:
        """``capsys`` is pytest's capsysbinary: a file name that is not UTF-8 reaches stdout as its bytes."""
        self.request, self.tmp, self.capsys, self.monkeypatch = request, tmp, capsys, monkeypatch
        self.ws = tmp / "ws.h5"
        self.model: Path | None = None  # the tiny CLIP the fixtures embedded with, for -m
        self.images: Path | None = None  # their image folder (class folders 0..9)

    # in-process

    def run(self, *args: Any, code: int = 0, lines: int | None = None, match: str | None = None,
            cache: Path | str | None = None, stdin: str | bytes | None = None, guard: float = 120.0) -> Outcome:
        """`clipclust --cache CACHE ARGS` in this process; ``lines`` defaults to 1 on failure, 0 on success.

        ``cache=""`` passes an empty --cache; ``guard`` fails the test when the command runs longer (a hang in
        the main thread; a hang in a worker thread needs :meth:`spawn`).
        """
        from clipclust.cli.app import main

        argv = ["--cache", str(self.ws if cache is None else cache), *map(str, args)]
        if stdin is not None:
            data = stdin.encode("utf-8", "surrogateescape") if isinstance(stdin, str) else stdin
            self.monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
        self.capsys.readouterr()
        with _alarm(guard, argv):
            code_got = main(argv)
        captured = self.capsys.readouterr()
        result = Outcome(code_got, captured.out.decode("utf-8", "replace"), captured.err.decode("utf-8", "replace"))
        return self._judge(argv, result, code, lines, match, "in-process")

    # as a subprocess

    def spawn(self, *args: Any, code: int = 0, lines: int | None = None, match: str | None = None,
              cache: Path | str | None = None, stdin: str | bytes | None = None, timeout: float = 60.0,
              env: dict[str, str] | None = None, preexec: Callable[[], None] | None = None) -> Outcome:
        """`python -m clipclust --cache CACHE ARGS` in its own process group; a run past ``timeout`` is a hang:
        the group is killed and the test fails."""
        argv = ["--cache", str(self.ws if cache is None else cache), *map(str, args)]
        full_env = {**os.environ, "PYTHONPATH": str(_package_root()), **(env or {})}
        full_env.pop("CLIPCLUST_DEBUG", None)
        proc = subprocess.Popen([sys.executable, "-m", "clipclust", *argv], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                                start_new_session=True, preexec_fn=preexec)
        data = stdin.encode("utf-8", "surrogateescape") if isinstance(stdin, str) else stdin
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            self._record(argv, None, err.decode(errors="replace"), "subprocess", (code, lines))
            pytest.fail(f"clipclust {' '.join(argv)} hung: killed after {timeout:g}s\n{err.decode(errors='replace')}")
        result = Outcome(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
        return self._judge(argv, result, code, lines, match, "subprocess")

    def _judge(self, argv: list[str], result: Outcome, code: int, lines: int | None, match: str | None,
               how: str) -> Outcome:
        lines = (1 if code else 0) if lines is None else lines
        self._record(argv, result.code, result.err, how, (code, lines))
        assert_promise(result, code, lines, match)
        return result

    def _record(self, argv: list[str], code: int | None, err: str, how: str, expected: tuple[int, int | None]) -> None:
        target = os.environ.get("HOSTILE_RECORD")
        if not target:
            return
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith(HINTS)]
        entry = {"test": self.request.node.nodeid, "argv": [str(a) for a in argv[2:]], "cache": argv[1],
                 "how": how, "code": code,
                 "lines": len(lines), "traceback": "Traceback (most recent" in err, "expected": list(expected),
                 "first": lines[0][:300] if lines else "", "last": lines[-1][:300] if lines else ""}
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    # the workspace

    def snapshot(self, cache: Path | None = None) -> Snapshot:
        return snapshot(cache or self.ws)

    def intact(self, before: Snapshot, cache: Path | None = None, same: bool = False,
               changed: set[str] = frozenset()) -> Snapshot:
        """`check` says ok (exit 0, no stderr) and nothing of ``before`` was lost; returns the new snapshot."""
        cache = cache or self.ws
        result = self.run("check", cache=cache)
        assert re.match(r"\S.*: ok \(", result.out), result.out
        after = snapshot(cache)
        assert_nothing_lost(before, after, same=same, changed=changed)
        return after


@contextlib.contextmanager
def _alarm(seconds: float, argv: list[str]) -> Iterator[None]:
    """Fail a command that hangs in the main thread (SIGALRM interrupts its waits)."""
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def hung(signum: int, frame: Any) -> None:
        raise TimeoutError(f"clipclust {' '.join(argv)} still running after {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture()
def hostile(request: pytest.FixtureRequest, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes],
            monkeypatch: pytest.MonkeyPatch) -> Hostile:
    return Hostile(request, tmp_path, capsysbinary, monkeypatch)


# -- workspaces to be hostile to


def write_images(folder: Path, n: int = N_IMAGES) -> Path:
    """``n`` digit images in class folders folder/<digit>/<i>.png (24x24 greyscale PNG)."""
    return write_digits(folder, n)


@pytest.fixture()
def embedded(hostile: Hostile, tiny_open_clip: Path, open_clip_encoder) -> Hostile:
    """``hostile`` with 12 digit images in tmp/images embedded into its workspace (with the prompt set
    PROMPT and the fused-label set), by the tiny CLIP the CLI loads with ``-m hostile.model``."""
    from clipclust.commands.embed import EmbedOptions, embed
    from clipclust.store import Workspace

    from ..workspaces import one_thread

    hostile.model = tiny_open_clip
    hostile.images = write_images(hostile.tmp / "images")
    with one_thread():
        embed(Workspace(hostile.ws), [str(hostile.images)], EmbedOptions(model=str(tiny_open_clip), prompts=[PROMPT],
              fuse=("label",)), encoder=open_clip_encoder)
    return hostile


@pytest.fixture()
def shared_encoder(monkeypatch: pytest.MonkeyPatch, tiny_open_clip: Path, open_clip_encoder) -> None:
    """`embed -m TINY` in this process takes the session's loaded tiny CLIP instead of loading it again (a
    speed-up for cases about files, not models; any other model loads as usual)."""
    import clipclust.commands.embed.embedding as embedding

    real = embedding.load_clip

    def load(model: str, *args: Any, **kwargs: Any) -> Any:
        return open_clip_encoder if model == str(tiny_open_clip) else real(model, *args, **kwargs)

    monkeypatch.setattr(embedding, "load_clip", load)


@pytest.fixture()
def clustered(embedded: Hostile) -> Hostile:
    """``embedded`` with a k-means clustering of the image set into 3 clusters, stored as 'km'."""
    from ..workspaces import one_thread

    with one_thread():
        embedded.run("cluster", "-k", "3", "--name", "km")
    return embedded


# -- read-only paths and small disks


def _mount_works() -> bool:
    return os.environ.get("HOSTILE_NO_MOUNT", "") in ("", "0") and hasattr(os, "geteuid") and os.geteuid() == 0 \
        and shutil.which("mount") is not None


def _sh(*cmd: str) -> bool:
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def _unmount(path: Path) -> None:
    if not _sh("umount", str(path)):
        _sh("umount", "-l", str(path))


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


@contextlib.contextmanager
def read_only(path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``path`` (a folder or a file) read-only while inside; yields the mode used: "mount" or "inject".

    "mount": a read-only bind mount of the path onto itself, so every writer, HDF5's C code included,
    meets EROFS.  "inject": EROFS raised by the Python calls that write (``os.open`` with a write flag,
    ``open`` in a write mode, ``os.replace``/``rename``/``unlink``/``mkdir``/``truncate``) for paths under
    ``path``; clipclust opens the workspace for writing through ``os.open``, so it is covered.
    """
    path = Path(path).resolve()
    if can_mount() and _sh("mount", "--bind", str(path), str(path)):
        try:
            if not _sh("mount", "-o", "remount,ro,bind", str(path)):
                raise OSError("remount ro failed")
        except OSError:
            _unmount(path)
        else:
            try:
                yield "mount"
            finally:
                _unmount(path)
            return
    with _injected_erofs(path, monkeypatch):
        yield "inject"


def _under(root: Path, target: Any) -> bool:
    if isinstance(target, int):
        return False
    try:
        p = Path(os.fsdecode(target))
        p = p if p.is_absolute() else Path.cwd() / p
        p = Path(os.path.normpath(p))
    except (TypeError, ValueError):
        return False
    return p == root or root in p.parents


def _erofs(target: Any) -> OSError:
    return OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(target))


@contextlib.contextmanager
def _injected_erofs(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_open, real_os_open = builtins.open, os.open

    def os_open(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & _WRITE_FLAGS and _under(root, file):
            raise _erofs(file)
        return real_os_open(file, flags, *args, **kwargs)

    def py_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax+") and _under(root, file):
            raise _erofs(file)
        return real_open(file, mode, *args, **kwargs)

    def refuse(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            for a in args[:2]:
                if _under(root, a):
                    raise _erofs(a)
            return real(*args, **kwargs)
        return call

    with monkeypatch.context() as m:
        m.setattr(os, "open", os_open)
        m.setattr(builtins, "open", py_open)
        m.setattr(io, "open", py_open)
        for name in ("replace", "rename", "unlink", "remove", "mkdir", "truncate", "rmdir"):
            m.setattr(os, name, refuse(getattr(os, name)))
        yield


@functools.lru_cache(maxsize=None)
def can_mount() -> bool:
    """Whether this machine lets the tests mount (root with the capability, and not HOSTILE_NO_MOUNT=1)."""
    if not _mount_works():
        return False
    probe = Path(tempfile.mkdtemp(prefix="hostile-mount-"))
    try:
        if not _sh("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)):
            return False
        _unmount(probe)
        return True
    finally:
        probe.rmdir()


@contextlib.contextmanager
def small_disk(folder: Path, size: int, mode: str | None = None) -> Iterator[str]:
    """Writes under ``folder`` fail once about ``size`` bytes are used; yields the mode, "tmpfs" or "rlimit".

    "tmpfs": a tmpfs of ``size`` bytes mounted on ``folder`` (writes past it fail with ENOSPC, as on a full
    disk; what ``folder`` held is hidden until it is unmounted, so fill it inside).  "rlimit": RLIMIT_FSIZE
    lowered to ``size`` for this process (no file may grow past it: EFBIG; Python ignores SIGXFSZ), what an
    unprivileged or unmountable machine allows.  ``mode=None`` takes tmpfs where mounting works.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if mode in (None, "tmpfs") and can_mount() and \
            _sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)):
        try:
            yield "tmpfs"
        finally:
            _unmount(folder)
        return
    if mode == "tmpfs":
        pytest.fail("a tmpfs cannot be mounted here")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield "rlimit"
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def inject_oserror(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, target: Path | str,
                   err: int = errno.EACCES) -> None:
    """``module.name(path, ...)`` raises OSError(err) for ``target``: a permission denied as root sees none."""
    real = getattr(module, name)
    wanted = os.path.normpath(os.fspath(target))

    def call(first: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(first, int) and os.path.normpath(os.fsdecode(first)) == wanted:
            raise OSError(err, os.strerror(err), os.fsdecode(first))
        return real(first, *args, **kwargs)

    monkeypatch.setattr(module, name, call)
