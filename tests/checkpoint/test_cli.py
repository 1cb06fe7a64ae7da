"""The checkpoint subcommands: make-checkpoint, convert, inspect (in-process, and one real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from nemo_ref.checkpoint import inspect_checkpoint, load_model
from nemo_ref.cli import main
from nemo_ref.config import ModelArgs
from nemo_ref.model import Transformer


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """nemo-tiny, seed 3, HF layout in bf16, made by the command."""
    out = tmp_path_factory.mktemp("cli") / "tiny-hf"
    argv = ["make-checkpoint", "--preset", "nemo-tiny", "--layout", "hf", "--out", str(out), "--seed", "3"]
    assert main([*argv, "--max-shard-bytes", "20000000"]) == 0
    return out


def test_make_checkpoint_writes_marked_random_weights(made, capsys):
    info = inspect_checkpoint(made)
    assert info["layout"] == "hf" and info["dtypes"] == {"BF16": 21} and len(info["files"]) == 3
    assert info["random_weights"] is True
    assert info["metadata"] == {
        "format": "pt",
        "nemo_ref.random_weights": "true",
        "nemo_ref.preset": "nemo-tiny",
        "nemo_ref.seed": "3",
    }
    readme = (made / "README.txt").read_text()
    assert readme.startswith("RANDOM WEIGHTS") and "--preset nemo-tiny --seed 3" in readme
    # The weights are init_random(3), exactly.
    expected = Transformer(ModelArgs.preset("nemo-tiny"), dtype=torch.bfloat16).init_random(3)
    loaded = load_model(made, dtype=None, progress=False)
    for (name, a), (_, b) in zip(expected.named_parameters(), loaded.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_make_checkpoint_prints_that_weights_are_random(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["make-checkpoint", "--preset", "nemo-tiny", "--out", str(out), "--dtype", "fp32"]) == 0
    printed = capsys.readouterr().out
    assert "RANDOM weights (seed 0)" in printed and "mistral layout, fp32" in printed
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "consolidated.safetensors", "params.json"]
    assert inspect_checkpoint(out)["dtypes"] == {"F32": 21}
    # A non-empty output directory needs --force.
    assert main(["make-checkpoint", "--preset", "nemo-tiny", "--out", str(out)]) == 1
    assert "is not empty (pass --force" in capsys.readouterr().err
    assert (
        main(["make-checkpoint", "--preset", "nemo-tiny", "--out", str(out), "--force", "--seed", "1"]) == 0
    )


def test_convert_round_trip_is_lossless_and_keeps_the_mark(made, tmp_path, capsys):
    assert main(["convert", str(made), "--to", "mistral", "--out", str(tmp_path / "m")]) == 0
    assert "RANDOM weights" in capsys.readouterr().out
    assert (
        main(
            [
                "convert",
                str(tmp_path / "m"),
                "--to",
                "hf",
                "--out",
                str(tmp_path / "h"),
                "--max-shard-bytes",
                "20000000",
            ]
        )
        == 0
    )
    for shard in sorted(p.name for p in made.glob("model-*.safetensors")):
        assert (made / shard).read_bytes() == (tmp_path / "h" / shard).read_bytes()
    assert (tmp_path / "m" / "README.txt").read_text() == (made / "README.txt").read_text()
    assert inspect_checkpoint(tmp_path / "m")["random_weights"] is True


def test_convert_can_change_dtype(made, tmp_path):
    assert main(["convert", str(made), "--to", "mistral", "--out", str(tmp_path), "--dtype", "fp32"]) == 0
    assert inspect_checkpoint(tmp_path)["dtypes"] == {"F32": 21}


def test_convert_into_its_own_directory_needs_force(made, tmp_path, capsys):
    assert main(["convert", str(made), "--to", "hf", "--out", str(made)]) == 1
    assert "is the source directory" in capsys.readouterr().err


def test_inspect_text_and_json(made, capsys):
    assert main(["inspect", str(made)]) == 0
    text = capsys.readouterr().out
    assert "hf (config.json)" in text and "25,375,200 in 21 tensors" in text and "BF16" in text
    assert "RANDOM (make-checkpoint --preset nemo-tiny --seed 3)" in text
    assert "dim 96, 2 layers, 4 heads of 32 over 1 KV heads" in text
    assert main(["inspect", str(made), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 25_375_200 and info["bytes"] == 2 * 25_375_200


def test_errors_are_one_line_and_exit_1(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nemo-ref inspect: error: checkpoint directory") and err.count("\n") == 1
    assert main(["convert", str(tmp_path), "--to", "hf", "--out", str(tmp_path / "x")]) == 1
    assert "unknown checkpoint layout" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["make-checkpoint", "--preset", "nemo-7b", "--out", str(tmp_path / "y")])


def test_the_nemo_ref_command_dispatches_to_them(made, capsys):
    cli = pytest.importorskip("nemo_ref.cli")
    assert cli.main(["inspect", str(made)]) == 0
    assert "25,375,200" in capsys.readouterr().out


def test_module_entry_point(made):
    r = subprocess.run(
        [sys.executable, "-m", "nemo_ref.cli", "inspect", str(made), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(r.stdout)["layout"] == "hf"
