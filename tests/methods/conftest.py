"""The method tests run single-threaded (the synthetic blobs they use live in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread_for_method_tests(single_thread):
    """Every method test runs with one thread: on a busy 2-core machine OpenMP workers that spin for each
    other make these small fits ten times slower; one thread is as fast when idle."""
    yield
