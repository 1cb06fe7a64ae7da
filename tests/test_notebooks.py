"""The educational notebooks: each runs top to bottom without an error; the committed files carry no
outputs and are exactly what ``scripts/make_notebooks.py`` writes.

The notebooks run in a Jupyter kernel started with *this* interpreter (``sys.executable``), through
a kernel spec written to a temporary directory: a ``python3`` kernel spec installed elsewhere on
the machine (the user's, pointing at another Python) can never be picked up by mistake, and a fresh
venv needs nothing beyond ``pip install -e ".[notebooks]"``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "scripts" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_generated_notebook_is_committed():
    assert set(NOTEBOOKS) == set(_generator().NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs(name):
    nb = json.loads((NOTEBOOK_DIR / name).read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{name}: cell {i} has outputs; strip them"
            assert cell.get("execution_count") is None, f"{name}: cell {i} has an execution count"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_matches_its_generator(name):
    gen = _generator()
    assert name in gen.NOTEBOOKS, f"{name} is not written by scripts/make_notebooks.py"
    assert (NOTEBOOK_DIR / name).read_text() == gen.render(gen.NOTEBOOKS[name]), (
        f"{name} differs from scripts/make_notebooks.py: edit the script, then run it"
    )


@pytest.fixture(scope="module")
def kernel_spec_dir(tmp_path_factory):
    """A kernel spec named 'nemo-ref-test' that starts ipykernel with this very interpreter."""
    pytest.importorskip("ipykernel")
    root = tmp_path_factory.mktemp("kernels")
    spec = root / "nemo-ref-test"
    spec.mkdir()
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "nemo_ref test kernel",
                "language": "python",
            }
        )
    )
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, kernel_spec_dir):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    km = KernelManager(
        kernel_name="nemo-ref-test",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_spec_dir)]),
    )
    client = nbclient.NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},  # run where a reader would
    )
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError (with the cell and traceback) on any error
    elapsed = time.perf_counter() - t0
    print(f"{name}: {elapsed:.1f} s")
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.get("output_type") == "error"
    ]
    assert not errors
