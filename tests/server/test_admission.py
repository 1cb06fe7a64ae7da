"""Admission and fairness (issue 15, item 5): a bounded waiting queue (429 + Retry-After beyond it),
a cap on n x max_tokens, no head-of-line blocking by cancelled requests, and chunked prefill
interleaved with decode steps. Engine-level tests drive ``Engine.step()`` by hand on the test
server's model; the HTTP ones use the shared test server.
"""

from __future__ import annotations

import time

import httpx
import pytest

from nemo_ref.engine import Engine, QueueFull, Request
from nemo_ref.generate import encode_prompt, make_sequences
from nemo_ref.sampling.params import SamplingParams
from tests.support import MAX_BATCH, MAX_QUEUE, MAX_REQUEST_TOKENS, MODEL_NAME


def _request(server, text: str, n: int = 1, max_tokens: int = 50, seed: int = 0, **kw) -> Request:
    params = SamplingParams(max_tokens=max_tokens, seed=seed, n=n, logit_bias={2: -100}, **kw)  # no EOS
    _, seqs = make_sequences(server.tokenizer, encode_prompt(server.tokenizer, text), params, 1024)
    return Request(seqs)


def _engine(server, **kw) -> Engine:
    return Engine(server.app.state.server.model, max_len=1024, **kw)


def test_cancelled_waiting_request_does_not_block_the_queue(server):
    """Before: a cancelled n=2 request at the head of the queue kept an n=1 request waiting with a
    row free (until enough rows freed for the cancelled one), and the load still counted it."""
    engine = _engine(server, max_batch=2)
    running = engine.submit(_request(server, "a"))
    engine.step()
    big = engine.submit(_request(server, "b", n=2))
    small = engine.submit(_request(server, "c"))
    engine.step()
    assert engine.load == (1, 2)  # one row free, but big (n=2) is first in line
    engine.cancel(big)
    assert big.finished and engine.load == (1, 1)
    engine.step()
    assert engine.load == (2, 0) and len(small.sequences[0].output) == 1
    engine.cancel(running)
    engine.cancel(small)
    engine.step()
    assert engine.load == (0, 0) and engine._free == [0, 1]


def test_chunked_prefill_interleaves_with_decoding(server):
    """A long prompt arriving while a sequence decodes is prefilled a chunk per step; the running
    sequence gets a token every step meanwhile. No forward pass runs more than a chunk of prompt."""
    engine = _engine(server, max_batch=2, prefill_chunk=8)
    widths = []
    model = engine.model
    real_forward = model.forward

    def forward(tokens, *a, **k):
        widths.append(tokens.shape[1])
        return real_forward(tokens, *a, **k)

    model.forward = forward
    try:
        a = engine.submit(_request(server, "hi", max_tokens=40))
        engine.step()
        long = engine.submit(_request(server, "word " * 30, max_tokens=2))
        n_prompt = len(long.sequences[0].prompt)
        steps = 0
        while not long.sequences[0].output:
            before = len(a.sequences[0].output)
            engine.step()
            steps += 1
            assert len(a.sequences[0].output) == before + 1, "the running sequence waited"
        assert steps == -(-n_prompt // 8) and max(widths) == 8
        engine.cancel(a)
        while not long.finished:
            engine.step()
    finally:
        del model.forward


def test_chunked_prefill_gives_the_same_tokens(server):
    outs = []
    for chunk in (5, 512):
        engine = _engine(server, max_batch=2, prefill_chunk=chunk)
        req = engine.submit(
            _request(server, "The lighthouse keeper " * 4, n=2, max_tokens=6, temperature=0.0)
        )
        while not req.finished:
            engine.step()
        outs.append([s.output for s in req.sequences])
    assert outs[0] == outs[1]


def test_prefill_chunk_must_be_positive(server):
    with pytest.raises(ValueError, match="prefill_chunk"):
        Engine(server.app.state.server.model, max_batch=1, max_len=8, prefill_chunk=0)


def test_full_queue_is_429_with_retry_after(server):
    """Before: no bound; with 64 streams, 56 saw no token in 60 s and the 65th timed out."""
    engine = server.engine
    assert server.wait_idle() == (0, 0)
    held = [engine.submit(_request(server, "hold", n=MAX_BATCH, max_tokens=500, seed=1))]
    try:
        deadline = time.monotonic() + 10
        while engine.load != (MAX_BATCH, 0):  # every row taken, nothing waiting
            assert time.monotonic() < deadline
            time.sleep(0.01)
        held += [
            engine.submit(_request(server, f"wait {i}", max_tokens=5), max_waiting=MAX_QUEUE)
            for i in range(MAX_QUEUE)
        ]
        with pytest.raises(QueueFull):
            engine.submit(_request(server, "one too many"), max_waiting=MAX_QUEUE)
        body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        r = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=10)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "busy" in r.json()["error"]["message"]
        assert httpx.get(server.base_url + "/health").json()["waiting"] == MAX_QUEUE
    finally:
        for req in held:
            engine.cancel(req)
    assert server.wait_idle() == (0, 0)


def test_n_times_max_tokens_is_capped(server):
    """Before: n=8, max_tokens=4092 (with top_logprobs=20) held every row for about an hour."""
    from nemo_ref.server.jobs import APIError, build_job

    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "n": 8}
    over = MAX_REQUEST_TOKENS // 8 + 1
    r = httpx.post(server.base_url + "/v1/chat/completions", json={**body, "max_tokens": over}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    assert "max-request-tokens" in r.json()["error"]["message"]
    ids = encode_prompt(server.tokenizer, "hi")
    job = build_job(
        server.engine, server.tokenizer, ids, SamplingParams(n=8), max_request_tokens=MAX_REQUEST_TOKENS
    )
    assert [s.max_new_tokens for s in job.seqs] == [MAX_REQUEST_TOKENS // 8] * 8  # the default shrinks
    with pytest.raises(APIError):
        build_job(
            server.engine,
            server.tokenizer,
            ids,
            SamplingParams(n=2, max_completion_tokens=3000),
            max_request_tokens=4096,
        )
