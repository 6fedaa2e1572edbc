"""Exceptions the library raises; the CLI maps them to exit codes (2 = bad input, 1 = runtime)."""


class ClipclustError(Exception):
    """A runtime failure (exit code 1): a model that failed mid-run, a broken workspace."""

    exit_code = 1


class InputError(ClipclustError):
    """Bad usage or input (exit code 2): a missing file, an unknown set name, no images found."""

    exit_code = 2
