"""Structured outputs and tool calls: random walks through the grammar masks.

Each walk samples uniformly (seeded `random`) among the tokens `Constraint.allowed()` permits, for
a number of free steps, then steers towards the end (closing punctuation, then the shortest
tokens) until EOS is allowed. Oracles: `json.loads`, the `jsonschema` validator, `json.dumps`'s
separators for where whitespace may sit, and Nemo's tool-call format from docs/serving.md.
At every step the walk also checks that EOS is allowed exactly when the grammar accepts.
"""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch

pytest.importorskip("llguidance")
pytest.importorskip("mistral_common")
jsonschema = pytest.importorskip("jsonschema")

from nemo_ref.structured import (  # noqa: E402
    Constraint,
    GrammarError,
    grammar_for_request,
    json_grammar,
    make_tool_call_id,
    parse_tool_calls,
    tool_grammar,
)
from tests.support import OPEN_WEATHER  # noqa: E402
from tests.support import SMALL_OBJECT as SMALL  # noqa: E402

EOS, TOOL_CALLS = 2, 9

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "score": {"type": "number"},
        "member": {"type": "boolean"},
        "color": {"type": "string", "enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 10},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "nickname": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]},
    },
    "required": ["name", "age", "color", "address"],
    "additionalProperties": False,
}

