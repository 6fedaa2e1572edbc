"""kill -9 at random moments of real CLI runs, and how many kills left an unreadable workspace.

Alternates `clipclust embed DIGITS --batch-size 2 --prompt ...` (tiny open_clip model built here) and
`clipclust describe DIGITS --vlm URL` (a loopback OpenAI-compatible server answering instantly, so the
run is nothing but workspace writes: one answer per put, as describe does).  Each kill waits until the
run has started writing, then a random 0-1.5 s more.  After each kill `check` reads every dataset; a run
that got to the end starts over on a fresh workspace so that kills keep landing in writes.  At the end
both commands re-run to completion and every item must be stored exactly once.

    python bench/kill_loop.py                 # 100 kills, 300 images
    python bench/kill_loop.py --kills 20 --images 100
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def serve() -> str:
    """A loopback OpenAI-compatible server: one model, every chat completion answered at once."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client was just killed
                pass

        def do_GET(self) -> None:  # noqa: N802
            self._reply({"object": "list", "data": [{"id": "fake-vlm", "object": "model"}]})

        def do_POST(self) -> None:  # noqa: N802
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            text = f"a small grey digit, request of {len(body)} bytes"
            self._reply({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}]})

        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from clipclust.store import Workspace
    from clipclust.store.check import check_workspace
    from tests.conftest import build_tiny_open_clip, write_digits

    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="clipclust-kill-"))
    images = write_digits(root / "digits", args.images)
    model = build_tiny_open_clip(root / "tiny-open-clip")
    url = serve()
    cache = root / "ws.h5"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    commands = {
        "embed": ["embed", str(images), "-m", str(model), "-b", "2", "-w", "1", "-p", "digit <>", "--device", "cpu"],
        "describe": ["describe", str(images), "--vlm", url, "--criterion", "digit"],
    }

    def run(name: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "clipclust", "--quiet", "--cache", str(cache),
                                 *commands[name]], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    unreadable, finished, kills = 0, 0, 0
    started = time.time()
    while kills < args.kills:
        name = ("embed", "describe")[kills % 2]
        before = cache.stat().st_mtime_ns if cache.exists() else 0
        proc = run(name)
        while proc.poll() is None and (not cache.exists() or cache.stat().st_mtime_ns == before):
            time.sleep(0.01)  # wait for its first write
        time.sleep(rng.uniform(0, 1.5))
        if proc.poll() is not None:  # it got to the end before the kill: start the job over
            finished += 1
            if proc.returncode != 0:
                print(f"{name} exited {proc.returncode}: {proc.stderr.read().decode().strip()}")
                unreadable += 1
            cache.unlink(missing_ok=True)
            continue
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        report = check_workspace(cache)
        if not report.ok:
            unreadable += 1
            print(f"kill {kills} ({name}): {report.verdict()}", flush=True)
        if kills % 10 == 0:
            print(f"{kills} kills, {unreadable} unreadable, {time.time() - started:.0f} s", flush=True)
    for name in commands:  # the re-runs finish the job
        proc = run(name)
        _, err = proc.communicate()
        assert proc.returncode == 0, err.decode()
    ws = Workspace(cache)
    report = check_workspace(cache)
    counts = {s.kind: s.shape[0] for s in ws.list_sets()}
    n_items = len(ws.items())
    assert report.ok and n_items == args.images and counts["image"] == counts["description"] == n_items, counts
    print(f"{kills} kills in {time.time() - started:.0f} s ({finished} runs finished first): "
          f"{unreadable} left an unreadable workspace; final: {report.verdict()}; rows per kind {counts}")
    import shutil

    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
