"""The use cases, one module or package per command: embed, describe, cluster, finetune, evaluate,
visualize, export, merge, check, info.  Each takes a Workspace and plain arguments and returns a report
dataclass; the CLI (clipclust.cli) parses flags, calls one of these and prints the report."""
