"""Exceptions the library raises; the CLI maps them to exit codes (2 = bad input, 1 = runtime)."""


class ClipclustError(Exception):
    """A runtime failure (exit code 1): a model that failed mid-run, a broken workspace."""

    exit_code = 1


class InputError(ClipclustError):
    """Bad usage or input (exit code 2): a missing file, an unknown set name, no images found.

    ``option`` names the request field at fault (``"min_count"``) when there is one: the library never
    spells command-line flags, the CLI prefixes the message with the flag that sets that field.
    """

    exit_code = 2

    def __init__(self, message: str, option: str | None = None):
        super().__init__(f"{option}: {message}" if option else message)
        self.message = message
        self.option = option
