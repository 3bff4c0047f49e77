"""The package layout keeps its promises (docs/architecture.md): modules use each other's public names only,
each module stays small, and the top of the package holds only the core modules."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "tinylm"
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


# ----- the folders' dependencies run one way along the data path (docs/architecture.md) -----

# A folder may import the core modules at the package top and the folders of a lower rank, never one of its own
# rank or above: data -> core -> model/committee -> train -> inference -> serving; analysis -> reports; and
# experiments (which trains, infers and renders) and cli above all of them.
RANKS = {"data": 0, "committee": 2, "analysis": 2, "train": 3, "inference": 4, "reports": 4, "serving": 5,
         "experiments": 6, "cli": 7}
CORE_RANK = 1  # the modules at the package top (config, model, checkpoint, io, ...): they import data/ only
NEVER = {"train": {"experiments", "reports", "inference"}, "reports": {"experiments"}}


def unit_of(module: str) -> str | None:
    """The folder ("train") or core module ("core:config") a `tinylm.x.y` module name belongs to."""
    parts = module.split(".")
    if parts[0] != "tinylm" or len(parts) < 2:
        return None
    return parts[1] if (PACKAGE / parts[1]).is_dir() else f"core:{parts[1]}"


def rank(unit: str) -> int:
    return CORE_RANK if unit.startswith("core:") else RANKS[unit]


def folder_imports() -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) -> where, over every import in the package (function-level ones too)."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in MODULES:
        rel = path.relative_to(PACKAGE)
        here = rel.parts[0] if len(rel.parts) > 1 else f"core:{rel.stem}"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                there = unit_of(name)
                if there and there != here and not (here.startswith("core:") and there.startswith("core:")):
                    edges.setdefault((here, there), []).append(f"{rel}:{node.lineno}")
    return edges


def test_every_folder_has_a_rank():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(RANKS)


def test_no_folder_imports_upward_or_sideways():
    upward = [f"{a} -> {b} ({', '.join(where)})" for (a, b), where in folder_imports().items() if rank(b) >= rank(a)]
    assert upward == []


def test_no_import_cycle_between_folders():
    edges = folder_imports()
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a.split(":")[0], set()).add(b.split(":")[0])  # the core modules as one unit
    graph = {a: {b for b in bs if b != a} for a, bs in graph.items()}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in seen and (found := cycle_from(nxt, [*path, node])):
                return found
        seen[node] = 2
        return None

    cycles = [c for n in sorted(graph) if n not in seen and (c := cycle_from(n, []))]
    assert cycles == []


@pytest.mark.parametrize("folder", sorted(NEVER))
def test_the_promised_imports_never_happen(folder):
    found = [f"{a} -> {b}" for (a, b) in folder_imports() if a == folder and b in NEVER[folder]]
    assert found == []


def test_the_checker_sees_an_upward_import(monkeypatch, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "__init__.py").write_text("")
    (tmp_path / "inference").mkdir()
    module = tmp_path / "train" / "m.py"
    module.write_text("def f():\n    from tinylm.inference.predictor import Predictor\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "MODULES", [module])
    assert folder_imports() == {("train", "inference"): ["train/m.py:2"]}


# ----- docstrings name modules that exist -----

# Module names the package once had, so that a docstring still naming one is caught ("training" became train/).
RETIRED = {"training"}
FILE_SUFFIXES = {"json", "safetensors", "txt", "md", "csv", "html", "png", "onnx", "lock", "jsonl", "gz", "py"}
# Dotted names in docstrings that start like a module but read an object's attribute.
ATTRIBUTES = {"tokenizer.all_special_ids", "committee.members", "data.validation"}
DOTTED = re.compile(r"(?<![\w./-])((?:tinylm\.)?[a-z_]+(?:\.[A-Za-z_]\w*)+)")
FILE = re.compile(r"(?<![\w.-])((?:src/)?(?:tinylm/)?[a-z_]+(?:/[a-z_]+)*\.py)\b")


def top_names(path: Path) -> set[str]:
    """The names a module (or a package's __init__ and its modules) defines or imports at its top."""
    source = path if path.suffix == ".py" else path / "__init__.py"
    names: set[str] = set()
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    if path.is_dir():
        names |= {p.stem for p in path.glob("*.py")}
    return names


def unresolved(parts: list[str]) -> str | None:
    """Why the dotted name `parts` (modules, then at most one name) names nothing in the package; None if it does."""
    here = PACKAGE
    for i, part in enumerate(parts):
        if (here / part / "__init__.py").is_file():
            here = here / part
        elif (here / f"{part}.py").is_file():
            here, rest = here / f"{part}.py", parts[i + 1:]
            break
        elif here == PACKAGE:
            return f"no module {part}"
        else:
            rest = parts[i:]
            break
    else:
        return None
    if rest and rest[0] not in top_names(here):
        return f"{here.relative_to(PACKAGE)} has no {rest[0]}"
    return None


def misnamed_modules(path: Path) -> list[str]:
    """Dotted module names and .py paths in a module's docstrings that name nothing in the repository."""
    roots = ({p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}) | RETIRED
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        doc, line = ast.get_docstring(node, clean=False), getattr(node, "lineno", 1)
        for match in DOTTED.finditer(doc or ""):
            name = match.group(1).rstrip(".")
            parts = name.removeprefix("tinylm.").split(".")
            checked = parts[0] in roots and parts[-1] not in FILE_SUFFIXES and name not in ATTRIBUTES
            if checked and (why := unresolved(parts)):
                found.append(f"line {line}: {name} ({why})")
        for match in FILE.finditer(doc or ""):
            name = match.group(1).removeprefix("src/").removeprefix("tinylm/")
            exists = any(PACKAGE.rglob(name)) if "/" not in name else (PACKAGE / name).exists()
            if not exists and not (PACKAGE.parents[1] / match.group(1)).exists():
                found.append(f"line {line}: {match.group(1)} (no such file)")
    return found


def test_the_checker_sees_a_retired_module(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""Runs training.train_loop, then committee/train.py and train.loop.train_loop."""\n')
    assert misnamed_modules(module) == ["line 1: training.train_loop (no module training)",
                                        "line 1: committee/train.py (no such file)"]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_docstrings_name_modules_that_exist(path):
    assert misnamed_modules(path) == []


# ----- tests/ mirrors the package folders -----


def test_tests_mirror_the_package_folders():
    tests = Path(__file__).resolve().parents[1]
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    test_folders = {p.name for p in tests.iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert test_folders <= folders | {"core"}, sorted(test_folders - folders)
    assert sorted(p.name for p in tests.glob("test_*.py")) == []  # every test file lives in its folder
