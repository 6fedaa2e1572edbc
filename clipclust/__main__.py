"""`python -m clipclust` runs the CLI."""

from clipclust.cli.app import entry

entry()
