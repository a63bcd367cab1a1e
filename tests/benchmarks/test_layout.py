"""The shape of the benchmarks package: every entry script starts as ``python -m
benchmarks.NAME``, imports only the shared modules (never another entry script) and no module
edits ``sys.path`` (read from the sources, AST)."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _tree(name: str) -> ast.Module:
    return ast.parse((BENCH / f"{name}.py").read_text(encoding="utf-8"))


def _is_entry(name: str) -> bool:
    """An entry script ends with ``if __name__ == "__main__":``."""
    return any(isinstance(n, ast.If) and isinstance(n.test, ast.Compare)
               and isinstance(n.test.left, ast.Name) and n.test.left.id == "__name__"
               for n in _tree(name).body)


MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")
ENTRIES = [m for m in MODULES if _is_entry(m)]


def _benchmark_imports(name: str) -> set[str]:
    """The benchmarks modules ``name`` imports (relative or ``benchmarks.x``), also in
    functions; a bare ``import x`` of a benchmarks module counts too (the old sys.path way)."""
    found = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1:
                found |= {module} if module else {a.name for a in node.names}
            elif module.startswith("benchmarks."):
                found.add(module.removeprefix("benchmarks."))
            elif module in MODULES:
                found.add(module)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("benchmarks.") for a in node.names
                      if a.name.removeprefix("benchmarks.") in MODULES}
    return found


def test_the_shared_modules_and_the_entry_scripts_are_told_apart():
    assert {"common", "datasets", "shifts", "rounds", "history"} <= set(MODULES) - set(ENTRIES)
    assert {"drive_accuracy", "new_site", "perf", "label_efficiency"} <= set(ENTRIES)


@pytest.mark.parametrize("name", MODULES)
def test_no_entry_script_is_imported_and_no_sys_path_edit(name):
    assert not _benchmark_imports(name) & set(ENTRIES), f"{name} imports an entry script"
    edits = [n for n in ast.walk(_tree(name)) if isinstance(n, ast.Attribute)
             and n.attr == "path" and isinstance(n.value, ast.Name) and n.value.id == "sys"]
    assert not edits, f"{name} uses sys.path"


@pytest.mark.parametrize("name", ENTRIES)
def test_every_entry_script_answers_help(name, monkeypatch, capsys):
    module = importlib.import_module(f"benchmarks.{name}")
    monkeypatch.setattr(sys, "argv", [f"benchmarks.{name}", "--help"])
    with pytest.raises(SystemExit) as info:
        module.main()
    assert info.value.code == 0 and "usage:" in capsys.readouterr().out
