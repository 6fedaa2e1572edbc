"""Part B's helpers for the hostile cases: model servers that misbehave on purpose, a workspace to be hostile
to (copied per test from one made per session), descriptions, and files in the wrong encoding.

:class:`Server` is an OpenAI-compatible server on 127.0.0.1 whose chat answers are scripted per request:
an answer, an HTTP status, garbage, a hang (until the server closes), a connection dropped mid-answer.
Unlike the fake of tests/models it never prints (a client that gave up leaves a broken pipe behind, and the
harness counts stderr lines), and it records how many chats it was asked.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from .conftest import N_IMAGES, PROMPT, Hostile, write_images

HANG, DROP = "hang", "drop"
"""Special chat replies: never answer (until the server closes), or send half an answer and close."""

Reply = Any  # str (the answer's text), HANG, DROP, or (status, body): body JSON-able, or bytes sent as they are


def chat_body(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


class Server:
    """``chat(n, body) -> Reply`` answers the n-th chat request (from 1); ``/models`` lists ``models``."""

    def __init__(self, chat: Callable[[int, dict[str, Any]], Reply], models: Any = ("tiny",)) -> None:
        self.chat, self.models = chat, models
        self.chats = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                models = server.models
                self._send(*(models if isinstance(models, tuple) and len(models) == 2 and isinstance(models[0], int)
                             else (200, {"data": [{"id": m} for m in models]})))

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with server.lock:
                    server.chats += 1
                    n = server.chats
                reply = server.chat(n, body)
                if reply == HANG:
                    server.stop.wait()
                    return
                if reply == DROP:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b'{"choices": [')
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._send(*((200, chat_body(reply)) if isinstance(reply, str) else reply))

            def _send(self, status: int, body: Any) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if isinstance(body, bytes) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out closed its end: nothing to report

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[Callable[..., Server]]:
    """Make :class:`Server` s; all are closed after the test."""
    made: list[Server] = []

    def make(chat: Callable[[int, dict[str, Any]], Reply], models: Any = ("tiny",)) -> Server:
        made.append(Server(chat, models))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture()
def blackhole() -> Iterator[str]:
    """A URL whose host never completes a connection: a listening socket whose backlog is full, so the
    kernel drops new handshakes (what a firewalled or vanished host looks like)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    yield f"http://127.0.0.1:{port}/v1"
    for s in fillers:
        s.close()
    listener.close()


def ictc_llm(n: int, body: dict[str, Any]) -> Reply:
    """An LLM for IC|TC on the template's descriptions: step 2a's label is the description's telling word,
    step 2b's names are two of them, a constrained answer is the first choice offered."""
    schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema", {})
    if schema:
        return json.dumps({"answer": schema["properties"]["answer"]["enum"][0]})
    text = json.dumps(body.get("messages", [])).lower()
    found = [word for word in ("round", "thin", "loop") if word in text]
    return "round\nthin" if len(found) > 1 else (found[0] if found else "other")


def refused_url() -> str:
    """A URL where nothing listens (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


# -- the workspace


WORDS = ("a round digit", "a thin straight digit", "a digit with a loop")
NAME = "km"  # the stored k-means clustering


@dataclass(frozen=True)
class Template:
    """The session's workspace: N_IMAGES digits embedded by the tiny CLIP with PROMPT, clustered as NAME,
    and described (imported descriptions, one of WORDS each)."""

    ws: Path
    images: Path
    model: Path
    descriptions: Path


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory, tiny_open_clip: Path, open_clip_encoder: Any) -> Template:
    from clipclust.commands.cluster import run_clustering
    from clipclust.commands.describe import import_into_workspace
    from clipclust.commands.embed import EmbedOptions, embed
    from clipclust.store import Workspace

    from ..workspaces import one_thread

    root = tmp_path_factory.mktemp("hostile-b")
    images = write_images(root / "images")
    ws = Workspace(root / "template.h5")
    descriptions = root / "descriptions.jsonl"
    files = sorted(images.rglob("*.png"))
    descriptions.write_text("".join(json.dumps({"text": WORDS[i % 3], "path": str(p)}) + "\n"
                                    for i, p in enumerate(files)), encoding="utf-8")
    with one_thread():
        embed(ws, [str(images)], EmbedOptions(model=str(tiny_open_clip), prompts=[PROMPT], fuse=("label",)),
              encoder=open_clip_encoder)
        run_clustering(ws, k=3, name=NAME)
        import_into_workspace(ws, descriptions, path_field="path")
    assert len(files) == N_IMAGES
    return Template(ws.path, images, tiny_open_clip, descriptions)


@pytest.fixture()
def ws(hostile: Hostile, template: Template) -> Hostile:
    """``hostile`` on a fresh copy of the session's workspace (images, the tiny CLIP as ``hostile.model``)."""
    shutil.copyfile(template.ws, hostile.ws)
    hostile.images, hostile.model = template.images, template.model
    return hostile


def description_set(h: Hostile) -> str:
    """The name of the workspace's (only) description set."""
    from clipclust.store import Workspace

    return next(s.name for s in Workspace(h.ws).list_sets() if s.kind == "description")


def set_rows(h: Hostile, kind: str) -> dict[str, int]:
    """Rows per set of a kind, by set name."""
    from clipclust.store import Workspace

    ws = Workspace(h.ws)
    return {s.name: len(ws.set_keys(s.id)) for s in ws.list_sets() if s.kind == kind}


def poison(h: Hostile, name_prefix: str, rows: int = 3) -> None:
    """Write NaN into the first ``rows`` rows of the sets whose name starts with ``name_prefix``, behind
    clipclust's back (as another program or an older version could)."""
    import h5py
    import numpy as np

    with h5py.File(h.ws, "a") as f:
        for g in f["sets"].values():
            if str(g.attrs["name"]).startswith(name_prefix) and g["data"].dtype.kind == "f":
                data = g["data"][:]
                data[:rows] = np.nan
                g["data"][...] = data


def latin1(path: Path, text: str) -> Path:
    """``text`` written to ``path`` in latin-1 (as a spreadsheet on an older system saves a CSV)."""
    path.write_bytes(text.encode("latin-1"))
    return path


def jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    """Records as JSON lines, ASCII-escaped (so that a lone surrogate travels as JSON's \\udXXX escape)."""
    path.write_text("".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records), encoding="utf-8")
    return path
