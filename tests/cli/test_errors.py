"""Unexpected failures: one line and exit 1, the traceback only with --debug or CLIPCLUST_DEBUG=1."""

from __future__ import annotations

import pytest

from .conftest import one_error_line


def _boom(exc: BaseException):
    def raise_it(*args, **kwargs):
        raise exc

    return raise_it


@pytest.mark.parametrize("exc", [RuntimeError("CUDA error: device-side assert\ntriggered"),
                                 OSError("Can't synchronously read data"), ValueError("shapes (3,) and (4,)"),
                                 MemoryError()])
def test_an_internal_failure_is_one_line_and_exit_1(cli, monkeypatch, exc):
    monkeypatch.setattr("clipclust.cli.cluster.run_clustering", _boom(exc))
    monkeypatch.delenv("CLIPCLUST_DEBUG", raising=False)
    result = cli("cluster", "-k", "2")
    assert result.code == 1 and result.out == ""
    line = one_error_line(result)
    assert "Traceback" not in result.err
    if isinstance(exc, MemoryError):
        assert "out of memory" in line and "--batch-size" in line
    else:
        assert f"internal error: {type(exc).__name__}" in line and "--debug" in line


def test_debug_shows_the_traceback(cli, monkeypatch):
    monkeypatch.setattr("clipclust.cli.cluster.run_clustering", _boom(RuntimeError("boom")))
    result = cli("--debug", "cluster", "-k", "2")
    assert result.code == 1 and "Traceback" in result.err and "RuntimeError: boom" in result.err
    monkeypatch.setenv("CLIPCLUST_DEBUG", "1")
    result = cli("cluster", "-k", "2")
    assert result.code == 1 and "Traceback" in result.err
    monkeypatch.setenv("CLIPCLUST_DEBUG", "0")
    assert "Traceback" not in cli("cluster", "-k", "2").err


def test_a_bad_input_error_names_the_flag_not_the_library_option(cli, monkeypatch):
    from clipclust.errors import InputError

    monkeypatch.setattr("clipclust.cli.cluster.run_clustering",
                        _boom(InputError("expected 1 or more", option="n_threads")))
    result = cli("cluster", "-k", "2")
    assert result.code == 2 and one_error_line(result) == "clipclust: error: --threads: expected 1 or more"
