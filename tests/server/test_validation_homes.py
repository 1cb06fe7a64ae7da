"""One home per validation rule: every path that checks a rule gives that home's answer.

- tool definitions and tool_choice: nemo_ref/chat_messages.py (`tool_functions`,
  `tool_choice_mode`); the prompt encoder, the grammar builder and the server say the same;
- sampling ranges: `SamplingParams`; the server's 400 carries its message and field;
- the server's context: the model's `max_positions` (past `max_seq_len` with a RoPE scaling),
  capped by `max_model_len`.

The expected texts (field names, ranges) are written here by hand.
"""

from __future__ import annotations

import pytest
import torch

from nemo_ref.chat_messages import ChatFormatError, tool_choice_mode, tool_functions
from nemo_ref.config import ModelArgs, RopeScaling
from nemo_ref.model import Transformer
from nemo_ref.sampling.params import ParamError, SamplingParams

pytest.importorskip("fastapi")
from nemo_ref.server.state import served_context

# ---- logit_bias keys: bounded before int() ----------------------------------------------------


@pytest.mark.parametrize("key", ["1" * 5000, "9" * 11, 2**31, "2147483648", "٣", "+5", "-3", "1e3"])
def test_logit_bias_keys_outside_the_id_range_are_param_errors(key):
    # Before: a 5,000-digit key raised Python's ValueError (int() refuses 4,300+ digits).
    with pytest.raises(ParamError) as e:
        SamplingParams(logit_bias={key: 1.0})
    assert e.value.param == "logit_bias"
    assert "logit_bias" in str(e.value) and "[0, 2**31 - 1]" in str(e.value)
    assert len(str(e.value)) < 300  # the key is shown shortened


def test_logit_bias_keys_inside_the_id_range():
    p = SamplingParams(logit_bias={"2147483647": 1, "0": -1, 5: 2, " 7 ": 3})
    assert p.logit_bias == {0: -1.0, 5: 2.0, 7: 3.0, 2147483647: 1.0}


# ---- tool definitions: one rule, one message, whichever path checks it ------------------------

BAD_TOOLS = [
    ("add", "tools must be a list"),
    ([{"type": "retrieval"}], "tools[0]: only type 'function' tools are supported"),
    ([{"type": "function", "function": {}}], "tools[0]: function.name is required"),
    (
        [{"type": "function", "function": {"name": "bad name"}}],
        "tools[0]: function.name 'bad name' must be 1-64 of a-z, A-Z, 0-9, _ and -",
    ),
    (
        [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}],
        "tools[1]: duplicate function name 'f'",
    ),
    (
        [{"type": "function", "function": {"name": "f", "parameters": 7}}],
        "tools[0]: function.parameters must be an object",
    ),
]


@pytest.mark.parametrize("tools, message", BAD_TOOLS)
def test_a_bad_tool_gets_one_message_from_every_path(tok, tools, message):
    from nemo_ref.constraint import GrammarError
    from nemo_ref.structured import grammar_for_request

    with pytest.raises(ChatFormatError) as home:
        tool_functions(tools)
    with pytest.raises(ChatFormatError) as prompt:
        tok.encode_chat([{"role": "user", "content": "hi"}], tools=tools)
    with pytest.raises(GrammarError) as grammar:
        grammar_for_request(None, tools, "auto")
    for err in (home, prompt, grammar):
        assert (str(err.value), err.value.param) == (message, "tools")


BAD_CHOICES = [
    ("sometimes", ["f"], "tool_choice must be 'auto', 'none', 'required', 'any' or a named function"),
    ("required", [], "tool_choice 'required' needs at least one tool"),
    ("any", [], "tool_choice 'any' needs at least one tool"),
    (
        {"type": "function", "function": {"name": "g"}},
        ["f"],
        "tool_choice names the function 'g', which is not among the tools ['f']",
    ),
    ({"type": "function"}, ["f"], 'a named tool_choice is {"type": "function", "function": {"name": ...}}'),
    (3, ["f"], "tool_choice must be a string or an object"),
]


@pytest.mark.parametrize("choice, names, message", BAD_CHOICES)
def test_a_bad_tool_choice_gets_one_message_from_every_path(choice, names, message):
    from nemo_ref.constraint import GrammarError
    from nemo_ref.structured import grammar_for_request

    tools = [{"type": "function", "function": {"name": n}} for n in names]
    with pytest.raises(ChatFormatError) as home:
        tool_choice_mode(choice, names)
    with pytest.raises(GrammarError) as grammar:
        grammar_for_request(None, tools, choice)
    for err in (home, grammar):
        assert str(err.value).startswith(message) and err.value.param == "tool_choice"


def test_an_empty_parameters_schema_is_kept_and_no_parameters_means_no_arguments():
    pytest.importorskip("llguidance")
    from nemo_ref.structured import grammar_for_request

    def tool(**fn):
        return [{"type": "function", "function": {"name": "f", **fn}}]

    assert tool_functions(tool(parameters={}))[0].parameters == {}
    assert tool_functions(tool())[0].parameters is None
    no_args = {"type": "object", "properties": {}, "additionalProperties": False}
    assert grammar_for_request(None, tool(), "required") == grammar_for_request(
        None, tool(parameters=no_args), "required"
    )
    assert grammar_for_request(None, tool(parameters={}), "required") != grammar_for_request(
        None, tool(), "required"
    )


