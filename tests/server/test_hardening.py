"""The server under attack and overload (issue 15): every input bounded in memory and time, grammar
failures reported as errors, short messages, an API key, fair admission. Each test here failed on
the code before the fix (the before/after figures: benchmarks/server-hardening.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support import MODEL_NAME

CHAT = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
MESSAGE_CHARS = 300  # an error message longer than this carries more than the reason


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
        if self.seed == 515151 and self.step == 1:  # after `{`: json_object may be `{}` (2 tokens)
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


# ---- 7: exposure --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(server):
    """A second app on the same model, with an API key, allowed hosts and a small body limit."""
    from fastapi.testclient import TestClient

    from nemo_ref.server.app import create_app
    from nemo_ref.server.limits import Limits

    limits = Limits(api_key="s3cret", allowed_hosts=("testserver", "localhost"), max_request_bytes=4096)
    app = create_app(
        server.app.state.server.model,
        server.tokenizer,
        model_name="m",
        max_batch=1,
        max_model_len=64,
        limits=limits,
    )
    with TestClient(app) as client:
        yield client


KEY = {"Authorization": "Bearer s3cret"}


def test_api_key_is_required_on_every_route_but_health(guarded):
    assert guarded.get("/health").status_code == 200
    for headers in (
        {},
        {"Authorization": "Bearer s3cre"},
        {"Authorization": "s3cret"},
        {"Authorization": "Basic s3cret"},
    ):
        for method, path in [
            ("GET", "/v1/models"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/docs"),
            ("POST", "/tokenize"),
        ]:
            r = guarded.request(method, path, headers=headers, json={})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path, headers)
            assert r.json()["error"]["type"] == "invalid_request_error"
    assert guarded.get("/v1/models", headers=KEY).status_code == 200
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert guarded.post("/v1/chat/completions", headers=KEY, json=body).status_code == 200


def test_the_key_is_compared_in_constant_time(monkeypatch):
    """hmac.compare_digest, not ==: the time taken must not tell how many leading bytes were right."""
    import hmac

    from nemo_ref.server import limits

    seen = []
    real = hmac.compare_digest
    monkeypatch.setattr(limits.hmac, "compare_digest", lambda a, b: seen.append((a, b)) or real(a, b))
    guard = limits.Guard(None, limits.Limits(api_key="k"))
    scope = {"type": "http", "method": "GET", "path": "/v1/models"}
    assert guard._refuse(scope, {"authorization": "Bearer x"})[0] == 401
    assert guard._refuse(scope, {"authorization": "Bearer k"}) is None
    assert seen == [(b"x", b"k"), (b"k", b"k")]


@pytest.mark.parametrize(
    "kind", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_post_must_be_json(guarded, kind):
    # Before: a cross-site form or text/plain POST (no CORS preflight) reached the model.
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    headers = {**KEY, **({"content-type": kind} if kind else {})}
    r = guarded.post("/v1/chat/completions", content=body, headers=headers)
    assert r.status_code == 415 and r.json()["error"]["param"] == "body"
    r = guarded.post(
        "/v1/chat/completions",
        content=body,
        headers={**KEY, "content-type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 200


def test_allowed_hosts(guarded):
    # DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 sends Host: evil.example.
    assert guarded.get("/health", headers={"host": "evil.example"}).status_code == 400
    assert guarded.get("/health", headers={"host": "localhost:8000"}).status_code == 200


def test_body_size_limit(guarded, server):
    # Before: a 100 MB body in an ignored field was read whole and accepted.
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": "u" * 5000})
    headers = {**KEY, "content-type": "application/json"}
    r = guarded.post("/v1/chat/completions", headers=headers, content=body)  # Content-Length: refused unread
    assert r.status_code == 413 and r.json()["error"]["param"] == "body"
    chunks = (
        body[i : i + 1000].encode() for i in range(0, len(body), 1000)
    )  # no length: counted as it comes
    r = guarded.post("/v1/chat/completions", headers=headers, content=chunks)
    assert r.status_code == 413 and r.json()["error"]["param"] == "body"
    # The real server, default limit (4 MiB): a larger declared body is refused before it is sent.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (5 * 2**20)
        )
        assert s.recv(100).startswith(b"HTTP/1.1 413 ")


# ---- 3, 4: bounded memory and a free event loop ---------------------------------------------------


def test_prompt_too_long_is_refused_before_tokenising(server, monkeypatch):
    # Before: a 100 MB prompt was tokenised (79 s, +4.7 GB) before its 400.
    tok = server.tokenizer
    lengths = []
    real = type(tok).encode
    monkeypatch.setattr(
        type(tok),
        "encode",
        lambda self, text, *a, **k: lengths.append(len(text)) or real(self, text, *a, **k),
    )
    cap = server.app.state.server.prompt_chars
    long = "x" * (cap + 1)
    err = _error(
        _post(server, "/v1/completions", {"model": MODEL_NAME, "prompt": long, "max_tokens": 1}),
        400,
        "prompt",
    )
    assert "characters" in err["message"]
    _error(
        _post(server, "/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": long}]}),
        400,
        "messages",
    )
    _error(_post(server, "/tokenize", {"prompt": long}), 400, "prompt")
    assert lengths == [], "nothing that long was tokenised"


def test_schema_size_is_capped_and_caches_are_bounded_in_bytes(server):
    from nemo_ref.structured import MAX_SCHEMA_CHARS, BoundedLRU

    schema = {"type": "object", "description": "d" * MAX_SCHEMA_CHARS}
    _error(
        _post(server, "/v1/chat/completions", {**CHAT, "response_format": _schema(schema)}),
        400,
        "response_format",
    )
    cache = BoundedLRU(max_entries=100, max_bytes=1000)
    for i in range(50):
        cache.put(i, object(), 300)
    assert len(cache) == 3 and cache.nbytes == 900 and cache.get(49) is not None and cache.get(0) is None
    cache.put("huge", object(), 1001)  # larger than the whole cache: not kept
    assert cache.get("huge") is None and cache.nbytes == 900


def test_heavy_work_leaves_the_event_loop_free(server, monkeypatch):
    """/health answers while a tokenisation is in progress (before: every client waited for it)."""
    release, started = threading.Event(), threading.Event()
    tok = server.tokenizer
    real = type(tok).encode

    def slow(self, text, *a, **k):
        if text == "block-the-loop":
            started.set()
            release.wait(20)
        return real(self, text, *a, **k)

    monkeypatch.setattr(type(tok), "encode", slow)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_post, server, "/tokenize", {"prompt": "block-the-loop"})
        assert started.wait(20)
        try:
            assert httpx.get(server.base_url + "/health", timeout=5).status_code == 200
        finally:
            release.set()
        assert pending.result().status_code == 200


# ---- 6: connections ---------------------------------------------------------------------------------


def test_half_sent_request_is_dropped(server):
    """A connection that never finishes its headers is closed (before: kept forever)."""
    from tests.support import HEADER_TIMEOUT_S

    with socket.create_connection(("127.0.0.1", server.port), timeout=HEADER_TIMEOUT_S * 10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        t0 = time.monotonic()
        assert s.recv(1024) == b""  # closed by the server
        assert time.monotonic() - t0 < HEADER_TIMEOUT_S * 5


def test_aborted_upload_is_one_log_line(server, caplog):
    """Before: each aborted upload logged ~8 KB as an internal error."""
    with caplog.at_level(logging.INFO):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n" + b"{" * 1000
            )
            time.sleep(0.2)
        deadline = time.monotonic() + 5
        while "went away" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = [r for r in caplog.records if r.name.startswith(("nemo_ref", "uvicorn"))]
    assert len(lines) == 1 and "went away while uploading" in lines[0].getMessage(), caplog.text[:2000]
    assert lines[0].exc_info is None


def test_a_body_that_never_arrives_gets_408():
    from nemo_ref.server.limits import Guard, Limits

    async def app(scope, receive, send):  # never reached
        raise AssertionError("the app ran without a body")

    async def receive():
        await asyncio.sleep(60)

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"10")],
    }
    asyncio.run(asyncio.wait_for(Guard(app, Limits(body_timeout_s=0.2))(scope, receive, send), 10))
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]


def test_connections_beyond_the_cap_are_closed():
    from unittest import mock

    from uvicorn.server import ServerState

    from nemo_ref.server.connections import uvicorn_config

    async def app(scope, receive, send):
        pass

    async def run():
        config = uvicorn_config(app, max_connections=2, log_level="warning")  # (logging is global)
        config.load()
        state = ServerState()
        transports = [mock.MagicMock() for _ in range(3)]
        for t in transports:
            t.get_extra_info.return_value = None
            config.http_protocol_class(config, state, {}).connection_made(t)
        return [t.close.called for t in transports]

    assert asyncio.run(run()) == [False, False, True]
