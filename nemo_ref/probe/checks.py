"""The cheap, deterministic tests (docs/probe.md): 1 capabilities, 2 logprobs mode, 3 greedy and
8 validation. They run first; their accept/reject answers also count as evidence for the ranking
(Session.record_validation), since each emulation predicts them through its own resolve().
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import world
from .anchor import top_of
from .session import Session, accepts

N_TRY = 32  # draws per request when the endpoint has n


def capabilities(s: Session) -> None:
    """Test 1: each sampling field once, plus seed and n (32, 8, 2): accepted or rejected, and the
    largest n the endpoint honours (later tests draw that many per request)."""
    prompt = s.context.prompt
    probes = {
        "top_k": 3,
        "min_p": 0.1,
        "repetition_penalty": 1.1,
        "repeat_penalty": 1.1,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.5,
        "logit_bias": {"0": -1},
    }
    observed, evidence = {}, {}
    for name, value in probes.items():
        reply = s.endpoint.generate(prompt, {"temperature": 1.0, name: value})
        observed[name] = "accepted" if reply.ok else f"rejected ({reply.status})"
        if not reply.ok:
            evidence[name] = reply.error
        s.record_validation({"temperature": 1.0, name: value}, reply.status)
    reply = s.endpoint.generate(prompt, {"temperature": 1.0}, seed=1)
    observed["seed"] = "accepted" if reply.ok else f"rejected ({reply.status})"
    s.seed_ok = reply.ok
    for n in (N_TRY, 8, 2):
        reply = s.endpoint.generate(prompt, {"temperature": 1.0}, n=n)
        if reply.ok and len(reply.choices) == n:
            s.n = n
            break
    observed["n"] = f"up to {s.n} tested" if s.n > 1 else "not supported (one draw per request)"
    if s.n == 1:
        s.report.not_testable["n"] = "no n: one draw per request, so sampling costs more requests"
    if not s.seed_ok:
        s.report.not_testable["seed"] = "the endpoint rejects seed"
    observed["route"] = s.endpoint.route
    if s.endpoint.route == "chat":
        s.report.notes.append("chat-only endpoint: prompts go through the chat template")
    matches = [
        e.name
        for e in s.engines
        if all(
            not world.knows_fields(e, {k: v})
            or accepts(e, {"temperature": 1.0, k: v}) == (observed[k] == "accepted")
            for k, v in probes.items()
        )
    ]
    s.report.prop("capabilities", observed, matches, evidence)


def logprobs_mode(s: Session) -> None:
    """Test 2: at T = 0.5, top_p = 0.5, are the reported logprobs raw, tempered or processed (the
    smallest L1 distance to each)?"""
    ctx = s.context
    design = {"temperature": 0.5, "top_p": 0.5}
    reply = s.endpoint.generate(ctx.prompt, design, top_logprobs=s.k)
    if not reply.ok:
        s.report.not_testable["logprobs_mode"] = f"T=0.5, top_p=0.5 rejected: {reply.error}"
        return
    seen = dict(top_of(reply))
    obs = np.array([math.exp(seen[t]) if t in seen else 0.0 for t in ctx.tokens])
    raw = np.exp(ctx.logprobs)
    z = ctx.logits("light", 0.0)
    tempered_full = np.exp(z / 0.5 - np.max(z / 0.5))
    tempered = (tempered_full / tempered_full.sum())[: ctx.k]
    processed = {}
    for e in s.engines:
        p = world.predict(e, ctx, design)
        if p is not None and not p.rejects:
            processed[e.name] = np.asarray(p.by_offset[0])[: ctx.k]
    dist = {
        "raw": float(np.abs(obs - raw).sum()),
        "tempered": float(np.abs(obs - tempered).sum()),
        "processed": min((float(np.abs(obs - q).sum()) for q in processed.values()), default=math.inf),
    }
    mode = min(dist, key=dist.get)
    matches = [e.name for e in s.engines if e.logprobs_mode == mode]
    evidence = {"L1 distance": {k: round(v, 4) for k, v in dist.items()}}
    s.report.prop("logprobs_mode", mode, matches, evidence)


def greedy(s: Session) -> None:
    """Test 3: T = 0 five times: deterministic, the anchor's top token, or rejected."""
    ctx = s.context
    tokens, status, error = [], 200, None
    if s.n >= 5:
        reply = s.endpoint.generate(ctx.prompt, {"temperature": 0.0}, n=5)
        status, error = reply.status, reply.error
        tokens = [c.token if c.token is not None else c.text for c in reply.choices]
    else:
        for _ in range(5):
            reply = s.endpoint.generate(ctx.prompt, {"temperature": 0.0})
            status, error = reply.status, reply.error
            if not reply.ok:
                break
            tokens += [c.token if c.token is not None else c.text for c in reply.choices]
    s.record_validation({"temperature": 0.0}, status)
    if status != 200:
        s.report.prop(
            "greedy",
            f"temperature 0 rejected ({status})",
            s.matches_status({"temperature": 0.0}, status),
            error,
        )
        return
    same = len(set(tokens)) == 1
    top = tokens[0] == ctx.tokens[0] if tokens else False
    observed = "deterministic, the top token" if same and top else ("deterministic" if same else "varies")
    s.report.prop(
        "greedy",
        observed,
        s.matches_status({"temperature": 0.0}, 200),
        {"tokens": tokens, "anchor_top": ctx.tokens[0]},
    )


def validation(s: Session) -> None:
    """Test 8: out-of-range values, five stops, top_logprobs 21: 400 or accepted, per field."""
    cases = {
        "temperature=2.5": {"temperature": 2.5},
        "top_p=1.5": {"top_p": 1.5},
        "top_k=-2": {"top_k": -2},
        "min_p=1.2": {"min_p": 1.2},
        "presence_penalty=3": {"presence_penalty": 3.0},
        "logit_bias=101": {"logit_bias": {"0": 101}},
    }
    observed, evidence = {}, {}
    all_fields: list[tuple[dict[str, Any], int]] = []
    for label, fields in cases.items():
        reply = s.endpoint.generate(s.context.prompt, fields)
        observed[label] = 400 if reply.status in (400, 422) else reply.status
        if reply.error:
            evidence[label] = reply.error
        s.record_validation(fields, reply.status)
        all_fields.append((fields, reply.status))
    reply = s.endpoint.generate(s.context.prompt, {}, stop=["a", "b", "c", "d", "e"])
    observed["five stop strings"] = reply.status
    reply = s.endpoint.generate(s.context.prompt, {}, top_logprobs=21)
    observed["top_logprobs=21"] = reply.status
    matches = [
        e.name
        for e in s.engines
        if all(
            accepts(e, f) == (status == 200)
            for f, status in all_fields
            if status in (200, 400, 422) and world.knows_fields(e, f)
        )
    ]
    s.report.prop("validation", observed, matches, evidence)


__all__ = ["capabilities", "greedy", "logprobs_mode", "validation"]
