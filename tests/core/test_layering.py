"""The engine never imports Qt, napari or magicgui (STYLE.md; napari enforces this with import-linter)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "napari_drunet" / "core"
FORBIDDEN = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "vispy")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_sources_do_not_import_gui_packages():
    offenders = {p.name: sorted(_imports(p) & set(FORBIDDEN)) for p in CORE.glob("*.py")}
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}


def test_importing_every_core_module_loads_no_gui_package():
    modules = [f"napari_drunet.core.{p.stem}" for p in sorted(CORE.glob("*.py"))
               if p.stem != "__init__"]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "import napari_drunet.cli\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
        "print(bad); assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_package_import_is_light():
    """napari's plugin discovery imports the package: it must not pull torch."""
    code = "import sys, napari_drunet; assert 'torch' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
