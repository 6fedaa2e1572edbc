"""Kept for code written against ``clipclust.cache``: the workspace now lives in :mod:`clipclust.store`."""

from .store import *  # noqa: F401,F403
from .store import __all__  # noqa: F401
