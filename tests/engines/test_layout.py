"""The engine emulations and the probe keep their layout rules: the emulations are core (numpy and
the standard library only, in every module, definitions/ included), and no module of either
package imports from its own package's __init__ (which imports the modules: a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nemo_ref.probe
import nemo_ref.sampling.engines

ENGINES = Path(nemo_ref.sampling.engines.__file__).parent
PROBE = Path(nemo_ref.probe.__file__).parent
STDLIB_AND_NUMPY = {"numpy", "math", "numbers", "sys", "collections", "dataclasses", "typing", "__future__"}


def _imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import | ast.ImportFrom)]


def test_every_engine_module_imports_numpy_and_the_standard_library_only():
    paths = sorted(ENGINES.rglob("*.py"))
    assert any(p.parent.name == "definitions" for p in paths)  # the walk reaches the definitions
    for path in paths:
        for node in _imports(path):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif node.level == 0:
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= STDLIB_AND_NUMPY, (str(path.relative_to(ENGINES)), roots)


def _from_own_package(path: Path, package_dir: Path) -> list[str]:
    """Names `path` imports from the __init__ of a package it is inside (`from . import NAME` where
    NAME is not a module, `from .. import NAME` from a subpackage, ...)."""
    found = []
    for node in _imports(path):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        if path.name == "__init__.py" and node.level == 1:
            continue  # a package's __init__ importing its own modules: the allowed direction
        base = path.parent
        for _ in range(node.level - 1):
            base = base.parent
        if node.module is not None or not base.is_relative_to(package_dir):
            continue  # from .x import ... names module x, not the __init__
        found += [
            a.name
            for a in node.names
            if not (base / f"{a.name}.py").exists() and not (base / a.name / "__init__.py").exists()
        ]
    return found


@pytest.mark.parametrize("package_dir", [ENGINES, PROBE], ids=["engines", "probe"])
def test_no_module_imports_names_from_its_own_package_init(package_dir):
    offenders = {}
    for path in sorted(package_dir.rglob("*.py")):
        names = _from_own_package(path, package_dir)
        if names:
            offenders[str(path.relative_to(package_dir))] = names
    assert not offenders


def test_the_rule_catches_an_import_from_the_package_init(tmp_path):
    """The check above can fail: a module taking a name from its package's __init__ is caught."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .a import X\nTESTS = ()\n")
    (pkg / "a.py").write_text("from . import TESTS\nfrom . import b\nX = 1\n")
    (pkg / "b.py").write_text("from .a import X\n")
    assert _from_own_package(pkg / "a.py", pkg) == ["TESTS"]
    assert _from_own_package(pkg / "b.py", pkg) == []
    assert _from_own_package(pkg / "__init__.py", pkg) == []
