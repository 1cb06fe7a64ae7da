"""Bad input gets HTTP 400 in OpenAI's shape with ``param`` set, never a 5xx; unknown routes 404;
503 while loading; a client that disconnects frees its KV-cache rows at once; the server keeps
serving after all of it.
"""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.support import MAX_MODEL_LEN, MODEL_NAME

CHAT = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
COMPLETION = {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2}
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]

BAD_CHAT = [
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": "0.5"}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"top_p": 1.01}, "top_p"),
    ({"top_k": -2}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"min_p": 1.5}, "min_p"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"repetition_penalty": 2.5}, "repetition_penalty"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -2.5}, "frequency_penalty"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"-1": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"logit_bias": {"131072": 1}}, "logit_bias"),
    ({"logit_bias": [1, 2]}, "logit_bias"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs
    ({"seed": 2**64}, "seed"),
    ({"seed": "7"}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": [""]}, "stop"),
    ({"stop": 5}, "stop"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": MAX_MODEL_LEN}, "max_tokens"),  # prompt + max_tokens over the context
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"max_completion_tokens": 10**6}, "max_completion_tokens"),
    ({"n": 0}, "n"),
    ({"n": 9}, "n"),  # more choices than the server's batch rows
    ({"n": True}, "n"),
    ({"model": "gpt-4o"}, "model"),
    ({"model": None}, "model"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "user"}]}, "messages"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "messages",
    ),
    ({"messages": [{"role": "user", "content": "word " * 1100}]}, "messages"),  # over the context
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),  # without stream
    ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}}},
        "response_format",
    ),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "nope"}}}},
        "response_format",
    ),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {"enum": []}}}},
        "response_format",
    ),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools"),
    ({"tools": "f"}, "tools"),
    ({"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}]}, "tools"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),  # no tools
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": TOOLS, "parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ({"logprobs_mode": "weird"}, "logprobs_mode"),
    ({"structured_outputs": "yes"}, "structured_outputs"),
    ({"foo": 1}, "foo"),
    ({"audio": {"voice": "x"}}, "audio"),
    ({"functions": []}, "functions"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"reasoning_effort": "high"}, "reasoning_effort"),
    ({"store": True}, "store"),
    ({"service_tier": "flex"}, "service_tier"),
]

BAD_COMPLETION = [
    ({"echo": True}, "echo"),
    ({"best_of": 2}, "best_of"),
    ({"suffix": "x"}, "suffix"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": [[1, 2]]}, "prompt"),
    ({"prompt": [1, 999999]}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"logprobs": 21}, "logprobs"),
    ({"logprobs": True}, "logprobs"),
    ({"max_tokens": MAX_MODEL_LEN}, "max_tokens"),
    ({"response_format": {"type": "json_object"}}, "response_format"),  # not a completions field
]


def _post(server, path: str, **kw) -> httpx.Response:
    if "content" in kw:  # raw bytes: say what they claim to be (the server requires it)
        kw["headers"] = {"content-type": "application/json", **kw.get("headers", {})}
    return httpx.post(server.base_url + path, timeout=30, **kw)


def _assert_400(r: httpx.Response, param: str | None) -> None:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] is None
    assert isinstance(err["message"], str) and err["message"]
    assert err["param"] == param, err


@pytest.mark.parametrize(("change", "param"), BAD_CHAT, ids=[f"{p}-{i}" for i, (_, p) in enumerate(BAD_CHAT)])
def test_bad_chat_parameter(server, change, param):
    _assert_400(_post(server, "/v1/chat/completions", json={**CHAT, **change}), param)


@pytest.mark.parametrize(
    ("change", "param"), BAD_COMPLETION, ids=[f"{p}-{i}" for i, (_, p) in enumerate(BAD_COMPLETION)]
)
def test_bad_completion_parameter(server, change, param):
    _assert_400(_post(server, "/v1/completions", json={**COMPLETION, **change}), param)


def test_missing_required_fields(server):
    _assert_400(_post(server, "/v1/chat/completions", json={"model": MODEL_NAME}), "messages")
    _assert_400(_post(server, "/v1/chat/completions", json={"messages": CHAT["messages"]}), "model")
    _assert_400(_post(server, "/v1/completions", json={"model": MODEL_NAME}), "prompt")


@pytest.mark.parametrize(
    "raw",
    [b"{", b"", b"null", b"[]", b'"text"', b"\xff\xfe", b'{"model": "x",}'],
    ids=["truncated", "empty", "null", "array", "string", "not-utf8", "trailing-comma"],
)
def test_malformed_body(server, raw):
    for path in ("/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize"):
        _assert_400(_post(server, path, content=raw, headers={"content-type": "application/json"}), "body")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers(server, literal):
    raw = f'{{"model": "{MODEL_NAME}", "messages": [{{"role": "user", "content": "hi"}}], "temperature": {literal}}}'
    _assert_400(_post(server, "/v1/chat/completions", content=raw), "temperature")


