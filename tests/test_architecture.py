"""The layout's rules (docs/architecture.md), read from the source: layers import only downwards, no import
cycles, no module over 400 lines, and no command-line words (flags, `clipclust <command>` lines) outside cli/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

ROOT = Path(__file__).resolve().parents[1] / "clipclust"
# Top to bottom; a module may import its own layer and the layers below it.
LAYERS = ("face", "cli", "commands", "methods", "models", "store", "core", "base")
FLAG = re.compile(r"(^|[\s'\"(])--[a-z][a-z0-9-]+")
HINT = re.compile(r"\bclipclust (embed|describe|cluster|finetune|evaluate|visualize|export|merge|check|info|report|"
                  r"discover)\b")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__main__", "api"):
        return "face"
    if parts[1] in ("errors", "version"):
        return "base"
    return parts[1]


def _sources() -> dict[str, tuple[Path, ast.Module]]:
    return {module_name(p): (p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(ROOT.rglob("*.py"))}


SOURCES = _sources()


def imports(module: str) -> set[str]:
    """The clipclust modules ``module`` imports anywhere in its file (lazy imports inside functions too)."""
    path, tree = SOURCES[module]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            for candidate in [base] + [f"{base}.{alias.name}" for alias in node.names]:
                if candidate in SOURCES and candidate != module:
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in SOURCES and alias.name != module)
    if path.name == "__init__.py":  # a package importing its own children to re-export them
        found = {d for d in found if not d.startswith(module + ".")}
    return found


def test_every_module_belongs_to_a_layer():
    assert {layer(m) for m in SOURCES} <= set(LAYERS)


def test_layers_import_only_downwards():
    upward = sorted(f"{m} -> {d}" for m in SOURCES for d in imports(m)
                    if LAYERS.index(layer(d)) < LAYERS.index(layer(m)))
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles():
    names = sorted(SOURCES)
    index = {n: i for i, n in enumerate(names)}
    edges = [(index[m], index[d]) for m in names for d in imports(m)]
    rows, cols = (np.array(side, dtype=np.int64) for side in zip(*edges))
    graph = csr_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(names), len(names)))
    _, component = connected_components(graph, directed=True, connection="strong")
    cycles = [sorted(names[i] for i in np.flatnonzero(component == c)) for c in np.unique(component)
              if (component == c).sum() > 1]
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_no_module_is_too_long(module):
    lines = SOURCES[module][0].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{SOURCES[module][0]} has {lines} lines; split it by concern"


def _literals(tree: ast.Module):
    """String literals of a module (f-string pieces too), docstrings aside."""
    docs = set()
    for owner in [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]:
        body = owner.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            docs.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node


def test_no_command_line_words_outside_the_cli():
    """Library errors name settings with errors.opt() and steps with errors.step(); only cli/ spells them."""
    found = []
    for module, (path, tree) in SOURCES.items():
        if layer(module) in ("cli", "face"):
            continue
        for node in _literals(tree):
            if FLAG.search(node.value) or HINT.search(node.value):
                found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {node.value[:70]!r}")
    assert not found, f"{len(found)} command-line words in the library:\n" + "\n".join(found)


def test_the_rules_catch_what_they_forbid():
    """The checks above are not vacuous: each finds its fault in a small made-up source."""
    tree = ast.parse('def f():\n    """Docstrings may say --flag."""\n    raise ValueError("pass --batch-size or run clipclust embed")\n')
    assert len([n for n in _literals(tree) if FLAG.search(n.value) or HINT.search(n.value)]) == 1
    assert LAYERS.index(layer("clipclust.cli.app")) < LAYERS.index(layer("clipclust.store.sets"))
