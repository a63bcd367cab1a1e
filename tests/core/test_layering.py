"""The layering of the package, read from the imports of every module (AST, no import run).

* The engine (``napari_drunet/core`` and all its subpackages) never imports Qt, napari or
  magicgui (STYLE.md; napari enforces this with import-linter).
* The core's subpackages are layered: a module imports only modules of a lower layer or of its
  own subpackage (image / nets / evaluation < infer < models < train < correction; the small
  cross-cutting modules at ``core/`` are the ground), so there is no import circle either.
* No module imports a private (``_name``) definition of another module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "napari_drunet"
CORE = PACKAGE / "core"
FORBIDDEN = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "vispy")
#: layer of each core subpackage; "" is core/ itself (errors, progress, device, ...)
LAYERS = {"": 0, "image": 1, "nets": 1, "evaluation": 1, "infer": 2, "models": 3, "train": 4,
          "correction": 5}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(root: Path) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(root.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(absolute module, imported names)`` of every import in ``path``, also in functions."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [a.name for a in node.names]))
    return found


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules of ``modules`` it imports (``from pkg import mod`` counts as mod)."""
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for target, names in _imports(path):
            hits = {f"{target}.{n}" for n in names} & modules.keys() or {target} & modules.keys()
            edges[module] |= hits - {module}
    return edges


def _layer(module: str) -> tuple[int, str]:
    inner = module.removeprefix("napari_drunet.core").lstrip(".").split(".")
    sub = inner[0] if len(inner) > 1 else ""
    return LAYERS[sub], sub


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_core_sources_do_not_import_gui_packages():
    offenders = {}
    for module, path in _modules(CORE).items():
        bad = sorted({t.split(".")[0] for t, _ in _imports(path)} & set(FORBIDDEN))
        if bad:
            offenders[module] = bad
    assert offenders == {}


def test_every_core_subpackage_has_a_layer():
    subpackages = {p.parent.name for p in CORE.rglob("__init__.py") if p.parent != CORE}
    assert subpackages == LAYERS.keys() - {""}


def test_core_modules_import_only_lower_layers():
    up = []
    for module, targets in _edges(_modules(CORE)).items():
        layer, sub = _layer(module)
        for target in targets:
            t_layer, t_sub = _layer(target)
            if t_layer > layer or (t_layer == layer and t_sub != sub):
                up.append(f"{module} -> {target}")
    assert up == []


def test_no_import_circles_between_modules():
    assert _circles(_edges(_modules(PACKAGE))) == []


def test_circle_finder_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_names_imported_across_modules():
    modules = _modules(PACKAGE)
    taken = []
    for module, path in modules.items():
        for target, names in _imports(path):
            for name in names:
                private = name.startswith("_") and not name.startswith("__")
                ours = target.split(".")[0] == "napari_drunet"
                if ours and private and f"{target}.{name}" not in modules:  # a private module is fine
                    taken.append(f"{module}: {target}.{name}")
    assert taken == []


def test_core_never_imports_the_package_root_or_its_adapters():
    up = [f"{m} -> {t}" for m, path in _modules(CORE).items() for t, _ in _imports(path)
          if t == "napari_drunet" or (t.startswith("napari_drunet.")
                                      and not t.startswith("napari_drunet.core"))]
    assert up == []


def test_importing_every_core_module_loads_no_gui_package():
    modules = sorted(_modules(CORE))
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


def test_old_module_paths_still_import_with_a_warning():
    import warnings

    from napari_drunet.core.deprecated import MOVED

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import napari_drunet.core.model as old  # noqa: PLC0415 - the old path under test
    from napari_drunet.core.models import model as new

    assert old is new
    assert any("napari_drunet.core.models.model" in str(w.message) for w in caught)
    for old_name, new_name in MOVED.items():  # every alias names a module that exists
        assert (PACKAGE.parent / (new_name.replace(".", "/") + ".py")).exists(), old_name
        assert not (PACKAGE.parent / (old_name.replace(".", "/") + ".py")).exists(), old_name
