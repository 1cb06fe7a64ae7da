"""Structured outputs and tool calls through the server, with random weights.

A random-weight model writes noise, so everything these tests check is the grammar's doing: the
output parses and validates, the tool calls name the right functions with valid arguments, and
tool_choice / parallel_tool_calls are obeyed, for many seeds. Schemas bound their strings
(``maxLength``, enums): a random model almost never closes an unbounded JSON string by itself.
For ``json_object`` (no schema to bound anything) a logit_bias on the closing characters plays
that part (it must lift them out of the embedded model's tail); the grammar alone guarantees that what comes out is one valid object.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import httpx
from pydantic import BaseModel, Field

from tests.support import MODEL_NAME

MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
SEEDS = range(20)


def _many(fn, seeds=SEEDS):
    with ThreadPoolExecutor(8) as pool:  # concurrent requests share decode steps
        return list(pool.map(fn, seeds))


class Weather(BaseModel):
    city: Literal["Paris", "Rome", "Oslo"]
    temperature: int = Field(ge=-50, le=50)
    raining: bool
    note: str = Field(max_length=12)


def test_parse_pydantic_model_for_many_seeds(server):
    c = server.client()

    def one(seed):
        r = c.chat.completions.parse(
            model=MODEL_NAME, messages=MESSAGES, response_format=Weather, seed=seed, max_tokens=150
        )
        return r.choices[0]

    for choice in _many(one):
        assert choice.finish_reason == "stop"
        assert isinstance(choice.message.parsed, Weather)
        # Property order follows the schema.
        assert list(json.loads(choice.message.content)) == ["city", "temperature", "raining", "note"]


def test_json_object_always_parses(server):
    c = server.client()
    tok = server.tokenizer
    # Single characters are byte tokens, which sit in the embedded model's Zipf tail (~24 nats
    # below its favourites, docs/architecture.md): the bias must lift them above the favourites.
    closing = {str(tok.encode(ch, bos=False)[0]): 40 for ch in ('"', "}", "]")}

    def one(seed):
        return c.chat.completions.create(
            model=MODEL_NAME,
            messages=MESSAGES,
            response_format={"type": "json_object"},
            seed=seed,
            max_tokens=150,
            logit_bias=closing,
        ).choices[0]

    for choice in _many(one):
        assert choice.finish_reason == "stop"
        assert isinstance(json.loads(choice.message.content), dict)


def test_enum_schema_and_non_strict_schema_are_enforced(server):
    c = server.client()
    enum = {
        "type": "json_schema",
        "json_schema": {"name": "colour", "schema": {"enum": ["red", "green", "blue"]}},
    }
    small = {
        "type": "json_schema",
        "json_schema": {
            "name": "small",
            "strict": False,
            "schema": {
                "type": "object",
                "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
                "required": ["n"],
                "additionalProperties": False,
            },
        },
    }
    for seed in range(4):
        r = c.chat.completions.create(
            model=MODEL_NAME, messages=MESSAGES, response_format=enum, seed=seed, max_tokens=20
        )
        assert json.loads(r.choices[0].message.content) in ("red", "green", "blue")
        r = c.chat.completions.create(
            model=MODEL_NAME, messages=MESSAGES, response_format=small, seed=seed, max_tokens=40
        )
        assert 0 <= json.loads(r.choices[0].message.content)["n"] <= 9


def test_structured_outputs_false_turns_enforcement_off(server):
    c = server.client()
    enum = {
        "type": "json_schema",
        "json_schema": {"name": "colour", "schema": {"enum": ["red", "green", "blue"]}},
    }
    kw = dict(model=MODEL_NAME, messages=MESSAGES, response_format=enum, seed=3, max_tokens=8)
    on = c.chat.completions.create(**kw).choices[0].message.content
    off = c.chat.completions.create(**kw, extra_body={"structured_outputs": False}).choices[0].message.content
    plain = c.chat.completions.create(**{**kw, "response_format": None}).choices[0].message.content
    assert json.loads(on) in ("red", "green", "blue")
    assert off == plain != on


def test_stream_with_response_format(server):
    c = server.client()
    with c.chat.completions.stream(
        model=MODEL_NAME, messages=MESSAGES, response_format=Weather, seed=11, max_tokens=150
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Weather)
    ref = c.chat.completions.parse(
        model=MODEL_NAME, messages=MESSAGES, response_format=Weather, seed=11, max_tokens=150
    )
    assert ref.choices[0].message.content == final.choices[0].message.content


# ---- tools --------------------------------------------------------------------------------------


class WeatherArgs(BaseModel):
    model_config = {"extra": "forbid"}
    city: Literal["Paris", "Rome", "Oslo"]
    unit: Literal["C", "F"]


class TimeArgs(BaseModel):
    model_config = {"extra": "forbid"}
    zone: str = Field(max_length=10)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
                    "unit": {"type": "string", "enum": ["C", "F"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time in a time zone",
            "parameters": {
                "type": "object",
                "properties": {"zone": {"type": "string", "maxLength": 10}},
                "required": ["zone"],
                "additionalProperties": False,
            },
        },
    },
]
ARGS = {"get_weather": WeatherArgs, "get_time": TimeArgs}
ID = re.compile(r"[A-Za-z0-9]{9}")


def _tool_bias(server) -> dict[str, float]:
    """logit_bias for short tool calls from a random model: -100 on the 116 all-whitespace
    tokens, +30 on the tokens that close the call array (`]`, `"]`, `}]`).

    The grammar fixes every gap between JSON tokens (json.dumps separators), but inside a free
    string a random model keeps writing its favourite merge (two spaces), and it keeps continuing
    the call array: calls then take hundreds of tokens. Real models do neither; the bias keeps
    these tests short, and every seed of each range is checked. The closers are in the embedded
    model's Zipf tail (~24 nats below its favourites, docs/architecture.md), hence +30 to make
    closing the array likely (1-3 calls per answer). All three, not "]" alone: after a call's `}`
    the array's end is usually spelled `}]`, and the canonical separator `, ` is a frequent token
    that otherwise wins.
    (The parse and json_object tests above run without it.)
    """
    tok = server.tokenizer
    ws = [i for i in range(tok.n_special, tok.vocab_size) if re.fullmatch(rb"[ \t\r\n]+", tok.token_bytes(i))]
    bias = {str(i): -100.0 for i in ws}
    for i in range(tok.n_special, tok.vocab_size):
        if re.fullmatch(rb'[}"]*\]', tok.token_bytes(i)):
            bias[str(i)] = 30.0
    return bias


def _calls(server, seeds, max_tokens=400, **kw):
    c = server.client()
    bias = _tool_bias(server)

    def one(seed):
        return c.chat.completions.create(
            model=MODEL_NAME,
            messages=MESSAGES,
            tools=TOOLS,
            seed=seed,
            max_tokens=max_tokens,
            logit_bias=bias,
            **kw,
        ).choices[0]

    return _many(one, seeds)


def _check_calls(choice, names=tuple(ARGS)):
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert ID.fullmatch(call.id) and call.type == "function"
        assert call.function.name in names
        ARGS[call.function.name].model_validate_json(call.function.arguments)
    return choice.message.tool_calls


def test_tool_choice_required(server):
    for choice in _calls(server, range(12), tool_choice="required"):
        _check_calls(choice)
        assert choice.message.content is None


def test_tool_choice_any_is_required(server):
    for choice in _calls(server, range(3), tool_choice="any"):
        _check_calls(choice)


def test_tool_choice_none_never_calls(server):
    for choice in _calls(server, range(6), max_tokens=16, tool_choice="none"):
        assert choice.message.tool_calls is None
        assert choice.finish_reason in ("stop", "length")
        assert isinstance(choice.message.content, str)


def test_named_tool_choice(server):
    named = {"type": "function", "function": {"name": "get_time"}}
    for choice in _calls(server, range(8), tool_choice=named):
        calls = _check_calls(choice, names=("get_time",))
        assert {c.function.name for c in calls} == {"get_time"}


def test_parallel_tool_calls_false_gives_exactly_one_call(server):
    for choice in _calls(server, range(10), tool_choice="required", parallel_tool_calls=False):
        assert len(_check_calls(choice)) == 1


def test_tool_choice_auto(server):
    for choice in _calls(server, range(6), max_tokens=60):
        if choice.message.tool_calls:
            _check_calls(choice)
        else:
            assert choice.finish_reason in ("stop", "length")


def test_streamed_tool_calls_match_non_streamed(server):
    c = server.client()
    kw = dict(
        model=MODEL_NAME,
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice="required",
        seed=5,
        max_tokens=400,
        logit_bias=_tool_bias(server),
    )
    ref = c.chat.completions.create(**kw).choices[0]
    chunks = list(c.chat.completions.create(**kw, stream=True))
    deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert [(tc.function.name, tc.function.arguments) for tc in calls] == [
        (tc.function.name, tc.function.arguments) for tc in ref.message.tool_calls
    ]
    assert [tc.index for tc in calls] == list(range(len(calls)))
    assert all(ID.fullmatch(tc.id) for tc in calls)
    assert not "".join(d.content or "" for d in deltas)  # the call's JSON is never content
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish == ["tool_calls"]
    with c.chat.completions.stream(**kw) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert [tc.function.name for tc in final.choices[0].message.tool_calls] == [
        tc.function.name for tc in ref.message.tool_calls
    ]


def test_history_with_tool_calls_and_results(server):
    """A whole round trip: the server's own call sent back, and an OpenAI-style id (mapped)."""
    c = server.client()
    (first,) = _calls(server, [2], tool_choice="required")
    call = first.message.tool_calls[0]
    history = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
        {"role": "user", "content": "And in Rome?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_abc123_openai_style",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome", "unit": "C"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc123_openai_style", "content": "19"},
    ]
    r = c.chat.completions.create(model=MODEL_NAME, messages=history, tools=TOOLS, seed=2, max_tokens=8)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    # A tool result whose id matches no call is the tokenizer's to reject: a 400 naming messages.
    bad = [*history[:-1], {"role": "tool", "content": "19"}]
    resp = httpx.post(
        server.base_url + "/v1/chat/completions",
        json={"model": MODEL_NAME, "messages": bad, "tools": TOOLS, "max_tokens": 4},
    )
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "messages"
