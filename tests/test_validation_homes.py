"""One home per validation rule: every path that checks a rule gives that home's answer.

- tool definitions and tool_choice: nemo_ref/chat_messages.py (`tool_functions`,
  `tool_choice_mode`); the prompt encoder, the grammar builder and the server say the same;
- sampling ranges: `SamplingParams`; the server's 400 carries its message and field;
- the server's context: the model's `max_positions` (past `max_seq_len` with a RoPE scaling),
  capped by `max_model_len`.

The expected texts (field names, ranges) are written here by hand.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from nemo_ref.chat_messages import ChatFormatError, tool_choice_mode, tool_functions
from nemo_ref.config import ModelArgs, RopeScaling
from nemo_ref.model import Transformer
from nemo_ref.sampling.params import ParamError, SamplingParams

pytest.importorskip("fastapi")
from nemo_ref.server import protocol as P
from nemo_ref.server.jobs import APIError
from nemo_ref.server.state import ServerState, served_context

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
def tok():
    pytest.importorskip("mistral_common")
    from nemo_ref.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="module")
def state(tok):
    pytest.importorskip("llguidance")
    rope = RopeScaling(rope_type="yarn", factor=FACTOR, original_max_position_embeddings=ORIGINAL)
    args = ModelArgs.preset("nemo-tiny").replace(max_seq_len=ORIGINAL, rope_scaling=rope)
    model = Transformer(args, attn_backend="sdpa", dtype=torch.float32).init_random(0)
    s = ServerState(model_name="m", max_batch=2, max_model_len=None, sampler="torch")
    s.install(model, tok)
    yield s
    s.close()


def _chat(**kw) -> P.ChatCompletionRequest:
    return P.ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], **kw)


@pytest.mark.parametrize(
    "field, value",
    [("temperature", 3.5), ("top_p", -0.5), ("top_k", -2), ("n", 0), ("seed", 2**63), ("max_tokens", 0)],
)
def test_the_servers_sampling_errors_are_sampling_params_errors(state, field, value):
    with pytest.raises(ParamError) as core:
        SamplingParams(**{field: value})
    with pytest.raises(APIError) as wire:
        state.chat_job(_chat(**{field: value}))
    assert (wire.value.message, wire.value.param) == (str(core.value), field)


def test_completions_logprobs_is_named_as_the_client_wrote_it(state):
    body = P.CompletionRequest(model="m", prompt="hi", logprobs=21)
    with pytest.raises(APIError) as e:
        state.completion_job(body)
    assert e.value.param == "logprobs" and "logprobs must be an integer in [0, 20]" in e.value.message


def test_the_servers_tool_errors_are_the_homes(state):
    tools = [{"type": "function", "function": {"name": "f"}}] * 2
    with pytest.raises(APIError) as e:
        state.chat_job(_chat(tools=tools))
    assert (e.value.message, e.value.param) == ("tools[1]: duplicate function name 'f'", "tools")
    with pytest.raises(APIError) as e:  # checked even when no grammar would enforce the tools
        state.chat_job(_chat(tool_choice="required", structured_outputs=False))
    assert e.value.param == "tool_choice" and "needs at least one tool" in e.value.message


def test_served_context_is_max_positions_capped_by_max_model_len():
    rope = RopeScaling(rope_type="yarn", factor=FACTOR, original_max_position_embeddings=ORIGINAL)
    scaled = ModelArgs.preset("nemo-tiny").replace(max_seq_len=ORIGINAL, rope_scaling=rope)
    assert served_context(scaled, None) == 256  # 4 x 64: the scaling is what makes it servable
    assert served_context(scaled, 100) == 100
    assert served_context(scaled, 10_000) == 256
    plain = ModelArgs.preset("nemo-tiny").replace(max_seq_len=ORIGINAL)
    assert served_context(plain, None) == 64 and served_context(plain, 10_000) == 64


def test_the_server_runs_past_the_trained_context_with_a_rope_scaling(state):
    assert state.engine.max_len == 256 and state.model.args.max_seq_len == ORIGINAL
    prompt = list(range(1000, 1200))  # 200 tokens: past max_seq_len, inside max_positions
    job = state.completion_job(P.CompletionRequest(model="m", prompt=prompt, max_tokens=4, seed=1))

    async def run() -> bool:
        job.submit()
        return await job.run()

    assert asyncio.run(run())
    assert len(job.seqs[0].output) == 4
    with pytest.raises(APIError) as e:  # 256 is the limit
        state.completion_job(P.CompletionRequest(model="m", prompt=list(range(1000, 1256))))
    assert e.value.param == "prompt" and "256" in e.value.message
