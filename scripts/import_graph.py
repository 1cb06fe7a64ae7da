"""The import graph of nemo_ref: its cycles and its upward imports (docs/architecture.md).

    python scripts/import_graph.py            # cycles and upward imports; exit 1 if there is either
    python scripts/import_graph.py --edges    # also every edge, one "importer -> imported" a line

The graph is read from the source with ``ast`` (nothing is imported): every ``import`` and ``from
... import`` in nemo_ref/ and kernels/ (installed as nemo_ref.kernels), at module level or inside a
function (a lazy import is still a dependency). ``from pkg import name`` is an edge to the module
``pkg.name`` when that is a module, else to ``pkg`` itself (its ``__init__``); a module's parent
packages are not counted as its imports.

A **cycle** is a strongly connected set of two or more modules; each is printed with one path that
goes round it. An **upward import** is one from a lower layer into a higher one of ``LAYERS`` (the
dependency rule: the core knows nothing of the faces built on it). A module in no layer is an error
too (it could hide an upward import). Imports of a module's own package ``__init__`` are listed as
notes. Exit status 1 if there is a cycle, an upward import or an unlayered module.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "nemo_ref"
SOURCES = {PACKAGE: ROOT / "nemo_ref", f"{PACKAGE}.kernels": ROOT / "kernels"}  # pyproject's package-dir

# The dependency rule, lowest layer first. A module may import from its own layer and the ones
# below it, never from one above. A module's layer is that of the longest name here that it is, or
# lies under (below nemo_ref): "sampling" is the spec, "sampling.sampler" the backend choice above it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("config", "backends", "rope", "sampling", "chat_messages", "family"),  # facts, the sampling spec
    # the model, its files, and the kernels with the one call that picks them or torch
    ("kernels", "sampling.sampler", "model", "batch", "kv_cache", "tokenizer", "checkpoint", "demo"),
    ("tp", "tp_load"),  # the model over several devices
    ("sequence", "constraint", "structured", "engine", "request", "generate", "tp_driver", "compare"),
    ("server", "probe"),  # the HTTP faces
    ("cli", "__main__", "__init__"),  # the command line; the package's public re-exports
)


def modules() -> dict[str, Path]:
    """Every module's dotted name -> its file (a package is its ``__init__.py``)."""
    found: dict[str, Path] = {}
    for prefix, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([prefix, *parts])] = path
    return found


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from X import ...`` names (``X`` resolved against ``importer``)."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported nemo_ref module, line) for every import in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, is_package, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:
                    yield sub, node.lineno
                elif target in known:
                    yield target, node.lineno


def graph() -> dict[str, dict[str, int]]:
    """importer -> {imported: first line}, nemo_ref's modules only."""
    known = modules()
    edges: dict[str, dict[str, int]] = {m: {} for m in known}
    for name, path in known.items():
        for target, line in imports(name, path, known):
            if target != name:
                edges[name].setdefault(target, line)
    return edges


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected sets of two or more modules (Tarjan), each as one closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_closed_path(sorted(component), edges))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _closed_path(component: list[str], edges: dict[str, dict[str, int]]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w == start:
                    path = [start]
                    while v != start:
                        path.append(v)
                        v = previous[v]
                    return [start, *reversed(path[1:]), start]
                if w in members and w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{component} is not strongly connected")


def layer(module: str) -> int | None:
    """The module's index in LAYERS (its longest name there), None if it is in none."""
    name = module.removeprefix(PACKAGE + ".") if module != PACKAGE else "__init__"
    best: tuple[int, int] | None = None  # (length of the name matched, layer)
    for i, names in enumerate(LAYERS):
        for key in names:
            if (name == key or name.startswith(key + ".")) and (best is None or len(key) > best[0]):
                best = (len(key), i)
    return None if best is None else best[1]


def upward(edges: dict[str, dict[str, int]]) -> list[tuple[str, str, int]]:
    """(importer, imported, line) where the imported module's layer is above the importer's."""
    found = []
    for a in sorted(edges):
        for b, line in sorted(edges[a].items()):
            la, lb = layer(a), layer(b)
            if la is not None and lb is not None and lb > la:
                found.append((a, b, line))
    return found


def into_own_package(edges: dict[str, dict[str, int]]) -> list[tuple[str, str, int]]:
    """(module, package, line) where a module imports its own package's ``__init__``: not wrong in
    itself, but the start of a cycle as soon as that ``__init__`` imports the module back. A
    ``__main__`` that runs its package's ``main`` is what it is for, and not listed."""
    return [
        (a, b, line)
        for a in sorted(edges)
        for b, line in sorted(edges[a].items())
        if a.startswith(b + ".") and not a.endswith(".__main__")
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edges", action="store_true", help="also print every edge")
    args = ap.parse_args(argv)
    edges = graph()
    where = {m: path.relative_to(ROOT) for m, path in modules().items()}
    if args.edges:
        for a in sorted(edges):
            for b, line in sorted(edges[a].items()):
                print(f"{a} -> {b}  ({where[a]}:{line})")
    found, ups = cycles(edges), upward(edges)
    unlayered = sorted(m for m in edges if layer(m) is None)
    n_edges = sum(len(v) for v in edges.values())
    print(f"{len(edges)} modules, {n_edges} imports: {len(found)} cycle(s), {len(ups)} upward import(s)")
    for path in found:
        print("cycle: " + "; ".join(f"{a} -> {b} ({where[a]}:{edges[a][b]})" for a, b in pairwise(path)))
    for a, b, line in ups:
        print(f"upward: {a} -> {b} ({where[a]}:{line}; layer {layer(a)} -> {layer(b)})")
    for m in unlayered:
        print(f"unlayered: {m} ({where[m]}): add its name to a layer of LAYERS in scripts/import_graph.py")
    for a, package, line in into_own_package(edges):
        print(f"note: {a} imports its own package {package}'s __init__ ({where[a]}:{line})")
    return 1 if found or ups or unlayered else 0


if __name__ == "__main__":
    sys.exit(main())
