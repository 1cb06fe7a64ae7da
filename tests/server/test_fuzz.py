"""Fuzzing the HTTP surface: hypothesis builds request bodies (valid ones, nearly valid ones with a
wrong value or an unknown field, and junk) and sends them to the real server with httpx.

Whatever the body, the answer is a 200 with a well-formed completion or stream, or a 400 in
OpenAI's error shape with ``param`` set: never a 5xx, never a hang. Bounded: a few hundred
requests (hypothesis is derandomized, so CI runs the same ones every time), each with a timeout,
and every valid request generates at most 4 tokens per choice.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support import MODEL_NAME

TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=TIMEOUT_S) as client:
        yield client


FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)

# ---- strategies -----------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def param(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly valid values, sometimes junk of any JSON type."""
    return st.one_of(valid, valid, junk)


small_tokens = st.one_of(
    st.integers(min_value=-3, max_value=4), st.just(10**9), st.floats(0, 4), st.text(max_size=2)
)
schemas = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(
                ["object", "string", "integer", "number", "boolean", "array", "null", "nope"]
            ),
            "enum": st.lists(scalars, max_size=3),
            "properties": st.dictionaries(
                st.text(max_size=5),
                st.fixed_dictionaries({"type": st.sampled_from(["string", "integer"])}),
                max_size=2,
            ),
            "required": st.lists(st.text(max_size=5), max_size=2),
            "maxLength": st.integers(-1, 5),
            "minimum": scalars,
            "additionalProperties": st.booleans(),
            "not": junk,
        },
    ),
    junk,
)
messages = st.one_of(
    st.lists(
        st.fixed_dictionaries(
            {"role": param(st.sampled_from(["system", "user", "assistant", "tool", "developer"]))},
            optional={
                "content": param(st.text(max_size=30)),
                "tool_call_id": param(st.sampled_from(["call_1", "abcDEF123"])),
                "tool_calls": param(
                    st.lists(
                        st.fixed_dictionaries(
                            {
                                "id": param(st.sampled_from(["call_1", "abcDEF123"])),
                                "type": st.just("function"),
                                "function": st.fixed_dictionaries(
                                    {
                                        "name": param(st.sampled_from(["f", "g"])),
                                        "arguments": param(st.just("{}")),
                                    }
                                ),
                            }
                        ),
                        max_size=2,
                    )
                ),
                "name": st.text(max_size=5),
            },
        ),
        max_size=3,
    ),
    junk,
)
tools = st.lists(
    st.fixed_dictionaries(
        {
            "type": param(st.just("function")),
            "function": param(
                st.fixed_dictionaries(
                    {"name": param(st.sampled_from(["f", "g", "bad name"]))},
                    optional={
                        "parameters": schemas,
                        "description": param(st.text(max_size=10)),
                        "strict": st.booleans(),
                    },
                )
            ),
        }
    ),
    max_size=2,
)
response_formats = st.one_of(
    st.just({"type": "text"}),
    st.just({"type": "json_object"}),
    st.fixed_dictionaries(
        {
            "type": st.just("json_schema"),
            "json_schema": st.fixed_dictionaries(
                {"name": st.just("x")}, optional={"schema": schemas, "strict": param(st.booleans())}
            ),
        }
    ),
    junk,
)
tool_choices = st.one_of(
    st.sampled_from(["auto", "none", "required", "any", "sometimes"]),
    st.fixed_dictionaries(
        {
            "type": param(st.just("function")),
            "function": st.fixed_dictionaries({"name": param(st.sampled_from(["f", "g"]))}),
        }
    ),
    junk,
)
# Each field: a strategy of valid values (used to build requests that should succeed), and the
# mutation strategy (anything, mostly near-valid) used to break one field at a time.
VALID = {
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "top_k": st.integers(-1, 200),
    "min_p": st.floats(0, 1),
    "repetition_penalty": st.floats(0.01, 2),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "logit_bias": st.dictionaries(st.integers(0, 131071).map(str), st.floats(-100, 100), max_size=3),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "stop": st.one_of(st.text(min_size=1, max_size=3), st.lists(st.text(min_size=1, max_size=3), max_size=4)),
    "n": st.integers(1, 4),
    "stream": st.booleans(),
    "logprobs_mode": st.sampled_from(["raw", "processed"]),
    "user": st.text(max_size=5),
}
CHAT_VALID = {
    **VALID,
    "logprobs": st.just(True),
    "top_logprobs": st.integers(0, 20),
    "response_format": response_formats,
    "structured_outputs": st.booleans(),
    "tools": tools,
    "tool_choice": tool_choices,
    "parallel_tool_calls": st.booleans(),
    "messages": messages,
}
COMPLETION_VALID = {
    **VALID,
    "prompt": st.one_of(st.text(max_size=20), st.lists(st.integers(0, 131071), min_size=1, max_size=5)),
    "logprobs": st.integers(0, 20),
}
MUTATIONS = {
    **{name: param(valid) for name, valid in VALID.items()},
    "stream_options": param(st.fixed_dictionaries({}, optional={"include_usage": param(st.booleans())})),
    "model": param(st.just("not-this-model")),
    "max_tokens": small_tokens,
    "unknown_field": junk,
    "audio": junk,
}
CHAT_MUTATIONS = {
    **MUTATIONS,
    "messages": messages,
    "max_completion_tokens": small_tokens,
    "logprobs": param(st.booleans()),
    "top_logprobs": param(st.integers(-1, 25)),
    "response_format": param(response_formats),
    "structured_outputs": param(st.booleans()),
    "tools": param(tools),
    "tool_choice": param(tool_choices),
    "parallel_tool_calls": param(st.booleans()),
}
COMPLETION_MUTATIONS = {
    **MUTATIONS,
    "prompt": param(COMPLETION_VALID["prompt"]),
    "logprobs": param(st.integers(-1, 25)),
    "echo": param(st.booleans()),
    "best_of": param(st.integers(0, 3)),
    "suffix": junk,
}
BASE_CHAT = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
BASE_COMPLETION = {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2}


