"""The text a user hands over in a file (a labels CSV, a class list, prompts, descriptions), read one way.

Files are UTF-8 (a byte-order mark is allowed).  A file in another encoding (a latin-1 CSV from a
spreadsheet) is refused with the file, the line and the byte at fault, instead of being guessed at: a
wrong guess would turn every accented label into another label without a word.  A NUL byte (a binary
file) and text that is not Unicode (a lone surrogate, which JSON's ``\\ud800`` escapes can make) are
refused the same way, before they reach a hash or the workspace, whose strings cannot hold either.
"""

from __future__ import annotations

import os
from pathlib import Path

from clipclust.errors import InputError

__all__ = ["check_line", "check_text", "read_user_text"]


def read_user_text(path: str | os.PathLike[str]) -> str:
    """The file's text; an :class:`InputError` naming the file, the line and the encoding when it is not UTF-8."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{path}: line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as "
                         f"UTF-8, e.g. iconv -f latin1 -t utf-8 {file.name} > utf8-{file.name}") from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise InputError(f"{path}: line {line} holds a NUL byte; expected a text file")
    return text


def check_text(text: str, where: str) -> str:
    """``text`` itself, or an :class:`InputError` when it holds a NUL or a lone surrogate (not Unicode text)."""
    if "\0" in text:
        raise InputError(f"{where}: holds a NUL character at character {text.index(chr(0)) + 1}; fix or drop it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{where}: holds {text[exc.start]!a} at character {exc.start + 1}, a lone surrogate that "
                         "is not Unicode text; fix or drop it") from None
    return text


def check_line(text: str, option: str) -> str:
    """``text``, one line of printable characters (a criterion, a name: they become set names and table rows);
    else an :class:`InputError` naming the setting ``option``."""
    if not text.strip().isprintable():
        raise InputError(f"{text!r} holds a line break or another control character; give one line of text",
                         option=option)
    return text