REFS = {
    "$defs": {
        "point": {
            "type": "object",
            "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
            "required": ["x", "y"],
            "additionalProperties": False,
        }
    },
    "type": "object",
    "properties": {
        "points": {"type": "array", "items": {"$ref": "#/$defs/point"}, "minItems": 1, "maxItems": 3}
    },
    "required": ["points"],
    "additionalProperties": False,
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "$defs": {"n": {"type": "integer", "minimum": -1000, "maximum": 1000}},
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/n"}, "b": {"$ref": "#/$defs/n"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
NOW = {"type": "function", "function": {"name": "now"}}  # no parameters: takes {}
TOOLS = [WEATHER, ADD, NOW]
SCHEMAS = {t["function"]["name"]: t["function"].get("parameters") for t in TOOLS}
SCHEMAS["now"] = {"type": "object", "maxProperties": 0}


# --------------------------------------------------------------------------------------------------
# the random walk


class Vocab:
    """Per-token facts used to steer walks (computed once)."""

    def __init__(self, tok):
        raw = [tok.token_bytes(i) for i in range(tok.vocab_size)]
        self.length = np.array([len(b) for b in raw])
        self.ws = np.array([i >= tok.n_special and b != b"" and b.strip() == b"" for i, b in enumerate(raw)])
        self.closer = np.array(
            [i >= tok.n_special and b != b"" and set(b) <= set(b'"]}') for i, b in enumerate(raw)]
        )


@pytest.fixture(scope="module")
def vocab(tok):
    return Vocab(tok)


def walk(constraint, vocab, rng, free_steps, ws_bias=0.0, prefix=(), max_steps=800):
    """Token ids of one random walk, ending where EOS is allowed (EOS not included)."""
    out = []
    for t in prefix:
        constraint.consume(t)
        out.append(t)
    for step in range(max_steps):
        allowed = constraint.allowed()
        assert allowed.dtype == torch.bool and allowed.shape == (131072,)
        assert bool(allowed[EOS]) == constraint.is_accepting(), "EOS iff accepting"
        ids = np.flatnonzero(allowed.numpy())
        assert ids.size > 0
        if constraint.is_done():
            assert ids.tolist() == [EOS] and constraint.forced() == EOS
            return out
        if step >= free_steps and allowed[EOS]:
            return out
        cand = ids[ids != EOS]
        if ids.size == 1:
            assert constraint.forced() == int(ids[0])
        if step < free_steps:
            if ws_bias and rng.random() < ws_bias and vocab.ws[cand].any():
                cand = cand[vocab.ws[cand]]
        elif vocab.closer[cand].any():
            cand = cand[vocab.closer[cand]]
        else:
            cand = cand[vocab.length[cand] == vocab.length[cand].min()]
        t = int(cand[rng.randrange(cand.size)])
        constraint.consume(t)
        out.append(t)
    raise AssertionError("walk did not finish")


def whitespace_gaps(text):
    """(the character before, the run of whitespace) for each gap between JSON tokens, outside
    strings, including the leading ("" before) and the trailing one."""
    gaps, cur, prev, in_str, esc = [], "", "", False, False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
                prev = ch
            continue
        if ch in " \t\n\r":
            cur += ch
            continue
        gaps.append((prev, cur))
        cur, prev = "", ch
        in_str = ch == '"'
    gaps.append((prev, cur))
    return gaps


def check_json_text(text, schema):
    """Valid for the schema, and written with json.dumps's separators: one space after each `,`
    and `:` outside strings, no other whitespace (docs/serving.md)."""
    value = json.loads(text)
    jsonschema.validate(value, schema)
    for prev, gap in whitespace_gaps(text):
        assert gap == (" " if prev in (",", ":") else ""), f"gap {gap!r} after {prev!r} in {text!r}"
    return value


# --------------------------------------------------------------------------------------------------
# response_format


def test_text_response_format_needs_no_grammar():
    assert json_grammar({"type": "text"}) is None
    assert json_grammar(None) is None
    assert tool_grammar(None) is None and tool_grammar([], "none") is None


@pytest.mark.parametrize("schema", [PERSON, REFS], ids=["person", "refs"])
def test_json_schema_walks_validate(tok, vocab, schema):
    for strict in (True, False):  # enforced whether or not strict
        g = json_grammar(
            {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": strict}}
        )
        for seed in range(6):
            rng = random.Random(seed + 100 * strict)
            ids = walk(Constraint(tok, g), vocab, rng, free_steps=rng.choice([0, 5, 20, 60]))
            check_json_text(tok.decode(ids), schema)


def test_json_object_walks_parse_to_objects(tok, vocab):
    g = json_grammar({"type": "json_object"})
    kinds = set()
    for seed in range(10):
        rng = random.Random(seed)
        ids = walk(Constraint(tok, g), vocab, rng, free_steps=rng.choice([3, 10, 40]))
        value = check_json_text(tok.decode(ids), {"type": "object"})
        assert isinstance(value, dict)
        kinds |= {type(v).__name__ for v in value.values()}
    assert kinds, "walks should produce some non-empty objects"


def test_enum_only_schema_yields_enum_values(tok, vocab):
    enum = ["red", "green", "blue green", 3, None, True]
    g = json_grammar({"type": "json_schema", "json_schema": {"name": "c", "schema": {"enum": enum}}})
    seen = []
    for seed in range(25):
        rng = random.Random(seed)
        ids = walk(Constraint(tok, g), vocab, rng, free_steps=50)
        value = json.loads(tok.decode(ids))
        assert value in enum and type(value) is type(enum[enum.index(value)])
        seen.append(json.dumps(value))
    assert len(set(seen)) >= 3


def test_json_gaps_are_json_dumps_separators_even_when_the_walk_loves_whitespace(tok, vocab):
    """Before: each gap allowed a line break and 16 spaces or tabs, and a random model spent
    most of its tokens there (issue 15, item 8)."""
    g = json_grammar({"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}})
    for seed in range(8):
        rng = random.Random(seed)
        ids = walk(Constraint(tok, g), vocab, rng, free_steps=120, ws_bias=0.9)
        check_json_text(tok.decode(ids), PERSON)


@pytest.mark.parametrize(
    ("prefix", "allowed", "forbidden"),
    [
        ("", ["{", '{"'], [" ", "\n", " {", "{\n"]),
        ("{", ['"', "}"], [" ", "\n", ' "', " }"]),
        ('{"a', ['"', '":'], ['":"', '"\n']),
        ('{"a":', [" ", ' "', " {"], ["\n", "  ", '"', "\t", "{"]),
        ('{"a": 1', [",", "}", "0"], [" ", "\n", " ,", " }"]),
        ('{"a": 1,', [" ", ' "'], ["\n", "  ", '"']),
        ('{"a": [1', [",", "]"], [" ", "\n"]),
    ],
)
def test_json_gap_rule(tok, prefix, allowed, forbidden):
    """The whitespace rule itself, token by token: after `:` and `,` exactly one space, nowhere
    else any whitespace (a unit test of the grammar text, no walk)."""
    c = Constraint(tok, json_grammar({"type": "json_object"}))
    for t in tok.encode(prefix, bos=False):
        c.consume(t)
    mask = c.allowed()
    for word in allowed:
        ids = tok.encode(word, bos=False)
        assert len(ids) == 1 and mask[ids[0]], (prefix, word)
    for word in forbidden:
        ids = tok.encode(word, bos=False)
        assert len(ids) == 1 and not mask[ids[0]], (prefix, word)


def test_property_order_follows_schema(tok, vocab):
    g = json_grammar({"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}})
    order = list(PERSON["properties"])
    for seed in range(5):
        ids = walk(Constraint(tok, g), vocab, random.Random(seed), free_steps=30)
        keys = list(json.loads(tok.decode(ids)))
        assert keys == sorted(keys, key=order.index)


def test_json_mode_rejects_text_and_leading_space(tok):
    c = Constraint(tok, json_grammar({"type": "json_object"}))
    allowed = c.allowed()
    assert not allowed[EOS] and not allowed[TOOL_CALLS] and not allowed[3]
    for word in ["Sure", " {", "\n", "["]:
        assert not allowed[tok.encode(word, bos=False)[0]]
    assert allowed[tok.encode("{", bos=False)[0]]
    with pytest.raises(ValueError):
        c.consume(tok.encode("Sure", bos=False)[0])


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "foo"}}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}}},
        {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}},
        },
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "("}}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/missing"}}},
        {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "integer", "minimum": 5, "maximum": 1}},
        },
        {"type": "json_schema", "json_schema": {"name": "x", "schema": [1, 2]}},
        {"type": "json_schema"},
        {"type": "xml"},
        {"kind": "json_object"},
        "json_object",
    ],
)
def test_bad_response_format_is_grammar_error(response_format):
    with pytest.raises(GrammarError) as err:
        json_grammar(response_format)
    assert err.value.param == "response_format"
    assert isinstance(err.value, ValueError)


