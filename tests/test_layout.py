"""The package layout keeps its promises (docs/architecture.md): modules use each other's public names only,
each module stays small, and the top of the package holds only the core modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tinylm"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 400
MAX_TOP_LEVEL_MODULES = 12


def private_imports(path: Path) -> list[str]:
    """`from tinylm.x import _name` and `tinylm.x._name` attribute reads in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tinylm"):
            found += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name.startswith("tinylm") and any(p.startswith("_") for p in a.name.split("."))]
    return found


def test_the_checker_sees_a_private_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from tinylm.checkpoint import _hidden, public\nfrom tinylm import __version__\n")
    assert private_imports(module) == ["line 1: from tinylm.checkpoint import _hidden"]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_another_modules_private_names(path):
    assert private_imports(path) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_is_small(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines; split it by job"


def test_the_package_top_holds_only_the_core_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    documented = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert [f for f in folders if f"`{f}/`" not in documented] == []
