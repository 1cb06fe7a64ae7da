"""Test 5, penalty scope (docs/probe.md): the anchor prompt with its two likeliest tokens written
in front of it ("near") and again with WINDOW_GAP+ filler tokens between ("far"). At step 0 nothing
is generated, so a penalty that moves the first token is prompt-scoped: near and far = prompt and
output, near only = a window (llama.cpp's and Ollama's 64 tokens), neither = output only or ignored.

Presence and frequency are scored in the likelihood test with test 4 (order.py builds these
contexts, draws, then hands the outcomes here); repetition penalties, multiplicative and so
sign-dependent, are asked only "does it move the first token" (a G-test against the best engine's
unpenalised prediction).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import likelihood, world
from .anchor import measure, top_of
from .session import RESERVE, Session
from .stats import chi2_sf, g_statistic
from .world import Context

WINDOW_GAP = 72  # tokens between a penalised candidate and the prompt's end in the "far" context
FILLER_TEXT = " and so on,"


def penalty_context(s: Session, far: bool = False) -> Context | None:
    """The anchor prompt with its two likeliest tokens written in front of it, so that
    prompt-scoped penalties have something to act on; measured afresh. ``far``: with filler
    between them and the anchor prompt, so that they sit more than WINDOW_GAP tokens back
    (beyond llama.cpp's and Ollama's 64-token penalty window).

    With /tokenize and the completions route the new prompt is sent as token ids (the
    candidates' own ids, then the anchor prompt's), so where they sit is exact; otherwise it is
    text, and their positions are estimated from it."""
    ctx = s.context
    cands = []
    if s.endpoint.route == "completions":
        for t in ctx.tokens[:2]:
            one = s.endpoint.tokenize(t, special=False)
            if one is None:
                break
            if len(one) == 1:
                cands.append(one[0])
    prompt: Any
    if cands:
        with_special = s.endpoint.tokenize(ctx.prompt, special=True) or []
        plain = s.endpoint.tokenize(ctx.prompt, special=False) or []
        prefix = with_special[: len(with_special) - len(plain)]
        filler: list[int] = []
        if far:
            piece = s.endpoint.tokenize(FILLER_TEXT, special=False) or []
            while piece and len(filler) + len(plain) < WINDOW_GAP:
                filler += piece
        prompt = [*prefix, *cands, *filler, *plain]
    else:
        filler_text = FILLER_TEXT * (WINDOW_GAP // 3) if far else ""
        prompt = "".join(ctx.tokens[:2]) + "." + filler_text + "\n" + ctx.prompt
    reply = s.endpoint.generate(prompt, {"temperature": 1.0}, top_logprobs=s.k)
    top = top_of(reply)
    if not top:
        return None
    new = measure(s.endpoint, prompt, s.k, top, repeats=2)
    if cands:
        # Every likely token's id (not only the two written in): any of them may already occur
        # in the anchor prompt, and a penalty acts on it there too.
        ids_of: dict[int, int] = {}
        for i, t in enumerate(new.tokens[:8]):
            one = s.endpoint.tokenize(t, special=False)
            if one is not None and len(one) == 1 and one[0] not in ids_of:
                ids_of[one[0]] = i
        new.prompt_ids = [ids_of.get(t, new.k) for t in prompt]
        new.exact_prompt = True
    else:  # from the text: each occurrence of a known token's text, ~4 characters per token
        s.report.not_testable["penalty positions"] = (
            "no /tokenize or no completions route: prompt tokens estimated from the text"
        )
        new.prompt_ids = [new.k] * max(1, len(prompt) // 4)
        for i, t in enumerate(new.tokens[:8]):
            if t.strip():
                new.prompt_ids += [i] * prompt.count(t)
    return new


def penalty_scope(
    s: Session,
    outcomes: list[tuple[Context, likelihood.Outcome]],
    best: list[str],
    far_ctx: Context | None = None,
) -> None:
    """Each penalty's step-0 behaviour near (candidates a few tokens back) and far (more than
    WINDOW_GAP back): moves both = prompt and output; near only = a window; neither = output
    only or ignored (indistinguishable without generated tokens); or rejected."""
    moved: dict[str, list[str]] = {}
    evidence = {}
    for ctx, out in outcomes:
        label = "far" if ctx is far_ctx else "near"
        verdicts, described = _moves(s, ctx, out, best)
        for name, verdict in verdicts.items():
            moved.setdefault(name, []).append(f"{label}: {verdict}")
        evidence[label] = {
            "prompt": ctx.prompt,
            "candidates_in_prompt": sorted({i for i in ctx.prompt_ids if i < ctx.k}),
            "positions": "exact (/tokenize)" if ctx.exact_prompt else "estimated from text",
            "designs": described,
        }
    observed = {}
    for name, verdicts in moved.items():
        text = "; ".join(verdicts)
        if "rejected" in text:
            observed[name] = "rejected"
        elif all("moves" in v for v in verdicts) and len(verdicts) > 1:
            observed[name] = "prompt and output (moves near and far)"
        elif verdicts[0].startswith("near: moves") and any(v.startswith("far: no effect") for v in verdicts):
            observed[name] = f"window (moves when a few tokens back, not {WINDOW_GAP}+ back)"
        elif all("no effect" in v for v in verdicts):
            observed[name] = "output only or ignored (no effect at step 0)"
        else:
            observed[name] = text
    s.report.prop("penalty_scope", observed, best, evidence)


def _moves(
    s: Session, ctx: Context, out: likelihood.Outcome, best: list[str]
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Per penalty field: does it move the first token at this context? With the runs, described."""
    observed = {}
    by_name = {e.name: e for e in s.engines}
    runs = list(out.runs)
    # Repetition penalties are multiplicative (sign-dependent: not predictable from logprobs),
    # so they stay out of the ranking; a few draws say whether they move anything.
    # The base design: the first whose unpenalised outcome the best engine can predict here.
    bases = ({"temperature": 0.7, "top_p": 0.8}, {"temperature": 1.0, "top_p": 0.5}, {"temperature": 0.5})
    base = bases[0]
    if best:
        for b in bases:
            p = world.predict(by_name[best[0]], ctx, b)
            if p is not None and not p.rejects:
                base = b
                break
    seed = 5000  # seeded where the endpoint takes seeds, as every other run: a rerun repeats it
    for name, value in world.MULTIPLICATIVE_PENALTIES:
        design = {**base, name: value}
        run = likelihood.DesignRun(design, {}, np.zeros(ctx.k + 1, dtype=np.int64))
        while run.counts.sum() < 32 and s.endpoint.left > RESERVE:
            seed += 1
            reply = s.endpoint.generate(
                ctx.prompt, design, n=s.n, top_logprobs=1, seed=seed if s.seed_ok else None
            )
            run.status, run.error = reply.status, reply.error
            if not reply.ok:
                break
            for c in reply.choices:
                run.counts[ctx.cell(c.token if c.token is not None else c.text)] += 1
        if run.status is not None:
            runs.append(run)
    for run in runs:
        name = next(k for k in run.design if k.endswith("penalty"))
        if not run.accepted:
            observed[name] = f"rejected ({run.status})"
            continue
        base = {k: v for k, v in run.design.items() if not k.endswith("penalty")}
        # Did the penalty move anything? Compare with what the best engine predicts without it.
        ref = world.predict(by_name[best[0]], ctx, base) if best else None
        if ref is None or ref.rejects:
            observed[name] = "accepted, effect not measurable"
            continue
        g, df = g_statistic(run.counts.tolist(), np.asarray(ref.by_offset[0]).tolist())
        moved = df > 0 and g > 0 and chi2_sf(g, df) < 1e-3
        if observed.get(name) != "moves the first token":  # several designs: any one moving counts
            observed[name] = "moves the first token" if moved else "no effect"
    return observed, likelihood.describe_runs(runs, ctx)


__all__ = ["FILLER_TEXT", "WINDOW_GAP", "penalty_context", "penalty_scope"]