# --------------------------------------------------------------------------------------------------
# tools


def dumps_keeping_numbers(text):
    """json.dumps(json.loads(text)) with every number kept as written (-0 stays -0)."""
    mark = "\x00"
    value = json.loads(text, parse_int=lambda x: mark + x + mark, parse_float=lambda x: mark + x + mark)
    return json.dumps(value, ensure_ascii=False).replace('"\\u0000', "").replace('\\u0000"', "")


def split_calls(tok, ids):
    """(text before [TOOL_CALLS], decoded JSON array after it) of a walk; checks the format."""
    if TOOL_CALLS not in ids:
        return tok.decode(ids), None
    k = ids.index(TOOL_CALLS)
    assert TOOL_CALLS not in ids[k + 1 :]
    assert all(t >= tok.n_special for t in ids[:k] + ids[k + 1 :]), "no other control tokens"
    payload = tok.decode(ids[k + 1 :])
    calls = json.loads(payload)
    assert isinstance(calls, list) and calls
    # Canonical: exactly json.dumps' separators, no other whitespace (as mistral-common writes).
    assert payload == dumps_keeping_numbers(payload), payload
    for call in calls:
        assert list(call)[:2] == ["name", "arguments"] and set(call) <= {"name", "arguments", "id"}
        jsonschema.validate(call["arguments"], SCHEMAS[call["name"]])
        if "id" in call:
            assert re.fullmatch(r"[a-zA-Z0-9]{9}", call["id"])
    return tok.decode(ids[:k]), calls


