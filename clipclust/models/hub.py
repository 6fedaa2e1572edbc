"""The Hugging Face hub when there may be no network: decide at once instead of waiting out retries.

A model named by hub id is loaded from the local cache when the hub cannot be used (HF_HUB_OFFLINE, or
no connection to its host), and a model that is not cached either is an immediate one-line error.  Any
loader (CLIP here; VLMs and LLMs by hub id alike) can wrap its loading in ``hub_offline(reason)``.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Iterator
from urllib.parse import urlsplit

HUB_PROBE_SECONDS = 3.0


def hub_offline_reason(probe_seconds: float = HUB_PROBE_SECONDS) -> str:
    """Why the model hub cannot be used now ("" when it can): HF_HUB_OFFLINE, or no connection to it.

    One TCP connect to the hub's host decides, so that a machine without network fails in a moment
    instead of waiting out huggingface_hub's retries for every candidate file.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return "HF_HUB_OFFLINE is set"
    url = urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=probe_seconds):
            return ""
    except OSError as exc:
        return f"{host} cannot be reached ({exc.strerror or type(exc).__name__})"


@contextlib.contextmanager
def hub_offline(offline: bool) -> Iterator[None]:
    """huggingface_hub (and transformers and open_clip through it) in offline mode: cached files only."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def is_cached(repo_id: str, filename: str) -> bool:
    """Whether the Hugging Face cache holds this file of this repository (no network, no torch)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename), str)
