"""`clipclust report` at 1k, 10k and 100k items: seconds, bytes, and how long Chromium takes to open the page.

Synthetic items, no model: N small PNG files (written once under --root), 64-D vectors around 20 centres,
labels, and three clusterings stored directly: `kmeans-like` (the centres, 10% of items moved), `coarse`
(8 groups) and `ictc-like` (6 named groups on a description set of one sentence per item, with raw
labels), as a real workspace would hold them.  Each size is reported twice: the first report makes the map
(t-SNE up to 10k items, PCA beyond) and the thumbnails it inlines and keeps both in the workspace; the
second reuses them.  Chromium's load time is the page's own `performance.now()` once its data is decoded,
the cards drawn and the map painted (`<body data-load-ms>`, read over the DevTools protocol in real time);
`map repaint` is one full repaint of the map, what a frame of zooming or panning costs.

    python bench/report_scale.py                       # 1k, 10k, 100k; inline thumbnails
    python bench/report_scale.py --sizes 1000 --thumbnails folder
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MOODS = ["cheerful", "calm", "gloomy", "tense", "playful", "serene"]


def write_images(root: Path, n: int) -> list[str]:
    """N distinct 32x32 PNGs (kept between runs: only the missing ones are written)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = root / f"{i // 1000:04d}" / f"{i:06d}.png"
        paths.append(str(path))
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tint = rng.integers(0, 255, size=3)
        pixels = (rng.integers(0, 60, size=(32, 32, 3)) + tint).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(path)
    return paths


def fill(ws_path: Path, paths: list[str], dim: int = 64) -> None:
    from clipclust.methods.inputs import set_ref
    from clipclust.store import ItemRecord, SetSpec, Workspace

    n = len(paths)
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 20, size=n)
    centres = rng.normal(size=(20, dim)) * 3
    vectors = (centres[truth] + rng.normal(size=(n, dim))).astype(np.float32)
    keys = [hashlib.sha256(f"item {i}".encode()).hexdigest() for i in range(n)]
    ws = Workspace(ws_path)
    image = SetSpec.for_model(model="bench:fake", kind="image", prompt="", name="image")
    described = SetSpec.for_model(model="bench:fake", kind="description", prompt="mood", name="description:mood",
                                  dtype="str")
    mood = truth % len(MOODS)
    texts = [f"a {MOODS[m]} scene, picture {i} of group {t}" for i, (m, t) in enumerate(zip(mood, truth))]
    for lo in range(0, n, 20000):
        hi = min(n, lo + 20000)
        records = [ItemRecord(sha256=keys[i], path=paths[i], label=f"class-{truth[i]:02d}", width=32, height=32,
                              size=Path(paths[i]).stat().st_size) for i in range(lo, hi)]
        ws.write_batch(items=records, rows=[(image, keys[lo:hi], vectors[lo:hi]),
                                            (described, keys[lo:hi], texts[lo:hi])])
    moved = rng.random(n) < 0.1
    kmeans = np.where(moved, rng.integers(0, 20, size=n), truth)
    source = set_ref(ws.resolve_set("image"))
    ws.save_clustering("kmeans-like", keys=keys, ids=kmeans, params={"method": "kmeans", "sets": {"input": source}})
    ws.save_clustering("coarse", keys=keys, ids=truth % 8, params={"method": "agglomerative",
                                                                   "sets": {"input": source}})
    raw = [f"{MOODS[m]}" if i % 3 else f"{MOODS[m]}-ish" for i, m in enumerate(mood)]
    ws.save_clustering("ictc-like", keys=keys, ids=mood, cluster_names=MOODS, extra={"raw_labels": raw},
                       params={"method": "ictc", "criterion": "mood",
                               "sets": {"input": set_ref(ws.resolve_set("description"))}})


class DevTools:
    """Chromium driven over --remote-debugging-pipe (fds 3 and 4, NUL-terminated JSON): no websocket library.

    Virtual time (--virtual-time-budget, which the tests use) stops the clock across the page's awaits, so
    load times are measured here, in real time, by polling the page until it says it is ready.
    """

    def __init__(self, chromium: str, profile: str) -> None:
        import fcntl
        import os

        self._from_child, theirs_write = os.pipe()  # Chromium writes its fd 4
        theirs_read, self._to_child = os.pipe()  # Chromium reads its fd 3

        def fds() -> None:
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (theirs_read, theirs_write)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                      f"--user-data-dir={profile}", "--window-size=1400,1000",
                                      "--remote-debugging-pipe", "about:blank"],
                                     preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(theirs_read)
        os.close(theirs_write)
        self._next, self._buffer = 0, b""

    def call(self, method: str, session: str | None = None, **params):
        import json
        import os

        self._next += 1
        message = {"id": self._next, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except RuntimeError:
            pass
        self.proc.wait(timeout=30)


def chromium_load(page: Path) -> tuple[float, float, float]:
    """(the page's load ms, one map repaint ms, wall seconds from navigation to ready), in real time."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        return float("nan"), float("nan"), float("nan")
    with tempfile.TemporaryDirectory() as profile:
        tools = DevTools(chromium, profile)
        try:
            target = next(t for t in tools.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
            session = tools.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
            started = time.perf_counter()
            tools.call("Page.navigate", session, url=page.resolve().as_uri())
            probe = ("document.body && document.body.dataset.ready === '1' && location.protocol === 'file:' ? "
                     "[+document.body.dataset.loadMs, +document.body.dataset.drawMs] : null")
            while time.perf_counter() - started < 300:
                value = tools.call("Runtime.evaluate", session, expression=probe,
                                   returnByValue=True)["result"].get("value")
                if value:
                    return value[0], value[1], time.perf_counter() - started
                time.sleep(0.02)
            raise SystemExit(f"{page}: the page did not finish loading in 300 s")
        finally:
            tools.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--thumbnails", default="inline", choices=["inline", "folder", "none"])
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "clipclust-report-bench")
    args = parser.parse_args()
    from clipclust.commands.report import report
    from clipclust.store import Workspace

    rows = []
    for n in args.sizes:
        started = time.perf_counter()
        paths = write_images(args.root / "images", n)
        ws_path = args.root / f"ws-{n}.h5"
        ws_path.unlink(missing_ok=True)
        fill(ws_path, paths)
        print(f"{n} items: workspace filled in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        ws = Workspace(ws_path)
        page = args.root / f"report-{n}.html"
        first = report(ws, out=page, thumbnails=args.thumbnails)
        second = report(ws, out=page, thumbnails=args.thumbnails)
        load_ms, draw_ms, wall = chromium_load(page)
        rows.append((n, first, second, load_ms, draw_ms, wall))
        print(f"{n} items: {first.seconds:.1f}s / {second.seconds:.1f}s, {second.bytes:,} bytes, "
              f"load {load_ms:.0f} ms", file=sys.stderr)
    print("| items | first report (map, thumbnails made) | second report (reused) | bytes | bytes per item "
          "| Chromium load | map repaint | Chromium wall |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, first, second, load_ms, draw_ms, wall in rows:
        print(f"| {n:,} | {first.seconds:.1f} s ({first.map}, {first.thumbnails_made:,} made) | "
              f"{second.seconds:.1f} s ({second.thumbnails_reused:,} reused) | {second.bytes / 1e6:.1f} MB | "
              f"{second.bytes / n:.0f} | {load_ms:.0f} ms | {draw_ms:.1f} ms | {wall:.1f} s |")


if __name__ == "__main__":
    main()
