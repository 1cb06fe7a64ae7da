"""The family end to end with 32k-vocabulary models: CLI, generate(), tool calls, the server.

Synthetic checkpoints (random weights, clearly marked) of scaled-down 7B shapes with the real
vocabularies -- ``mistral-tiny-v0.1`` (32000 ids) and ``mistral-tiny-v0.3`` (32768) -- written by
``make-checkpoint`` in both layouts with the SentencePiece tokenizer file mistral-common ships.
Oracles: mistral-common's ``encode_chat_completion`` for prompts, jsonschema for tool arguments.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

pytest.importorskip("mistral_common")
pytest.importorskip("sentencepiece")

from nemo_ref.cli import main
from nemo_ref.tokenizer import bundled_path, load_tokenizer

V1 = "tokenizer.model.v1"
V3 = "mistral_instruct_tokenizer_240323.model.v3"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{"v1": HF-layout mistral-tiny-v0.1 + tokenizer.model.v1, "v3": mistral-layout tiny-v0.3 + .v3}."""
    root = tmp_path_factory.mktemp("family")
    made = {}
    for key, preset, layout, tok in (
        ("v1", "mistral-tiny-v0.1", "hf", V1),
        ("v3", "mistral-tiny-v0.3", "mistral", V3),
    ):
        out = root / key
        argv = [
            "make-checkpoint",
            "--preset",
            preset,
            "--layout",
            layout,
            "--out",
            str(out),
            "--dtype",
            "fp32",
        ]
        # v3 by its path; v1 as "bundled", the file mistral-common ships for 32000 ids
        assert main([*argv, "--tokenizer", str(bundled_path(tok)) if key == "v3" else "bundled"]) == 0
        made[key] = out
    return made


def _mc_prompt(file: str, text: str) -> list[int]:
    from mistral_common.protocol.instruct.messages import UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    mc = MistralTokenizer.from_file(str(bundled_path(file)))
    return mc.encode_chat_completion(ChatCompletionRequest(messages=[UserMessage(content=text)])).tokens


def test_checkpoints_carry_their_tokenizer(checkpoints, capsys):
    assert (checkpoints["v1"] / "tokenizer.model.v1").is_file()
    assert (checkpoints["v3"] / "tokenizer.model.v3").is_file()
    capsys.readouterr()
    assert main(["inspect", str(checkpoints["v1"])]) == 0
    out = capsys.readouterr().out
    assert "tokenizer   tokenizer.model.v1" in out and "sliding window 4096" in out
    capsys.readouterr()
    assert main(["inspect", str(checkpoints["v3"])]) == 0
    out = capsys.readouterr().out
    assert "tokenizer   tokenizer.model.v3" in out and "RANDOM" in out
    assert "no published family member" in out  # a scaled-down shape, not 7B v0.3 itself