def test_tool_choice_modes():
    assert tool_choice_mode(None, []) == ("auto", None)
    assert tool_choice_mode("none", []) == ("none", None)
    assert tool_choice_mode("any", ["f"]) == ("required", None)
    assert tool_choice_mode({"type": "function", "function": {"name": "f"}}, ["f"]) == ("required", "f")


# ---- the server: the homes' answers, and its context -------------------------------------------

ORIGINAL = 64  # the trained context of the tiny model below
FACTOR = 4.0


@pytest.fixture(scope="module")
def client(tok):
    """The app around a tiny YaRN-scaled model: trained on 64 positions, scaled 4x."""
    pytest.importorskip("llguidance")
    from fastapi.testclient import TestClient

    from nemo_ref.server.app import create_app

    rope = RopeScaling(rope_type="yarn", factor=FACTOR, original_max_position_embeddings=ORIGINAL)
    args = ModelArgs.preset("nemo-tiny").replace(max_seq_len=ORIGINAL, rope_scaling=rope)
    model = Transformer(args, attn_backend="sdpa", dtype=torch.float32).init_random(0)
    with TestClient(create_app(model, tok, model_name="m", max_batch=2, sampler="torch")) as c:
        yield c


def _error(r, param: str) -> str:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error", err
    return err["message"]


def _chat(client, **kw):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **kw}
    return client.post("/v1/chat/completions", json=body)


@pytest.mark.parametrize(
    "field, value",
    [("temperature", 3.5), ("top_p", -0.5), ("top_k", -2), ("n", 0), ("seed", 2**63), ("max_tokens", 0)],
)
def test_the_servers_sampling_errors_are_sampling_params_errors(client, field, value):
    with pytest.raises(ParamError) as core:
        SamplingParams(**{field: value})
    assert _error(_chat(client, **{field: value}), field) == str(core.value)


def test_a_5000_digit_logit_bias_key_is_a_400_naming_the_id_range(client):
    message = _error(_chat(client, logit_bias={"1" * 5000: 1}), "logit_bias")
    assert "[0, 2**31 - 1]" in message and len(message) < 300


def test_completions_logprobs_is_named_as_the_client_wrote_it(client):
    r = client.post("/v1/completions", json={"model": "m", "prompt": "hi", "logprobs": 21})
    assert "logprobs must be an integer in [0, 20]" in _error(r, "logprobs")


def test_the_servers_tool_errors_are_the_homes(client):
    tools = [{"type": "function", "function": {"name": "f"}}] * 2
    assert _error(_chat(client, tools=tools), "tools") == "tools[1]: duplicate function name 'f'"
    # checked even when no grammar would enforce the tools
    message = _error(_chat(client, tool_choice="required", structured_outputs=False), "tool_choice")
    assert message == "tool_choice 'required' needs at least one tool"


def test_detokenize_and_prompt_ids_share_the_id_rule(client):
    r = client.post("/detokenize", json={"tokens": [1, 131072]})
    assert _error(r, "tokens") == "token ids must lie in [0, 131072); got [131072]"
    r = client.post("/v1/completions", json={"model": "m", "prompt": [1, 131072], "max_tokens": 1})
    assert _error(r, "prompt") == "token ids must lie in [0, 131072); got [131072]"


def test_served_context_is_max_positions_capped_by_max_model_len():
    rope = RopeScaling(rope_type="yarn", factor=FACTOR, original_max_position_embeddings=ORIGINAL)
    scaled = ModelArgs.preset("nemo-tiny").replace(max_seq_len=ORIGINAL, rope_scaling=rope)
    assert served_context(scaled, None) == 256  # 4 x 64: the scaling is what makes it servable
    assert served_context(scaled, 100) == 100
    assert served_context(scaled, 10_000) == 256
    plain = ModelArgs.preset("nemo-tiny").replace(max_seq_len=ORIGINAL)
    assert served_context(plain, None) == 64 and served_context(plain, 10_000) == 64


def test_the_server_runs_past_the_trained_context_with_a_rope_scaling(client):
    assert client.get("/health").json()["max_model_len"] == 256  # 4 x the trained 64
    prompt = list(range(1000, 1200))  # 200 tokens: past max_seq_len, inside max_positions
    r = client.post("/v1/completions", json={"model": "m", "prompt": prompt, "max_tokens": 4, "seed": 1})
    assert r.status_code == 200, r.text
    assert r.json()["usage"] == {"prompt_tokens": 200, "completion_tokens": 4, "total_tokens": 204}
    r = client.post("/v1/completions", json={"model": "m", "prompt": list(range(1000, 1256))})
    assert "256" in _error(r, "prompt")  # 256 is the limit
