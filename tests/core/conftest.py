"""The core maths tests run single-threaded, like the method tests (see tests/methods/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread_for_core_tests(single_thread):
    yield