@pytest.mark.parametrize(("key", "file"), [("v1", V1), ("v3", V3)])
def test_generate_chat_with_a_family_checkpoint(checkpoints, capsys, key, file):
    text = "Quelle heure est-il à Zürich ?"
    argv = ["generate", text, "--chat", "--checkpoint", str(checkpoints[key]), "--json"]
    assert main([*argv, "--max-tokens", "6", "--seed", "3", "--dtype", "fp32"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert "random weights" in out["warning"] and "random weights" in captured.err
    assert out["usage"]["prompt_tokens"] == len(_mc_prompt(file, text))
    choice = out["choices"][0]
    assert len(choice["token_ids"]) == 6 and all(
        0 <= t < (32000 if key == "v1" else 32768) for t in choice["token_ids"]
    )
    tok = load_tokenizer(checkpoints[key])
    assert (tok.kind, tok.version) == ("sentencepiece", key)
    assert choice["text"] == tok.decode(choice["token_ids"])


def test_generate_with_a_family_preset_uses_its_tokenizer(capsys):
    text = "Hello there"
    argv = ["generate", text, "--preset", "mistral-tiny-v0.3", "--json", "--max-tokens", "3", "--seed", "1"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert "embedded default model 'mistral-tiny-v0.3'" in out["warning"]
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(bundled_path(V3)))
    assert out["usage"]["prompt_tokens"] == 1 + len(sp.encode(text))


def test_bad_preset_or_tokenizer_is_a_clear_error(checkpoints, tmp_path, capsys):
    assert main(["generate", "x", "--preset", "mistral-9b"]) == 2
    assert "error: unknown preset 'mistral-9b'; valid presets:" in capsys.readouterr().err
    # A 32768-id model with the 32000-id v1 tokenizer next to it.
    bad = tmp_path / "bad"
    shutil.copytree(checkpoints["v3"], bad)
    (bad / "tokenizer.model.v3").unlink()
    shutil.copy(bundled_path(V1), bad / "tokenizer.model.v1")
    assert main(["generate", "x", "--checkpoint", str(bad), "--max-tokens", "1"]) == 2
    err = capsys.readouterr().err
    assert "sentencepiece v1, 32000 ids" in err and "vocabulary of 32768 ids" in err


def test_tool_calls_with_a_sentencepiece_model(checkpoints):
    """tool_choice required on a v3 model: the grammar forces `[TOOL_CALLS]` (id 5) and a valid call."""
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("llguidance")
    from nemo_ref.checkpoint import load_model
    from nemo_ref.generate import generate
    from nemo_ref.sampling.params import SamplingParams
    from nemo_ref.structured import Constraint, parse_tool_calls, tool_grammar

    model = load_model(checkpoints["v3"], dtype=torch.float32, progress=False)
    tok = load_tokenizer(checkpoints["v3"])
    grammar = tool_grammar([WEATHER], "required", parallel_tool_calls=False)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    params = SamplingParams(temperature=1.0, seed=5, max_tokens=200)
    out = generate(
        model, tok, messages, params, tools=[WEATHER], constraint_factory=lambda: Constraint(tok, grammar)
    )
    (choice,) = out.choices
    assert choice.token_ids[0] == tok.special_id("[TOOL_CALLS]") == 5
    assert choice.finish_reason == "tool_calls"
    content, calls = parse_tool_calls(tok, choice.token_ids)
    assert content is None and len(calls) == 1 and calls[0]["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), WEATHER["function"]["parameters"])


def test_server_tokenize_and_tools_per_tokenizer(checkpoints):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from nemo_ref.checkpoint import load_model
    from nemo_ref.server.app import create_app

    for key, expected in (("v3", "sentencepiece v3, 32768 ids"), ("v1", "sentencepiece v1, 32000 ids")):
        model = load_model(checkpoints[key], dtype=torch.float32, progress=False)
        tok = load_tokenizer(checkpoints[key])
        with TestClient(create_app(model, tok, max_batch=2, max_model_len=512)) as client:
            r = client.post("/tokenize", json={"prompt": "Hello, world"}).json()
            assert r["tokenizer"] == expected and r["tokens"] == tok.encode("Hello, world")
            body = {
                "model": "nemo-ref",
                "messages": [{"role": "user", "content": "Weather in Paris?"}],
                "tools": [WEATHER],
                "tool_choice": "required",
                "parallel_tool_calls": False,
                "max_tokens": 200,
                "seed": 1,
            }
            r = client.post("/v1/chat/completions", json=body)
            if key == "v1":  # SentencePiece v1 has no tool-call format: a clear 400
                assert r.status_code == 400, r.text
                err = r.json()["error"]
                assert err["param"] == "tools" and "sentencepiece v1" in err["message"]
                schema = {
                    "type": "object",
                    "properties": {"n": {"enum": [1, 2, 3]}},
                    "required": ["n"],
                    "additionalProperties": False,
                }
                body = {
                    "model": "nemo-ref",
                    "messages": [{"role": "user", "content": "A number?"}],
                    "response_format": {
                        "type": "json_schema",
                        "json_schema": {"name": "n", "schema": schema},
                    },
                    "max_tokens": 200,
                    "seed": 2,
                }
                r = client.post("/v1/chat/completions", json=body)  # structured outputs need no tools
                assert r.status_code == 200, r.text
                (choice,) = r.json()["choices"]
                assert choice["finish_reason"] == "stop", choice
                assert json.loads(choice["message"]["content"])["n"] in (1, 2, 3)
            else:
                assert r.status_code == 200, r.text
                (choice,) = r.json()["choices"]
                assert choice["finish_reason"] == "tool_calls"
                (call,) = choice["message"]["tool_calls"]
                assert call["function"]["name"] == "get_weather"
                assert set(json.loads(call["function"]["arguments"])) == {"city"}