def _one_of_fields(fields: dict) -> st.SearchStrategy:
    return st.sampled_from(sorted(fields)).flatmap(lambda k: fields[k].map(lambda v: {k: v}))


def bodies(base: dict, valid: dict, mutations: dict) -> st.SearchStrategy:
    """The base request with up to four valid changes and, one time in three, a mutation
    (max_tokens stays tiny); or now and then pure junk."""

    def build(changes: list[dict], mutation: dict | None, tokens: int) -> dict:
        body = {**base, "max_tokens": tokens}
        for c in changes:
            body.update(c)
        if body.get("stream") is True and "stream_options" not in body:
            body["stream_options"] = {"include_usage": True}
        if mutation:
            body.update(mutation)
        return body

    requests = st.builds(
        build,
        st.lists(_one_of_fields(valid), max_size=4),
        st.one_of(st.none(), st.none(), _one_of_fields(mutations)),
        st.integers(1, 4),
    )
    return st.one_of(requests, requests, requests, requests, junk)


# ---- checks -------------------------------------------------------------------------------------


def _check(r: httpx.Response, t0: float, stream: bool) -> None:
    assert time.monotonic() - t0 < TIMEOUT_S, "no hang"
    assert r.status_code in (200, 400), (r.status_code, r.text[:500])
    event(f"HTTP {r.status_code}")  # pytest --hypothesis-show-statistics shows the mix
    if r.status_code == 400:
        err = r.json()["error"]
        event(f"400 param={err['param']}")
        assert err["type"] == "invalid_request_error" and err["message"]
        assert isinstance(err["param"], str) and err["param"], err
        return
    if stream and r.headers["content-type"].startswith("text/event-stream"):
        events = [line for line in r.text.split("\n\n") if line]
        assert events[-1] == "data: [DONE]"
        for e in events[:-1]:
            data = json.loads(e.removeprefix("data: "))
            assert "error" not in data, data
    else:
        body = r.json()
        assert body["choices"] and body["usage"]["completion_tokens"] >= len(body["choices"])


def _send(http: httpx.Client, path: str, body) -> None:
    t0 = time.monotonic()
    r = http.post(
        path, content=json.dumps(body, allow_nan=True), headers={"content-type": "application/json"}
    )
    _check(r, t0, stream=isinstance(body, dict) and body.get("stream") is True)


@settings(FUZZ, max_examples=250)
@given(body=bodies(BASE_CHAT, CHAT_VALID, CHAT_MUTATIONS))
def test_fuzz_chat_completions(http, body):
    _send(http, "/v1/chat/completions", body)


@settings(FUZZ, max_examples=80)
@given(body=bodies(BASE_COMPLETION, COMPLETION_VALID, COMPLETION_MUTATIONS))
def test_fuzz_completions(http, body):
    _send(http, "/v1/completions", body)


@settings(FUZZ, max_examples=60)
@given(
    path=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize"]),
    raw=st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode)),
)
def test_fuzz_raw_bytes(http, path, raw):
    t0 = time.monotonic()
    r = http.post(path, content=raw, headers={"content-type": "application/json"})
    assert time.monotonic() - t0 < TIMEOUT_S
    assert r.status_code == 400 or (r.status_code == 200 and path in ("/tokenize", "/detokenize")), r.text[
        :300
    ]


@settings(FUZZ, max_examples=60)
@given(
    path=st.sampled_from(["/tokenize", "/detokenize"]),
    body=st.one_of(
        st.fixed_dictionaries(
            {}, optional={"prompt": param(st.text(max_size=20)), "add_special_tokens": param(st.booleans())}
        ),
        st.fixed_dictionaries({}, optional={"tokens": param(st.lists(st.integers(-5, 140000), max_size=5))}),
        junk,
    ),
)
def test_fuzz_tokenize(http, path, body):
    t0 = time.monotonic()
    r = http.post(
        path, content=json.dumps(body, allow_nan=True), headers={"content-type": "application/json"}
    )
    assert time.monotonic() - t0 < TIMEOUT_S
    assert r.status_code in (200, 400), r.text[:300]


def test_still_serving_after_fuzz(server):
    r = server.client().chat.completions.create(
        model=MODEL_NAME, messages=BASE_CHAT["messages"], max_tokens=2
    )
    assert r.usage.completion_tokens == 2
    assert server.wait_idle() == (0, 0)
