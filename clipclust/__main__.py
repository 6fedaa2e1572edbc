"""`python -m clipclust` runs the CLI."""

from .cli.app import entry

entry()
