"""The ``nemo-ref`` command as a package: every subcommand reachable, and the CLI at the top of the
import graph (scripts/import_graph.py), with nothing outside nemo_ref/cli/ importing it."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import nemo_ref
from nemo_ref.cli import main

SUBCOMMANDS = ("generate", "make-checkpoint", "convert", "inspect", "serve", "compare", "probe")
ROOT = Path(nemo_ref.__file__).resolve().parent.parent  # the checkout, wherever this file lies in tests/


def _in_cli(module: str) -> bool:
    return module == "nemo_ref.cli" or module.startswith("nemo_ref.cli.")


def _import_graph() -> SimpleNamespace:
    return SimpleNamespace(**runpy.run_path(str(ROOT / "scripts" / "import_graph.py")))


def test_python_m_nemo_ref_cli_lists_every_subcommand():
    out = subprocess.run(
        [sys.executable, "-m", "nemo_ref.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "{" + ",".join(SUBCOMMANDS) + "}" in out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_its_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: nemo-ref {command} ")


def test_the_cli_is_imported_by_nothing_outside_it_and_is_in_no_cycle():
    graph = _import_graph()
    edges = graph.graph()
    assert "nemo_ref.cli.flags" in edges["nemo_ref.cli.serve"]  # the graph sees the CLI's own imports
    assert "nemo_ref.server.app" in edges["nemo_ref.cli.serve"]  # lazy ones too
    importers = {a for a, targets in edges.items() for b in targets if _in_cli(b)}
    assert {a for a in importers if not _in_cli(a)} == {"nemo_ref.__main__"}
    for cycle in graph.cycles(edges):
        assert not any(m.startswith(("nemo_ref.cli", "nemo_ref.server")) for m in cycle), cycle
    assert [u for u in graph.upward(edges) if _in_cli(u[1])] == []


def test_import_graph_finds_cycles_and_upward_imports():
    graph = _import_graph()
    edges = {
        "nemo_ref.cli": {"nemo_ref.server.app": 1},
        "nemo_ref.server.app": {"nemo_ref.cli.flags": 7, "nemo_ref.model": 2},
        "nemo_ref.cli.flags": {"nemo_ref.cli": 3},
        "nemo_ref.model": {},
    }
    assert graph.cycles(edges) == [
        ["nemo_ref.cli", "nemo_ref.server.app", "nemo_ref.cli.flags", "nemo_ref.cli"]
    ]
    assert graph.upward(edges) == [("nemo_ref.server.app", "nemo_ref.cli.flags", 7)]
    assert graph.into_own_package(edges) == [("nemo_ref.cli.flags", "nemo_ref.cli", 3)]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "hi", "--explain", "-1"], "--explain must be >= 0"),
        (
            ["generate", "hi", "--device", "bogus"],
            "--device 'bogus' is not a device: Expected one of cpu, cuda",
        ),
        (["compare", "hi", "--device", "cuda:0"], "--device cuda:0: CUDA is not available here"),
        (
            ["generate", "hi", "--device", "cpu", "--sampler", "triton"],
            "--sampler triton needs a CUDA device",
        ),
        (
            ["compare", "hi", "--device", "cpu", "--attn-backend", "triton"],
            "--attn-backend triton needs a CUDA",
        ),
        (["serve", "--port", "65536"], "--port must be in [0, 65535]"),
        (["serve", "--device", "bogus"], "--device 'bogus' is not a device"),
    ],
)
def test_bad_device_and_range_flags_are_refused_before_any_model_is_built(argv, message, capsys, monkeypatch):
    pytest.importorskip("uvicorn")  # serve checks its extra first
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the kernels' CPU mode, set by conftest.py
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("nemo_ref.demo.embedded_model", None)  # building a model would fail loudly
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_import_graph_layers_by_the_longest_name():
    graph = _import_graph()
    assert graph.layer("nemo_ref.sampling.params") == graph.layer("nemo_ref.sampling") == 0
    assert graph.layer("nemo_ref.sampling.sampler") == graph.layer("nemo_ref.kernels.sampling") == 1
    assert graph.layer("nemo_ref.cli.flags") == graph.layer("nemo_ref") == len(graph.LAYERS) - 1
    assert graph.layer("nemo_ref.nowhere") is None
