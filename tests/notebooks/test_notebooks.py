"""The notebooks: each source (``notebooks/NN_name.py``, jupytext percent format) has its committed
``.ipynb`` with exactly the source's cells, committed executed without an error, and each runs top to
bottom here. ``scripts/build_notebooks.py`` builds them (and runs them) the same way.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
SOURCES = sorted(p.name for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("jupytext")


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "scripts" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_source_has_its_notebook_and_back():
    assert len(SOURCES) >= 4
    built = {p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")}
    assert built == {Path(s).stem for s in SOURCES}, "run python scripts/build_notebooks.py"


@pytest.mark.parametrize("name", SOURCES)
def test_committed_notebook_has_its_sources_cells(name):
    gen = _builder()
    source = NOTEBOOK_DIR / name
    committed = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    assert gen.cells(committed) == gen.cells(gen.build(source)), (
        f"{source.with_suffix('.ipynb').name} differs from {name}: edit the .py, then run "
        "python scripts/build_notebooks.py"
    )
    assert [c.id for c in committed.cells] == [f"c{i:02d}" for i in range(len(committed.cells))]


@pytest.mark.parametrize("name", SOURCES)
def test_committed_notebook_was_executed_in_order_without_error(name):
    nb = nbformat.read((NOTEBOOK_DIR / name).with_suffix(".ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "not one clean run"
    errors = [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    plots = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert plots, "no plot in the committed outputs"


def test_notebooks_say_random_weights():
    """Every notebook that runs a model says that its weights are random."""
    for name in SOURCES:
        text = (NOTEBOOK_DIR / name).read_text()
        if "embedded_model" in text or "compare.from_prompt" in text:
            assert "random weights" in text.lower(), name


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    pytest.importorskip("ipykernel")
    pytest.importorskip("nbclient")
    return _builder().write_kernel_spec(tmp_path_factory.mktemp("kernels"))


@pytest.mark.slow
@pytest.mark.parametrize("name", SOURCES)
def test_notebook_runs_top_to_bottom(name, kernel_dir):
    gen = _builder()
    nb = gen.build(NOTEBOOK_DIR / name)
    seconds = gen.execute(nb, kernel_dir)  # raises CellExecutionError (cell and traceback) on an error
    print(f"{name}: {seconds:.1f} s")
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.get("output_type") == "error"
    ]
    assert not errors