@pytest.mark.parametrize("choice", ["required", "any"])
def test_required_walks_give_valid_calls(tok, vocab, choice):
    g = tool_grammar(TOOLS, choice)
    names = set()
    for seed in range(10):
        rng = random.Random(seed)
        c = Constraint(tok, g)
        assert c.forced() == TOOL_CALLS  # calls only, no text first
        ids = walk(c, vocab, rng, free_steps=rng.choice([1, 10, 40, 80]))
        assert ids[0] == TOOL_CALLS
        text, calls = split_calls(tok, ids)
        assert text == "" and len(calls) >= 1
        names |= {call["name"] for call in calls}
        content, parsed = parse_tool_calls(tok, [*ids, EOS])
        assert content is None and [p["function"]["name"] for p in parsed] == [x["name"] for x in calls]
        assert [json.loads(p["function"]["arguments"]) for p in parsed] == [x["arguments"] for x in calls]
    assert len(names) >= 2


def test_named_tool_choice_only_that_function(tok, vocab):
    choice = {"type": "function", "function": {"name": "add"}}
    g = tool_grammar(TOOLS, choice)
    for seed in range(8):
        rng = random.Random(seed)
        ids = walk(Constraint(tok, g), vocab, rng, free_steps=rng.choice([5, 30, 80]))
        _, calls = split_calls(tok, ids)
        assert {c["name"] for c in calls} == {"add"}
    # writing another name is impossible
    c = Constraint(tok, g)
    bad = [TOOL_CALLS, *tok.encode('[{"name": "get_weather"', bos=False)]
    with pytest.raises(ValueError):
        for t in bad:
            c.consume(t)


def test_parallel_false_means_exactly_one_call(tok, vocab):
    g = tool_grammar(TOOLS, "required", parallel_tool_calls=False)
    for seed in range(8):
        rng = random.Random(seed)
        ids = walk(Constraint(tok, g), vocab, rng, free_steps=rng.choice([5, 40, 120]))
        _, calls = split_calls(tok, ids)
        assert len(calls) == 1
    one = [TOOL_CALLS, *tok.encode('[{"name": "now", "arguments": {}}', bos=False)]
    c = Constraint(tok, g)
    for t in one:
        c.consume(t)
    assert not c.allowed()[tok.encode(",", bos=False)[0]]
    # ... while parallel calls accept a second one
    c = Constraint(tok, tool_grammar(TOOLS, "required", parallel_tool_calls=True))
    two = one + tok.encode(', {"name": "add", "arguments": {"a": 1, "b": -2}, "id": "abcDEF123"}]', bos=False)
    for t in two:
        c.consume(t)
    assert c.is_done() and c.forced() == EOS


def test_auto_allows_text_or_text_then_calls(tok, vocab):
    g = tool_grammar(TOOLS, "auto")
    c = Constraint(tok, g)
    start = c.allowed()
    assert start[EOS] and start[TOOL_CALLS] and not start[3] and start.sum() > 100_000
    for seed in range(10):
        rng = random.Random(seed)
        c = Constraint(tok, g)
        text_len = rng.choice([0, 0, 3, 12])
        pre = []
        for _ in range(text_len):  # some text first
            allowed = np.flatnonzero(c.allowed().numpy())
            allowed = allowed[(allowed != EOS) & (allowed != TOOL_CALLS)]
            pre.append(int(allowed[rng.randrange(allowed.size)]))
            c.consume(pre[-1])
            assert c.allowed()[TOOL_CALLS] and c.allowed()[EOS]
        if seed % 3 == 2:  # text only
            assert c.is_accepting()
            assert parse_tool_calls(tok, pre) == (tok.decode(pre), [])
            continue
        ids = walk(c, vocab, rng, free_steps=rng.choice([5, 40]), prefix=[TOOL_CALLS])
        text, calls = split_calls(tok, pre + ids)
        assert text == tok.decode(pre) and len(calls) >= 1
        content, parsed = parse_tool_calls(tok, pre + ids, id_seed=seed)
        assert content == (text if text.strip() else None) and len(parsed) == len(calls)


def test_none_never_allows_tool_calls(tok, vocab):
    g = tool_grammar(TOOLS, "none")
    assert "<[9]>" not in g
    for seed in range(5):
        rng = random.Random(seed)
        c = Constraint(tok, g)
        for _ in range(30):
            allowed = c.allowed()
            assert not allowed[TOOL_CALLS] and not allowed[3:1000].any()
            assert allowed[EOS]  # text may end anywhere
            ids = np.flatnonzero(allowed.numpy())
            ids = ids[ids != EOS]
            c.consume(int(ids[rng.randrange(ids.size)]))
    c = Constraint(tok, g)
    with pytest.raises(ValueError):
        c.consume(TOOL_CALLS)


