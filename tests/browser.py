"""Headless Chromium for the report tests: open a page from disk and read its DOM after its scripts ran.

The page writes what a test needs into its DOM (``<body data-ready data-clustering data-cards
data-matches data-map-points data-map-pixels>``, ``<pre id="csv-check">``) and reads its state from the
URL fragment (``#clustering=NAME&q=TEXT&cluster=ID&item=SHA&csv=1``), so ``--dump-dom`` checks the switcher,
the search and the CSV without driving a mouse.  Console messages (errors, uncaught exceptions) come back
from ``--enable-logging=stderr`` as CONSOLE lines.

Without Chromium the tests that need it skip with the reason; with CLIPCLUST_REQUIRE_CHROMIUM=1 (CI sets
it) they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                 if (found := shutil.which(name))), None)


def need_chromium() -> None:
    """Skip (or, in CI, fail) the calling test when no Chromium is installed."""
    if CHROMIUM is not None:
        return
    reason = "headless Chromium is not installed (apt-get install -y chromium); the report's browser tests need it"
    if os.environ.get("CLIPCLUST_REQUIRE_CHROMIUM"):
        pytest.fail(reason)
    pytest.skip(reason)


class _Cards(HTMLParser):
    """The cluster cards of a dumped DOM, and a few elements by id."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[tuple[int, bool]] = []  # (cluster id, shown)
        self.tiles: list[str] = []  # class of each card tile
        self.ids: dict[str, dict[str, str | None]] = {}
        self.images: int = 0
        self._in: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "article" and "card" in classes:
            self.cards.append((int(a["data-cluster"] or 0), "hidden" not in a))
        if "tile" in classes:
            self.tiles.append(" ".join(classes))
        if a.get("id"):
            self.ids[str(a["id"])] = a
        if tag == "img" and (a.get("src") or "").startswith("data:image/"):
            self.images += 1


@dataclass
class Page:
    """A page after its scripts ran: the DOM, the body's data attributes, the console lines."""

    dom: str
    console: list[str]
    body: dict[str, str] = field(default_factory=dict)
    cards: list[tuple[int, bool]] = field(default_factory=list)
    tiles: list[str] = field(default_factory=list)
    elements: dict[str, dict[str, str | None]] = field(default_factory=dict)
    images: int = 0

    @property
    def shown_cards(self) -> list[int]:
        return [c for c, shown in self.cards if shown]

    def text_of(self, element_id: str) -> str:
        found = re.search(rf'<[a-z]+ id="{element_id}"[^>]*>(.*?)</', self.dom, re.S)
        return "" if found is None else found.group(1)


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


def open_page(path: Path, fragment: str = "", *, size: tuple[int, int] = (1280, 900), budget_ms: int = 8000,
              timeout: float = 60) -> Page:
    """Load ``path`` from disk (``file://``), let its scripts run, and return what it shows."""
    url = Path(path).resolve().as_uri() + (f"#{fragment}" if fragment else "")
    done = _run(["--enable-logging=stderr", "--v=0", f"--virtual-time-budget={budget_ms}",
                 f"--window-size={size[0]},{size[1]}", "--dump-dom", url], timeout)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    body = re.search(r"<body([^>]*)>", done.stdout)
    attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', body.group(1))) if body else {}
    parsed = _Cards()
    parsed.feed(done.stdout)
    return Page(done.stdout, console, attrs, parsed.cards, parsed.tiles, parsed.ids, parsed.images)


def screenshot(path: Path, out: Path, fragment: str = "", *, size: tuple[int, int] = (1400, 1800),
               budget_ms: int = 8000, timeout: float = 60) -> Path:
    """A PNG of the page as a person sees it."""
    url = Path(path).resolve().as_uri() + (f"#{fragment}" if fragment else "")
    _run([f"--virtual-time-budget={budget_ms}", f"--window-size={size[0]},{size[1]}", "--hide-scrollbars",
          f"--screenshot={out}", url], timeout)
    return out
