"""Builds the notebooks in ``notebooks/`` from their sources, the jupytext percent-format ``.py`` files.

    python scripts/build_notebooks.py              # run every notebook, write notebooks/*.ipynb with outputs
    python scripts/build_notebooks.py 04_engines   # only the notebooks whose names contain 04_engines
    python scripts/build_notebooks.py --check      # exit 1 if a committed .ipynb's cells differ from its .py

The ``.py`` files are what one edits (and what ruff lints); the ``.ipynb`` files are committed *executed*,
so that GitHub shows their tables and plots, and with fixed cell ids, so that rebuilding changes only
what really changed. Outputs come from this machine's run (random weights; CPU timings).
``tests/notebooks/test_notebooks.py`` checks that every committed notebook's cells are exactly its source's and
runs every notebook top to bottom.

Notebooks run in a Jupyter kernel started with *this* interpreter (``sys.executable``), through a
kernel spec written to a temporary directory: a ``python3`` kernel spec installed elsewhere (the
user's, pointing at another Python) is never picked up by mistake.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
KERNEL_NAME = "nemo-ref-notebooks"
CELL_TIMEOUT_S = 300
METADATA = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
    # Jupyter with jupytext installed keeps the .py in sync when the .ipynb is edited and saved.
    "jupytext": {"formats": "ipynb,py:percent"},
}


def sources() -> list[Path]:
    """The notebooks' sources: ``notebooks/NN_name.py`` (``_helpers.py`` is a module they import)."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))


def build(source: Path) -> nbformat.NotebookNode:
    """The notebook of one source file, without outputs."""
    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata = json.loads(json.dumps(METADATA))
    for i, cell in enumerate(nb.cells):
        cell.metadata = {}
        cell.id = f"c{i:02d}"  # fixed ids: reproducible files
    nbformat.validate(nb)
    return nb


def cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """What a notebook says, outputs aside: (cell type, source) per cell."""
    return [(c.cell_type, c.source) for c in nb.cells]


def write_kernel_spec(root: Path) -> Path:
    """A kernel spec that starts ipykernel with this very interpreter; returns its parent folder."""
    spec = root / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "nemo_ref", "language": "python"})
    )
    return root


def execute(nb: nbformat.NotebookNode, kernel_dir: Path) -> float:
    """Run ``nb`` in place, top to bottom, in the notebooks folder (as a reader would); seconds taken.

    Raises nbclient's CellExecutionError, with the cell and traceback, on the first error.
    """
    import nbclient
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    km = KernelManager(
        kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)])
    )
    client = nbclient.NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT_S,
        record_timing=False,  # no timestamps in the committed files
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    t0 = time.perf_counter()
    client.execute()
    nb.metadata = json.loads(json.dumps(METADATA))  # the kernel's own spec and version stay out
    return time.perf_counter() - t0


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="build only the notebooks whose names contain one of these")
    parser.add_argument(
        "--check", action="store_true", help="only compare the committed cells with the sources"
    )
    args = parser.parse_args(argv)
    chosen = [s for s in sources() if not args.names or any(n in s.stem for n in args.names)]
    if args.check:
        stale = []
        for source in chosen:
            target = source.with_suffix(".ipynb")
            if not target.exists() or cells(nbformat.read(target, as_version=4)) != cells(build(source)):
                stale.append(target.name)
        if stale:
            print(f"out of date (run python scripts/build_notebooks.py): {', '.join(stale)}", file=sys.stderr)
            return 1
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        kernel_dir = write_kernel_spec(Path(tmp))
        for source in chosen:
            nb = build(source)
            seconds = execute(nb, kernel_dir)
            target = source.with_suffix(".ipynb")
            target.write_text(render(nb))
            print(f"wrote {target.relative_to(ROOT)} ({seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