def test_json_response_format_with_auto_tools(tok, vocab):
    rf = {"type": "json_schema", "json_schema": {"name": "p", "schema": REFS}}
    g = grammar_for_request(rf, TOOLS, "auto")
    c = Constraint(tok, g)
    assert c.allowed()[TOOL_CALLS] and not c.allowed()[EOS]
    ids = walk(Constraint(tok, g), vocab, random.Random(1), free_steps=0)  # closers: JSON first
    if TOOL_CALLS in ids:
        assert split_calls(tok, ids)[1]
    else:
        check_json_text(tok.decode(ids), REFS)
    ids = walk(Constraint(tok, g), vocab, random.Random(2), free_steps=20, prefix=[TOOL_CALLS])
    assert split_calls(tok, ids)[1]
    assert grammar_for_request(rf, TOOLS, "none") == json_grammar(rf)
    assert grammar_for_request(None, TOOLS, "required") == tool_grammar(TOOLS, "required")


@pytest.mark.parametrize(
    "tools, choice, parallel, param",
    [
        (TOOLS, {"type": "function", "function": {"name": "nope"}}, True, "tool_choice"),
        (TOOLS, {"type": "function"}, True, "tool_choice"),
        (TOOLS, "sometimes", True, "tool_choice"),
        (None, "required", True, "tool_choice"),
        ([], {"type": "function", "function": {"name": "add"}}, True, "tool_choice"),
        ([{"type": "function", "function": {"name": "bad name"}}], "auto", True, "tools"),
        ([WEATHER, WEATHER], "auto", True, "tools"),
        ([{"type": "code_interpreter"}], "auto", True, "tools"),
        (
            [{"type": "function", "function": {"name": "f", "parameters": {"type": "bogus"}}}],
            "auto",
            True,
            "tools",
        ),
        ([{"type": "function", "function": {"name": "f", "parameters": {"if": {}}}}], "auto", True, "tools"),
        ([{"type": "function", "function": {"name": "f", "parameters": 7}}], "auto", True, "tools"),
        ("add", "auto", True, "tools"),
        (TOOLS, "auto", "yes", "parallel_tool_calls"),
    ],
)
def test_bad_tools_are_grammar_errors(tools, choice, parallel, param):
    with pytest.raises(GrammarError) as err:
        tool_grammar(tools, choice, parallel)
    assert err.value.param == param


# --------------------------------------------------------------------------------------------------
# Constraint mechanics and parse_tool_calls


def test_constraint_mechanics(tok):
    g = json_grammar({"type": "json_schema", "json_schema": {"name": "b", "schema": {"type": "boolean"}}})
    c = Constraint(tok, g)
    allowed = c.allowed()
    true_ids = tok.encode("true", bos=False)
    assert allowed[true_ids[0]] and not allowed[EOS]
    logits = torch.zeros(131072)
    c.mask_logits_(logits)
    assert torch.equal(torch.isfinite(logits), allowed)
    allowed[:] = False  # a copy: the constraint is not affected
    assert c.allowed()[true_ids[0]]
    for t in true_ids:
        c.consume(t)
    assert c.is_accepting() and c.is_done() and c.forced() == EOS
    c.consume(EOS)
    d = Constraint(tok, g)  # a fresh state from the cached grammar
    assert not d.is_accepting() and d.allowed()[true_ids[0]]
    with pytest.raises(ValueError):
        d.consume(EOS)
    with pytest.raises(GrammarError):
        Constraint(tok, "")


