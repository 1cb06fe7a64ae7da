"""The OpenAI API, as far as its reference documents it (the rest is marked assumed)."""

from __future__ import annotations

from ..fields import in_range, unsupported
from ..spec import Cited, EngineSpec

OA = "platform.openai.com/docs/api-reference/chat/create"
OA_DETAILS = "OpenAI API guide, parameter details (frequency and presence penalties)"
_OA_UNKNOWN = "400: Unrecognized request argument supplied"
OA_RANGE = "400: {knob} must be in {interval}"

OPENAI = EngineSpec(
    name="openai",
    version="OpenAI API (documented behaviour)",
    order=Cited(("logit_bias", "presence_frequency", "greedy", "temperature", "top_p"), OA, assumed=True),
    defaults=Cited({}, OA),
    fields={
        "temperature": in_range("temperature", OA, "[0, 2]", OA_RANGE),
        "top_p": in_range("top_p", OA, "[0, 1]", OA_RANGE),
        "presence_penalty": in_range("presence_penalty", OA, "[-2, 2]", OA_RANGE),
        "frequency_penalty": in_range("frequency_penalty", OA, "[-2, 2]", OA_RANGE),
        "logit_bias": in_range(
            "logit_bias", OA, "[-100, 100]", "400: values must lie in {interval}", kind="bias", assumed=True
        ),
        "top_k": unsupported("top_k", OA, _OA_UNKNOWN, assumed=True),
        "min_p": unsupported("min_p", OA, _OA_UNKNOWN, assumed=True),
        "repetition_penalty": unsupported("repetition_penalty", OA, _OA_UNKNOWN, assumed=True),
    },
    repetition_sign=Cited("none", OA),
    repetition_scope=Cited("none", OA),
    penalty_scope=Cited("output", OA_DETAILS),
    frequency_formula=Cited("openai", OA_DETAILS),
    top_k_ties=Cited("none", OA),
    top_p_boundary=Cited("lt", OA, assumed=True),
    zero_temperature=Cited("greedy", OA, assumed=True),
    min_temperature=Cited(None, OA, assumed=True),
    logprobs_mode=Cited("raw", OA, assumed=True),
    seeding=Cited("best effort (system_fingerprint); not reproducible from the seed alone", OA),
)
