"""The server under attack and overload (issue 15): every input bounded in memory and time, grammar
failures reported as errors, short messages, an API key, fair admission. Each test here failed on
the code before the fix (the before/after figures: benchmarks/server-hardening.md).
"""

from __future__ import annotations

import json

import httpx
import pytest
from server_harness import MODEL_NAME, running_server

CHAT = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
MESSAGE_CHARS = 300  # an error message longer than this carries more than the reason


@pytest.fixture(scope="module")
def server():
    return running_server()


def _post(server, path: str, body, **kw) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, timeout=60, **kw)


def _error(r: httpx.Response, status: int, param: str | None) -> dict:
    assert r.status_code == status, r.text[:500]
    err = r.json()["error"]
    assert err["param"] == param, err
    assert 0 < len(err["message"]) <= MESSAGE_CHARS, (
        f"{len(err['message'])} characters: {err['message'][:200]}"
    )
    return err


def _schema(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def _optional_properties(n: int) -> dict:
    return {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(n)}}


# ---- 1, 2: grammar failures are errors; no 5xx and no dumps for bad input ------------------------


@pytest.mark.parametrize(
    "schema",
    [{"$ref": "#"}, {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, _optional_properties(1000)],
    ids=["self-ref", "self-ref-defs", "1000-optional"],
)
def test_unenforceable_schema_is_a_short_400_before_generation(server, schema):
    # Before: 200 with content "" (self-reference), or 500 carrying a 32-105 KB parser dump.
    r = _post(server, "/v1/chat/completions", {**CHAT, "response_format": _schema(schema)})
    _error(r, 400, "response_format")
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    r = _post(server, "/v1/chat/completions", {**CHAT, "tools": [tool], "tool_choice": "required"})
    _error(r, 400, "tools")
    assert server.wait_idle() == (0, 0)


def test_grammar_failure_in_generation_fails_the_request(server, monkeypatch):
    """A grammar that fails mid-generation ends its request with an error naming the field, never
    with a normal-looking stop; a stream gets an error event (a 400's type: retrying won't help)."""
    from nemo_ref.sequence import Sequence
    from nemo_ref.structured import GrammarError

    real = Sequence.allowed

    def failing(self):
        if self.seed == 515151 and self.step == 3:
            raise GrammarError("the grammar cannot be enforced: injected")
        return real(self)

    monkeypatch.setattr(Sequence, "allowed", failing)
    body = {**CHAT, "max_tokens": 20, "seed": 515151, "response_format": {"type": "json_object"}}
    err = _error(_post(server, "/v1/chat/completions", body), 400, "response_format")
    assert "injected" in err["message"]
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json={**body, "stream": True}) as r:
        lines = [x for x in r.iter_lines() if x]
    assert lines[-1] == "data: [DONE]"
    event = json.loads(lines[-2][len("data: ") :])["error"]
    assert event["type"] == "invalid_request_error" and event["param"] == "response_format"
    assert server.wait_idle() == (0, 0)


@pytest.mark.parametrize(
    "bias",
    [{"1" * 4301: 1}, {"٣": 1}, {" 5": 1}, {"+5": 1}, {str(i): 1 for i in range(1025)}],
    ids=["4301-digits", "arabic-digit", "space", "plus", "1025-entries"],
)
def test_logit_bias_keys_are_short_ascii_digits(server, bias):
    # Before: 4,301 digits -> 500 (Python's int() conversion limit).
    _error(_post(server, "/v1/chat/completions", {**CHAT, "logit_bias": bias}), 400, "logit_bias")
    body = {"model": MODEL_NAME, "prompt": "x", "max_tokens": 2, "logit_bias": bias}
    _error(_post(server, "/v1/completions", body), 400, "logit_bias")


def test_caps_on_stop_strings_and_tools(server):
    _error(_post(server, "/v1/chat/completions", {**CHAT, "stop": "x" * 257}), 400, "stop")
    tools = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]
    _error(_post(server, "/v1/chat/completions", {**CHAT, "tools": tools}), 400, "tools")
    _error(_post(server, "/detokenize", {"tokens": [5] * 262_145}), 400, "tokens")