def test_parse_tool_calls_round_trip(tok):
    calls = [
        {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "c"}},
        {"name": "add", "arguments": {"a": 1, "b": 2}, "id": "abcDEF123"},
    ]
    ids = [
        *tok.encode("Checking both.", bos=False),
        TOOL_CALLS,
        *tok.encode(json.dumps(calls), bos=False),
        EOS,
    ]
    content, out = parse_tool_calls(tok, ids, id_seed=(42, 0))
    assert content == "Checking both."
    assert [c["type"] for c in out] == ["function", "function"]
    assert [c["function"]["name"] for c in out] == ["get_weather", "add"]
    assert [json.loads(c["function"]["arguments"]) for c in out] == [c["arguments"] for c in calls]
    assert out[0]["function"]["arguments"] == '{"city": "Zürich", "unit": "c"}'
    ids9 = [c["id"] for c in out]
    assert all(re.fullmatch(r"[A-Za-z0-9]{9}", i) for i in ids9) and len(set(ids9)) == 2
    assert parse_tool_calls(tok, ids, id_seed=(42, 0))[1] == out  # seeded: reproducible
    assert [c["id"] for c in parse_tool_calls(tok, ids, id_seed=(42, 1))[1]] != ids9
    assert make_tool_call_id(7, 0) == make_tool_call_id(7, 0) != make_tool_call_id(7, 1)
    assert re.fullmatch(r"[A-Za-z0-9]{9}", make_tool_call_id())
    # sent back in the history, the calls re-encode in Nemo's format with those ids
    msgs = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": out},
        {"role": "tool", "tool_call_id": out[0]["id"], "content": "1C"},
        {"role": "tool", "tool_call_id": out[1]["id"], "content": "3"},
    ]
    prompt = tok.decode(tok.encode_chat(msgs, tools=TOOLS[:2]), skip_special=False)
    assert (
        f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {{"city": "Zürich", "unit": "c"}}, "id": "{ids9[0]}"}}'
        in prompt
    )


def test_parse_tool_calls_edge_cases(tok):
    assert parse_tool_calls(tok, [*tok.encode("just text", bos=False), EOS]) == ("just text", [])
    only = [TOOL_CALLS, *tok.encode('[{"name": "now", "arguments": {}}]', bos=False)]
    content, out = parse_tool_calls(tok, only)
    assert content is None and out[0]["function"] == {"name": "now", "arguments": "{}"}
    cut = [TOOL_CALLS, *tok.encode('[{"name": "add", "argum', bos=False)]
    assert parse_tool_calls(tok, cut) == (tok.decode(cut), [])
    notlist = [TOOL_CALLS, *tok.encode('"hello"', bos=False)]
    assert parse_tool_calls(tok, notlist)[1] == []


def test_openai_parse_schema_walks_validate_with_pydantic(tok, vocab):
    """What `client.beta.chat.completions.parse(response_format=Model)` sends, parsed back by
    the client's own pydantic model."""
    pydantic = pytest.importorskip("pydantic")
    openai_pydantic = pytest.importorskip("openai.lib._pydantic")
    import datetime
    import enum
    from typing import Literal

    class Color(str, enum.Enum):
        red = "red"
        blue = "blue"

    class Address(pydantic.BaseModel):
        city: str = pydantic.Field(max_length=12)
        zip: str | None

    class Person(pydantic.BaseModel):
        name: str = pydantic.Field(description="full name", max_length=20)
        age: int = pydantic.Field(ge=0, le=130)
        color: Color
        kind: Literal["a", "b"]
        born: datetime.date
        addresses: list[Address] = pydantic.Field(max_length=2)
        score: float | None

    schema = openai_pydantic.to_strict_json_schema(Person)
    rf = {"type": "json_schema", "json_schema": {"name": "Person", "schema": schema, "strict": True}}
    g = json_grammar(rf)
    for seed in range(5):
        rng = random.Random(seed)
        ids = walk(Constraint(tok, g), vocab, rng, free_steps=rng.choice([0, 10, 40]))
        text = tok.decode(ids)
        check_json_text(text, schema)
        Person.model_validate_json(text)


# --------------------------------------------------------------------------------------------------
# grammars that terminate on any model (issue 15, item 8)


def uniform_walk(constraint, rng, cap):
    """Tokens until EOS, choosing uniformly among the allowed ones: a model with no preference at
    all. Returns (ids, finished within cap)."""
    out = []
    for _ in range(cap):
        ids = np.flatnonzero(constraint.allowed().numpy())
        t = int(ids[rng.randrange(ids.size)])
        if t == EOS:
            return out, True
        constraint.consume(t)
        out.append(t)
    return out, False


