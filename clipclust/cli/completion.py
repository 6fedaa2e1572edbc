"""Shell completion scripts for bash, zsh and fish, written into completions/ by `python -m clipclust.cli.completion`.

The scripts call back into `clipclust` (Typer's dynamic completion), so they complete every command and
option the installed version has; the test suite regenerates them and fails when the committed copies differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer.completion

SHELLS = {"bash": "clipclust.bash", "zsh": "_clipclust", "fish": "clipclust.fish"}
COMPLETE_VAR = "_CLIPCLUST_COMPLETE"


def completion_script(shell: str) -> str:
    typer.completion.completion_init()
    return typer.completion.get_completion_script(prog_name="clipclust", complete_var=COMPLETE_VAR, shell=shell)


def write_all(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for shell, name in SHELLS.items():
        path = folder / name
        path.write_text(completion_script(shell).rstrip("\n") + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "completions"
    for path in write_all(target):
        print(path)