def test_tokenize_errors(server):
    _assert_400(_post(server, "/tokenize", json={}), "prompt")
    _assert_400(_post(server, "/tokenize", json={"prompt": 5}), "prompt")
    _assert_400(_post(server, "/detokenize", json={"tokens": [-1]}), "tokens")
    _assert_400(_post(server, "/detokenize", json={"tokens": [131072]}), "tokens")
    _assert_400(_post(server, "/detokenize", json={"tokens": ["a"]}), "tokens")


def test_openai_client_sees_the_param(server):
    c = server.client()
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=MODEL_NAME, messages=CHAT["messages"], temperature=3)
    assert e.value.status_code == 400 and e.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=MODEL_NAME, messages=CHAT["messages"], extra_body={"top_k": -5})
    assert e.value.param == "top_k"


def test_unknown_routes_and_methods(server):
    r = httpx.get(server.base_url + "/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["message"] == "Invalid URL (GET /v1/nope)"
    r = httpx.get(server.base_url + "/v1/models/unknown-model")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    r = httpx.get(server.base_url + "/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_error_after_streaming_began(server, monkeypatch):
    """An engine failure mid-stream: a data: {"error": ...} event, then [DONE]; non-stream: 500."""
    from nemo_ref.sequence import Sequence

    real_append = Sequence.append

    def failing_append(self, token, logprob, top):
        if self.seed == 424242 and self.step == 2:
            raise RuntimeError("injected failure")
        return real_append(self, token, logprob, top)

    monkeypatch.setattr(Sequence, "append", failing_append)
    body = {**CHAT, "max_tokens": 10, "seed": 424242, "stream": True}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert lines[-2].startswith('data: {"error":') and "injected failure" in lines[-2]
    r = _post(server, "/v1/chat/completions", json={**body, "stream": False})
    assert r.status_code == 500 and "injected failure" in r.json()["error"]["message"]
    assert server.wait_idle() == (0, 0)


def _wait_running(server, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while server.engine.load[0] == 0:
        assert time.monotonic() < deadline, "the request never started"
        time.sleep(0.01)


def test_stream_disconnect_frees_the_slot(server):
    body = {**CHAT, "max_tokens": 900, "stream": True, "seed": 1}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()
        for _ in range(4):
            next(lines)
        assert server.engine.load[0] == 1
    # The connection is closed: the request is cancelled and its row freed within a step or two.
    t0 = time.monotonic()
    assert server.wait_idle(timeout=2.0) == (0, 0)
    assert time.monotonic() - t0 < 2.0


def test_non_stream_disconnect_frees_the_slot(server):
    body = {**CHAT, "max_tokens": 900, "seed": 2}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(30, read=0.5))
    assert server.wait_idle(timeout=2.0) == (0, 0)


def test_server_keeps_serving(server):
    for change, _ in BAD_CHAT[:10]:
        _post(server, "/v1/chat/completions", json={**CHAT, **change})
    r = server.client().chat.completions.create(model=MODEL_NAME, messages=CHAT["messages"], max_tokens=3)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    assert httpx.get(server.base_url + "/health").json()["status"] == "ok"
    assert server.wait_idle() == (0, 0)


def test_503_while_loading():
    """A server whose model is still loading answers 503; once loading failed, it says so without
    the error itself (which may name the checkpoint's path), and the error goes to the operator."""
    import threading

    from fastapi.testclient import TestClient

    from nemo_ref.server.app import create_app

    release = threading.Event()
    failures = []

    def loader():
        release.wait(10)
        raise FileNotFoundError("/secret/models/nemo/consolidated.safetensors: no weights")

    app = create_app(loader=loader, model_name="m", on_load_error=failures.append)
    with TestClient(app) as client:
        h = client.get("/health")
        assert h.status_code == 503 and h.json()["status"] == "loading"
        assert h.headers["x-nemo-ref-weights"] == "loading"
        r = client.post("/v1/chat/completions", json={"model": "m", "messages": CHAT["messages"]})
        assert r.status_code == 503 and "loading" in r.json()["error"]["message"]
        assert client.get("/v1/models").status_code == 503
        release.set()
        deadline = time.monotonic() + 10
        while client.get("/health").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        h = client.get("/health")
        assert (
            h.status_code == 503 and h.json()["status"] == "error" and "failed to load" in h.json()["error"]
        )
        r = client.post("/v1/chat/completions", json={"model": "m", "messages": CHAT["messages"]})
        assert r.status_code == 503
        assert all("/secret" not in x.text for x in (h, r)), "clients never see the checkpoint path"
        assert [type(e) for e in failures] == [FileNotFoundError]