@pytest.mark.parametrize(
    "grammar",
    [
        json_grammar({"type": "json_schema", "json_schema": {"name": "s", "schema": SMALL}}),
        tool_grammar([OPEN_WEATHER], "required", parallel_tool_calls=False),
        tool_grammar([OPEN_WEATHER, ADD], "required", parallel_tool_calls=False),
    ],
    ids=["small-object", "one-tool", "two-tools"],
)
def test_uniform_walks_finish_within_60_tokens(tok, grammar):
    """Termination comes from the grammar's shape: even choosing uniformly among allowed tokens,
    20/20 walks end within 60 tokens. Before (issue 15): each gap allowed a line break and 16
    spaces or tabs (whitespace was most of a walk's tokens), and objects took undescribed keys
    forever; now every gap is a json.dumps separator."""
    for seed in range(20):
        ids, finished = uniform_walk(Constraint(tok, grammar), random.Random(seed), 60)
        assert finished, tok.decode(ids, skip_special=False)


def test_tool_calls_are_written_as_mistral_common_writes_them(tok):
    """The oracle: mistral-common's own serialisation of the same calls in a chat history."""
    g = tool_grammar([OPEN_WEATHER, ADD], "required")
    for seed in range(6):
        ids, finished = uniform_walk(Constraint(tok, g), random.Random(seed), 400)
        assert finished and ids[0] == TOOL_CALLS
        payload = tok.decode(ids[1:])
        calls = json.loads(payload)
        call_ids = [c.get("id", f"zzzZZZ{i:03d}") for i, c in enumerate(calls)]
        history = [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": i,
                        "type": "function",
                        "function": {"name": c["name"], "arguments": c["arguments"]},
                    }
                    for i, c in zip(call_ids, calls, strict=True)
                ],
            },
            *({"role": "tool", "tool_call_id": i, "content": "ok"} for i in call_ids),
        ]
        prompt = tok.decode(tok.encode_chat(history), skip_special=False)
        written = prompt.split("[TOOL_CALLS]", 1)[1].split("</s>", 1)[0]
        # mistral-common always writes an id; the model may leave it out (then ours was used).
        expected = re.sub(r', "id": "zzzZZZ\d{3}"', "", written)
        assert dumps_keeping_numbers(payload) == payload and payload == expected, (payload, written)


def test_objects_take_only_described_keys(tok):
    def accepts(schema, text):
        c = Constraint(
            tok, json_grammar({"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})
        )
        try:
            for t in tok.encode(text, bos=False):
                c.consume(t)
        except ValueError:
            return False
        return c.is_accepting()

    closed = {"type": "object", "properties": {"a": {"type": "boolean"}}}
    assert accepts(closed, '{"a": true}') and not accepts(closed, '{"a": true, "b": 1}')
    assert accepts({**closed, "additionalProperties": True}, '{"a": true, "b": 1}')
    assert accepts({"type": "object"}, '{"b": 1}')  # json_object: any keys
    composed = {"allOf": [closed, {"type": "object", "properties": {"b": {"type": "integer"}}}]}
    assert accepts(composed, '{"a": true, "b": 1}')  # allOf: branches are left open


@pytest.mark.parametrize(
    "schema",
    [{"$ref": "#"}, {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(1000)}}],
    ids=["self-ref", "1000-optional"],
)
def test_grammars_that_cannot_run_fail_when_compiled(tok, schema):
    """Before: the first (a language with no document) masked everything but EOS, an empty
    answer; the second failed at its first token with a 32 KB parser dump."""
    g = json_grammar({"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})
    with pytest.raises(GrammarError) as err:
        Constraint(tok, g)
    assert len(str(err.value)) < 300


def test_a_matcher_in_error_never_yields_an_eos_only_mask(tok):
    c = Constraint(tok, json_grammar({"type": "json_object"}))
    c._matcher.consume_token(tok.encode("Sure", bos=False)[0])  # past the allowed-check: an error
    with pytest.raises(GrammarError):
        c.allowed()
