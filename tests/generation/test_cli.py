"""The ``nemo-ref generate`` command: flags reach the sampler, random weights are always announced."""

from __future__ import annotations

import json

import pytest

from nemo_ref.cli import main
from nemo_ref.generate import generate
from nemo_ref.sampling.params import SamplingParams
from nemo_ref.tokenizer import load_tokenizer

BASE = ["generate", "Hello", "--preset", "nemo-tiny", "--max-tokens", "5"]


def test_generate_json_matches_library_and_says_random(capsys):
    flags = ["--seed", "4", "--temperature", "0.7", "--top-k", "40", "--top-p", "0.9", "--min-p", "0.01"]
    assert main([*BASE, *flags, "--json", "--logprobs", "--top-logprobs", "2"]) == 0
    captured = capsys.readouterr()
    assert "random weights" in captured.err
    data = json.loads(captured.out)
    assert "random weights" in data["warning"]
    assert data["seed"] == 4
    from nemo_ref.demo import embedded_model

    params = SamplingParams(
        seed=4, temperature=0.7, top_k=40, top_p=0.9, min_p=0.01, max_tokens=5, logprobs=True, top_logprobs=2
    )
    ref = generate(embedded_model("nemo-tiny"), load_tokenizer(), "Hello", params)
    assert data["choices"][0]["token_ids"] == ref.token_ids
    assert data["choices"][0]["text"] == ref.text
    assert len(data["choices"][0]["logprobs"][0]["top_logprobs"]) == 2
    assert data["usage"]["total_tokens"] == ref.usage.total_tokens


def test_generate_explain_prints_every_stage(capsys):
    assert main([*BASE, "--seed", "1", "--explain", "2", "--temperature", "0.5"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== step") == 2
    for stage in ("raw", "bias", "penalties", "temperature", "min_p", "top_k", "top_p"):
        assert stage in out


def test_generate_stream_prints_the_same_text(capsys):
    assert main([*BASE, "--seed", "2", "--stream"]) == 0
    streamed = capsys.readouterr().out
    assert main([*BASE, "--seed", "2"]) == 0
    plain = capsys.readouterr().out
    assert streamed == plain


def test_bad_sampling_flag_is_a_clear_error(capsys):
    assert main([*BASE, "--top-p", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "top_p" in err


def test_logit_bias_flag_format_is_checked():
    with pytest.raises(SystemExit, match="ID=VALUE"):
        main([*BASE, "--logit-bias", "12"])


def test_random_checkpoint_is_announced(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    assert main(["make-checkpoint", "--preset", "nemo-tiny", "--layout", "hf", "--out", str(ckpt)]) == 0
    capsys.readouterr()
    with pytest.warns(UserWarning, match="no tekken.json"):
        assert main(["generate", "Hi", "--checkpoint", str(ckpt), "--max-tokens", "2", "--seed", "0"]) == 0
    assert "random weights" in capsys.readouterr().err
