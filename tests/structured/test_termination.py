"""Constrained outputs end on the embedded model the server serves (issue 15, item 8).

The model is the default the server runs without --checkpoint: `nemo-small` with RANDOM weights
shaped like a trained model's (nemo_ref/demo.py). Each case samples a few choices of one seeded
request (choices draw different random numbers) through the grammar the server builds, and each
must complete within 60 tokens. Before (JSON gaps that held a line break and up to 16 spaces or
tabs), the small object completed 1/20: the model wrote a newline and 8 x two spaces at almost
every gap. The full 20-seed measurement, parallel calls included, is
`scripts/bench_server_limits.py --only 8_termination` (benchmarks/server-hardening.md).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llguidance")
pytest.importorskip("mistral_common")

from nemo_ref.demo import embedded_model
from nemo_ref.generate import generate
from nemo_ref.sampling.params import SamplingParams
from nemo_ref.structured import Constraint, grammar_for_request, parse_tool_calls
from nemo_ref.tokenizer import load_tokenizer
from tests.support import OPEN_WEATHER as WEATHER
from tests.support import SMALL_OBJECT as SMALL

MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
N = 8  # choices per case, one batch


@pytest.fixture(scope="module")
def small():
    return embedded_model("nemo-small", seed=0), load_tokenizer()


def _run(small, grammar, tools=None):
    model, tok = small
    params = SamplingParams(n=N, max_tokens=60, seed=0)
    return generate(
        model, tok, MESSAGES, params, tools=tools, constraint_factory=lambda: Constraint(tok, grammar)
    )


@pytest.mark.slow
def test_required_single_call_completes(small):
    _, tok = small
    grammar = grammar_for_request(None, [WEATHER], "required", parallel_tool_calls=False)
    out = _run(small, grammar, tools=[WEATHER])
    for c in out.choices:
        assert c.finish_reason == "tool_calls", tok.decode(c.token_ids, skip_special=False)
        assert len(c.token_ids) <= 60
        content, calls = parse_tool_calls(tok, c.token_ids)
        assert content is None and len(calls) == 1 and calls[0]["function"]["name"] == "get_weather"
        args = json.loads(calls[0]["function"]["arguments"])
        assert args["unit"] in ("celsius", "fahrenheit") and len(args["city"]) <= 12


@pytest.mark.slow
def test_small_json_schema_object_completes(small):
    rf = {"type": "json_schema", "json_schema": {"name": "w", "schema": SMALL}}
    out = _run(small, grammar_for_request(rf))
    for c in out.choices:
        assert c.finish_reason == "stop" and len(c.token_ids) <= 60, c.text
        value = json.loads(c.text)
        assert list(value) == ["city", "temperature", "raining"] and -50 <= value["temperature"] <= 50
        assert c.text == json.dumps(value, ensure_ascii=False), "json.dumps separators, nothing else"
