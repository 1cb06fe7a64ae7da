"""The dependency rule of docs/architecture.md holds for the whole package, and the page's layer
diagram is the rule scripts/import_graph.py checks (LAYERS)."""

import re
import runpy
from pathlib import Path
from types import SimpleNamespace

import nemo_ref

ROOT = Path(nemo_ref.__file__).resolve().parent.parent


def _graph() -> SimpleNamespace:
    return SimpleNamespace(**runpy.run_path(str(ROOT / "scripts" / "import_graph.py")))


def test_no_cycle_no_upward_import_no_unlayered_module():
    g = _graph()
    edges = g.graph()
    assert len(edges) > 50  # the whole package was read
    assert g.cycles(edges) == []
    assert g.upward(edges) == []
    assert sorted(m for m in edges if g.layer(m) is None) == []
    assert g.into_own_package(edges) == []


def _doc_layers() -> list[set[str]]:
    """The layer diagram of docs/architecture.md: each layer's names, lowest first."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## The dependency rule", 1)[1].split("```", 2)[1]
    layers: dict[int, set[str]] = {}
    current = None
    for line in block.strip("\n").splitlines():
        line = line.split("#", 1)[0]  # what follows "#" is prose
        m = re.match(r"(\d)\s+(.*)", line)
        if m:
            current, line = int(m.group(1)), m.group(2)
        layers.setdefault(current, set()).update(w.rstrip("/") for w in line.split())
    return [layers[k] for k in sorted(layers)]


def test_the_page_draws_the_layers_the_script_checks():
    g = _graph()
    assert _doc_layers() == [set(layer) for layer in g.LAYERS]


def test_no_library_module_over_500_lines():
    """One idea per module: nemo_ref/ and kernels/ keep every file under ~500 lines (the longer
    files outside them, two notebooks and one benchmark script, say why in docs/architecture.md)."""
    g = _graph()
    sizes = {name: len(path.read_text().splitlines()) for name, path in g.modules().items()}
    assert len(sizes) > 50
    assert {name: n for name, n in sizes.items() if n > 500} == {}
