"""The probe's tests, in the order they run, and the report they build (docs/probe.md).

1 capabilities, 2 logprobs mode, 3 greedy, 8 validation (cheap and deterministic: they go first,
and their accept/reject answers count as evidence for the ranking), then 4 order and truncation
with step-0 penalties (5) in one sequential likelihood test, then 6 seed and 7 stop strings from
the budget kept in reserve for them.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..sampling import engines as engine_registry
from ..sampling.params import ParamError
from . import TESTS, likelihood, world
from .anchor import find_anchor, measure, top_of
from .client import BudgetSpent, Endpoint
from .world import Context, Prediction

RESERVE = 14  # requests kept for the seed and stop tests
WINDOW_GAP = 72  # tokens between a penalised candidate and the prompt's end in the "far" context
FILLER_TEXT = " and so on,"
MAX_DRAWS = 3000  # sampled tokens for the likelihood test
N_TRY = 32  # draws per request when the endpoint has n


@dataclass
class Report:
    endpoint: str
    model: str
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)
    ranking: list[dict[str, Any]] = field(default_factory=list)
    verdict: str = "inconclusive"
    answer: list[str] = field(default_factory=list)
    not_testable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    requests_by_test: dict[str, int] = field(default_factory=dict)

    def prop(self, name: str, observed: Any, matches: list[str], evidence: Any) -> None:
        self.properties[name] = {"observed": observed, "matches": matches, "evidence": evidence}


@dataclass
class Probe:
    endpoint: Endpoint
    only: tuple[str, ...] = TESTS
    engines: list[Any] = field(default_factory=list)
    progress: Callable[[str, int, int], None] | None = None

    def __post_init__(self) -> None:
        if not self.engines:
            self.engines = [engine_registry.get(n) for n in engine_registry.names()]
        self.names = [e.name for e in self.engines]
        self.report = Report(self.endpoint.base_url, self.endpoint.model)
        self.evidence_runs: list[likelihood.DesignRun] = []  # accept/reject answers
        self.n = 1
        self.seed_ok = True
        self.context: Context | None = None

    # ---- helpers --------------------------------------------------------------------------------

    def _accepts(self, e: Any, fields: dict[str, Any]) -> bool:
        try:
            e.resolve(fields)
            return True
        except ParamError:
            return False

    def _record_validation(self, fields: dict[str, Any], status: int) -> None:
        """An accept/reject answer as evidence: each engine predicts it through its resolve()."""
        if status not in (200, 400, 422):
            return
        preds = {
            e.name: Prediction(
                [world.REJECT] * len(world.OFFSETS)
                if not self._accepts(e, fields)
                else [np.ones(1)] * len(world.OFFSETS),
                status_known=world.knows_fields(e, fields),
            )
            for e in self.engines
        }
        self.evidence_runs.append(
            likelihood.DesignRun(
                fields, preds, np.zeros(1, dtype=np.int64), 200 if status == 200 else 400, evidence=True
            )
        )

    def _matches_status(self, fields: dict[str, Any], status: int) -> list[str]:
        return [
            e.name
            for e in self.engines
            if not world.knows_fields(e, fields) or self._accepts(e, fields) == (status == 200)
        ]

    def _timed(self, name: str, fn: Callable[[], None]) -> None:
        before = self.endpoint.requests
        try:
            fn()
        except BudgetSpent:
            self.report.not_testable[name] = "the request budget ran out"
        finally:
            self.report.requests_by_test[name] = self.endpoint.requests - before

    # ---- the run --------------------------------------------------------------------------------

    def run(self) -> Report:
        r = self.report
        try:
            anchor = find_anchor(self.endpoint)
        except BudgetSpent:
            r.not_testable["everything"] = "the budget ran out while looking for an anchor"
            return self._finish()
        r.requests_by_test["anchor"] = self.endpoint.requests
        self.k = anchor.k
        if anchor.context is None:
            r.notes.append(f"no anchor: {anchor.note}")
            r.not_testable["order"] = "no logprobs: the draws cannot be compared with predictions"
            return self._finish()
        self.context = anchor.context
        if anchor.note:
            r.notes.append(anchor.note)
        if anchor.k < 20:
            r.notes.append(f"top_logprobs capped at {anchor.k}: fewer known tokens, less power")
        r.prop(
            "anchor",
            {"prompt": anchor.context.prompt, "route": self.endpoint.route, "top_logprobs": anchor.k},
            [],
            {
                "top": [
                    [t, round(math.exp(lp), 4)]
                    for t, lp in zip(anchor.context.tokens[:6], anchor.context.logprobs, strict=False)
                ],
                "spread_of_repeats": round(anchor.context.spread, 6),
                "prompts_tried": anchor.tried,
                "qualified": anchor.qualified,
            },
        )
        steps = [
            ("capabilities", self.capabilities),
            ("logprobs_mode", self.logprobs_mode),
            ("greedy", self.greedy),
            ("validation", self.validation),
            ("order", self.order),
            ("seed", self.seed),
            ("stop", self.stop),
        ]
        for name, fn in steps:
            if name in self.only or (name == "order" and "penalties" in self.only):
                self._timed(name, fn)
        return self._finish()

    def _finish(self) -> Report:
        r = self.report
        r.requests = self.endpoint.requests
        return r

    # ---- 1. capabilities -------------------------------------------------------------------------

    def capabilities(self) -> None:
        assert self.context is not None
        prompt = self.context.prompt
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
            reply = self.endpoint.generate(prompt, {"temperature": 1.0, name: value})
            observed[name] = "accepted" if reply.ok else f"rejected ({reply.status})"
            if not reply.ok:
                evidence[name] = reply.error
            self._record_validation({"temperature": 1.0, name: value}, reply.status)
        reply = self.endpoint.generate(prompt, {"temperature": 1.0}, seed=1)
        observed["seed"] = "accepted" if reply.ok else f"rejected ({reply.status})"
        self.seed_ok = reply.ok
        for n in (N_TRY, 8, 2):
            reply = self.endpoint.generate(prompt, {"temperature": 1.0}, n=n)
            if reply.ok and len(reply.choices) == n:
                self.n = n
                break
        observed["n"] = f"up to {self.n} tested" if self.n > 1 else "not supported (one draw per request)"
        if self.n == 1:
            self.report.not_testable["n"] = "no n: one draw per request, so sampling costs more requests"
        if not self.seed_ok:
            self.report.not_testable["seed"] = "the endpoint rejects seed"
        observed["route"] = self.endpoint.route
        if self.endpoint.route == "chat":
            self.report.notes.append("chat-only endpoint: prompts go through the chat template")
        matches = [
            e.name
            for e in self.engines
            if all(
                not world.knows_fields(e, {k: v})
                or self._accepts(e, {"temperature": 1.0, k: v}) == (observed[k] == "accepted")
                for k, v in probes.items()
            )
        ]
        self.report.prop("capabilities", observed, matches, evidence)

    # ---- 2. logprobs mode ------------------------------------------------------------------------

    def logprobs_mode(self) -> None:
        ctx = self.context
        design = {"temperature": 0.5, "top_p": 0.5}
        reply = self.endpoint.generate(ctx.prompt, design, top_logprobs=self.k)
        if not reply.ok:
            self.report.not_testable["logprobs_mode"] = f"T=0.5, top_p=0.5 rejected: {reply.error}"
            return
        seen = dict(top_of(reply))
        obs = np.array([math.exp(seen[t]) if t in seen else 0.0 for t in ctx.tokens])
        raw = np.exp(ctx.logprobs)
        z = ctx.logits("light", 0.0)
        tempered_full = np.exp(z / 0.5 - np.max(z / 0.5))
        tempered = (tempered_full / tempered_full.sum())[: ctx.k]
        processed = {}
        for e in self.engines:
            p = world.predict(e, ctx, design)
            if p is not None and not p.rejects:
                processed[e.name] = np.asarray(p.by_offset[0])[: ctx.k]
        dist = {
            "raw": float(np.abs(obs - raw).sum()),
            "tempered": float(np.abs(obs - tempered).sum()),
            "processed": min((float(np.abs(obs - q).sum()) for q in processed.values()), default=math.inf),
        }
        mode = min(dist, key=dist.get)
        matches = [e.name for e in self.engines if e.logprobs_mode == mode]
        evidence = {"L1 distance": {k: round(v, 4) for k, v in dist.items()}}
        self.report.prop("logprobs_mode", mode, matches, evidence)

    # ---- 3. greedy -------------------------------------------------------------------------------

    def greedy(self) -> None:
        ctx = self.context
        tokens, status, error = [], 200, None
        if self.n >= 5:
            reply = self.endpoint.generate(ctx.prompt, {"temperature": 0.0}, n=5)
            status, error = reply.status, reply.error
            tokens = [c.token if c.token is not None else c.text for c in reply.choices]
        else:
            for _ in range(5):
                reply = self.endpoint.generate(ctx.prompt, {"temperature": 0.0})
                status, error = reply.status, reply.error
                if not reply.ok:
                    break
                tokens += [c.token if c.token is not None else c.text for c in reply.choices]
        self._record_validation({"temperature": 0.0}, status)
        if status != 200:
            self.report.prop(
                "greedy",
                f"temperature 0 rejected ({status})",
                self._matches_status({"temperature": 0.0}, status),
                error,
            )
            return
        same = len(set(tokens)) == 1
        top = tokens[0] == ctx.tokens[0] if tokens else False
        observed = "deterministic, the top token" if same and top else ("deterministic" if same else "varies")
        self.report.prop(
            "greedy",
            observed,
            self._matches_status({"temperature": 0.0}, 200),
            {"tokens": tokens, "anchor_top": ctx.tokens[0]},
        )

    # ---- 8. validation ---------------------------------------------------------------------------

    def validation(self) -> None:
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
            reply = self.endpoint.generate(self.context.prompt, fields)
            observed[label] = 400 if reply.status in (400, 422) else reply.status
            if reply.error:
                evidence[label] = reply.error
            self._record_validation(fields, reply.status)
            all_fields.append((fields, reply.status))
        reply = self.endpoint.generate(self.context.prompt, {}, stop=["a", "b", "c", "d", "e"])
        observed["five stop strings"] = reply.status
        reply = self.endpoint.generate(self.context.prompt, {}, top_logprobs=21)
        observed["top_logprobs=21"] = reply.status
        matches = [
            e.name
            for e in self.engines
            if all(
                self._accepts(e, f) == (s == 200)
                for f, s in all_fields
                if s in (200, 400, 422) and world.knows_fields(e, f)
            )
        ]
        self.report.prop("validation", observed, matches, evidence)

    # ---- 4 + 5. order, truncation and step-0 penalties --------------------------------------------

    def _penalty_context(self, far: bool = False) -> Context | None:
        """The anchor prompt with its two likeliest tokens written in front of it, so that
        prompt-scoped penalties have something to act on; measured afresh. ``far``: with filler
        between them and the anchor prompt, so that they sit more than WINDOW_GAP tokens back
        (beyond llama.cpp's and Ollama's 64-token penalty window).

        With /tokenize and the completions route the new prompt is sent as token ids (the
        candidates' own ids, then the anchor prompt's), so where they sit is exact; otherwise it is
        text, and their positions are estimated from it."""
        ctx = self.context
        cands = []
        if self.endpoint.route == "completions":
            for t in ctx.tokens[:2]:
                one = self.endpoint.tokenize(t, special=False)
                if one is None:
                    break
                if len(one) == 1:
                    cands.append(one[0])
        prompt: Any
        if cands:
            with_special = self.endpoint.tokenize(ctx.prompt, special=True) or []
            plain = self.endpoint.tokenize(ctx.prompt, special=False) or []
            prefix = with_special[: len(with_special) - len(plain)]
            filler: list[int] = []
            if far:
                piece = self.endpoint.tokenize(FILLER_TEXT, special=False) or []
                while piece and len(filler) + len(plain) < WINDOW_GAP:
                    filler += piece
            prompt = [*prefix, *cands, *filler, *plain]
        else:
            filler_text = FILLER_TEXT * (WINDOW_GAP // 3) if far else ""
            prompt = "".join(ctx.tokens[:2]) + "." + filler_text + "\n" + ctx.prompt
        reply = self.endpoint.generate(prompt, {"temperature": 1.0}, top_logprobs=self.k)
        top = top_of(reply)
        if not top:
            return None
        new = measure(self.endpoint, prompt, self.k, top, repeats=2)
        if cands:
            # Every likely token's id (not only the two written in): any of them may already occur
            # in the anchor prompt, and a penalty acts on it there too.
            ids_of: dict[int, int] = {}
            for i, t in enumerate(new.tokens[:8]):
                one = self.endpoint.tokenize(t, special=False)
                if one is not None and len(one) == 1 and one[0] not in ids_of:
                    ids_of[one[0]] = i
            new.prompt_ids = [ids_of.get(t, new.k) for t in prompt]
            new.exact_prompt = True
        else:  # from the text: each occurrence of a known token's text, ~4 characters per token
            self.report.not_testable["penalty positions"] = (
                "no /tokenize or no completions route: prompt tokens estimated from the text"
            )
            new.prompt_ids = [new.k] * max(1, len(prompt) // 4)
            for i, t in enumerate(new.tokens[:8]):
                if t.strip():
                    new.prompt_ids += [i] * prompt.count(t)
        return new

    def order(self) -> None:
        contexts = [self.context]
        candidates_order = world.order_designs() if "order" in self.only else []
        pen_ctx = self._penalty_context() if "penalties" in self.only else None
        far_ctx = self._penalty_context(far=True) if pen_ctx is not None else None
        chosen_all = []
        separable = {}
        if candidates_order:
            chosen, best_possible = world.choose_designs(self.engines, self.context, candidates_order, 6)
            chosen_all += [(self.context, d, p) for d, p in chosen]
            separable.update(best_possible)
        if pen_ctx is not None:
            contexts.append(pen_ctx)
            chosen, best_possible = world.choose_designs(self.engines, pen_ctx, world.penalty_designs(), 4)
            chosen_all += [(pen_ctx, d, p) for d, p in chosen]
            for k, v in best_possible.items():
                separable[k] = max(separable.get(k, 0.0), v)
        if far_ctx is not None:
            contexts.append(far_ctx)
            chosen, best_possible = world.choose_designs(self.engines, far_ctx, world.penalty_designs(), 3)
            chosen_all += [(far_ctx, d, p) for d, p in chosen]
            for k, v in best_possible.items():
                separable[k] = max(separable.get(k, 0.0), v)
        # The likelihood test runs per context (each has its own cells); scores add up.
        outcomes = []
        budget_each = max(0, (self.endpoint.left - RESERVE)) // max(1, len(contexts))
        for ctx in contexts:
            mine = [(d, p) for c, d, p in chosen_all if c is ctx]
            if not mine:
                continue
            reserve = max(RESERVE, self.endpoint.left - budget_each)
            out = likelihood.run_sequential(
                self.endpoint,
                ctx,
                mine,
                self.names,
                n_per_request=self.n,
                use_seed=self.seed_ok,
                max_draws=MAX_DRAWS // len(contexts),
                reserve=reserve,
                evidence=self.evidence_runs,
                progress=(lambda d, m: self.progress("sampling", d, m)) if self.progress else None,
            )
            outcomes.append((ctx, out))
        if not outcomes:
            self.report.not_testable["order"] = (
                "no usable design (every candidate depends on the invisible tail)"
            )
            return
        runs = [r for _, o in outcomes for r in o.runs] + self.evidence_runs
        scores = likelihood.score(runs, self.names)
        verdict, best, reason = likelihood.decide(scores, runs)
        for s in scores:
            s.tied_with = [
                o.engine for o in scores if o.engine != s.engine and likelihood.tied(s.engine, o.engine, runs)
            ]
        r = self.report
        r.verdict, r.answer = verdict, best
        r.ranking = [
            {
                "engine": s.engine,
                "log_likelihood": round(s.log_likelihood, 3),
                "impossible_draws": s.impossible_draws,
                "p_value": float(f"{s.p_value:.3g}"),
                "tied_with": s.tied_with,
            }
            for s in scores
        ]
        draws = sum(o.draws for _, o in outcomes)
        order_runs = likelihood.describe_runs(outcomes[0][1].runs, outcomes[0][0])
        inseparable = sorted({tuple(sorted(k)) for k, v in separable.items() if v < likelihood.TIE})
        r.prop(
            "order_truncation",
            verdict if not best else f"{verdict}: {' = '.join(best)}",
            best,
            {
                "designs": order_runs,
                "draws": draws,
                "reason": reason,
                "inseparable_here": [" = ".join(p) for p in inseparable],
            },
        )
        penalty_outcomes = [(c, o) for c, o in outcomes if c is pen_ctx or c is far_ctx]
        if penalty_outcomes:
            self._penalty_property(penalty_outcomes, best)

    def _penalty_property(self, outcomes: list[tuple[Context, likelihood.Outcome]], best: list[str]) -> None:
        """Each penalty's step-0 behaviour near (candidates a few tokens back) and far (more than
        WINDOW_GAP back): moves both = prompt and output; near only = a window; neither = output
        only or ignored (indistinguishable without generated tokens); or rejected."""
        moved: dict[str, list[str]] = {}
        evidence = {}
        for ctx, out in outcomes:
            label = "far" if ctx is not outcomes[0][0] else "near"
            for name, verdict in self._penalty_moves(ctx, out, best).items():
                moved.setdefault(name, []).append(f"{label}: {verdict}")
            evidence[label] = {
                "prompt": ctx.prompt,
                "candidates_in_prompt": sorted({i for i in ctx.prompt_ids if i < ctx.k}),
                "positions": "exact (/tokenize)" if ctx.exact_prompt else "estimated from text",
                "designs": self._last_penalty_runs,
            }
        observed = {}
        for name, verdicts in moved.items():
            text = "; ".join(verdicts)
            if "rejected" in text:
                observed[name] = "rejected"
            elif all("moves" in v for v in verdicts) and len(verdicts) > 1:
                observed[name] = "prompt and output (moves near and far)"
            elif verdicts[0].startswith("near: moves") and any(
                v.startswith("far: no effect") for v in verdicts
            ):
                observed[name] = f"window (moves when a few tokens back, not {WINDOW_GAP}+ back)"
            elif all("no effect" in v for v in verdicts):
                observed[name] = "output only or ignored (no effect at step 0)"
            else:
                observed[name] = text
        self.report.prop("penalty_scope", observed, best, evidence)

    def _penalty_moves(self, ctx: Context, out: likelihood.Outcome, best: list[str]) -> dict[str, str]:
        """Per penalty field: does it move the first token at this context?"""
        observed = {}
        neutral = {e.name: e for e in self.engines}
        runs = list(out.runs)
        # Repetition penalties are multiplicative (sign-dependent: not predictable from logprobs),
        # so they stay out of the ranking; a few draws say whether they move anything.
        # The base design: the first whose unpenalised outcome the best engine can predict here.
        bases = ({"temperature": 0.7, "top_p": 0.8}, {"temperature": 1.0, "top_p": 0.5}, {"temperature": 0.5})
        base = bases[0]
        if best:
            for b in bases:
                p = world.predict(neutral[best[0]], ctx, b)
                if p is not None and not p.rejects:
                    base = b
                    break
        for name, value in world.MULTIPLICATIVE_PENALTIES:
            design = {**base, name: value}
            run = likelihood.DesignRun(design, {}, np.zeros(ctx.k + 1, dtype=np.int64))
            while run.counts.sum() < 32 and self.endpoint.left > RESERVE:
                reply = self.endpoint.generate(ctx.prompt, design, n=self.n, top_logprobs=1)
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
            ref = world.predict(neutral[best[0]], ctx, base) if best else None
            if ref is None or ref.rejects:
                observed[name] = "accepted, effect not measurable"
                continue
            g, df = stats_g(run.counts, np.asarray(ref.by_offset[0]))
            moved = df > 0 and g > 0 and _p(g, df) < 1e-3
            if observed.get(name) != "moves the first token":  # several designs: any one moving counts
                observed[name] = "moves the first token" if moved else "no effect"
        self._last_penalty_runs = likelihood.describe_runs(runs, ctx)
        return observed

    # ---- 6. seed ---------------------------------------------------------------------------------

    def seed(self) -> None:
        if not self.seed_ok:
            return
        prompt, fields = self.context.prompt, {"temperature": 1.0}
        a = self.endpoint.generate(prompt, fields, max_tokens=8, seed=7)
        b = self.endpoint.generate(prompt, fields, max_tokens=8, seed=7)
        c = self.endpoint.generate(prompt, fields, max_tokens=8, seed=8)
        if not (a.ok and b.ok and c.ok):
            self.report.not_testable["seed"] = "seeded requests failed"
            return
        text = lambda rep: rep.choices[0].text  # noqa: E731
        results: dict[str, Any] = {}

        def one(i: int) -> None:
            results[i] = self.endpoint.generate(prompt, fields, max_tokens=8, seed=7 if i == 0 else None)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        batched = results.get(0)
        observed = {
            "same seed, same text": text(a) == text(b),
            "different seed, different text": text(a) != text(c),
            "batch-invariant (seeded among 7 concurrent requests)": bool(
                batched and batched.ok and text(batched) == text(a)
            ),
        }
        # Engines whose seed makes a request repeatable (per-request generators, counter RNGs)
        # versus those that ignore it or share one global generator.
        unseeded = ("ignored", "global", "best effort")
        repeatable = [e.name for e in self.engines if not e.spec.seeding.value.startswith(unseeded)]
        same = observed["same seed, same text"]
        matches = repeatable if same else [e.name for e in self.engines if e.name not in repeatable]
        self.report.prop(
            "seed",
            observed,
            matches,
            {"texts": [text(a), text(b), text(c), text(batched) if batched and batched.ok else None]},
        )

    # ---- 7. stop strings -------------------------------------------------------------------------

    def stop(self) -> None:
        prompt = self.context.prompt
        base = self.endpoint.generate(prompt, {"temperature": 0.0}, max_tokens=12)
        if not base.ok or len(base.choices[0].text) < 6:
            self.report.not_testable["stop"] = "no greedy continuation long enough to place two stop strings"
            return
        text = base.choices[0].text
        early, late = _two_stops(text)
        if early is None:
            self.report.not_testable["stop"] = f"no two distinct substrings in the greedy text {text!r}"
            return
        outs = []
        for order in ([late, early], [early, late]):
            rep = self.endpoint.generate(prompt, {"temperature": 0.0}, max_tokens=12, stop=order)
            outs.append(rep.choices[0].text if rep.ok else None)
        cut_early = text[: text.index(early)]
        observed = {
            "earliest match wins": all(
                o is not None and o.startswith(cut_early) and len(o) <= text.index(early) + len(early)
                for o in outs
            ),
            "stop text included": any(o is not None and o.endswith(early) for o in outs),
        }
        self.report.prop("stop", observed, [], {"greedy": text, "stops": [early, late], "outputs": outs})


def _two_stops(text: str) -> tuple[str | None, str | None]:
    """Two 2-character substrings whose first occurrences differ and do not overlap."""
    for i in range(1, len(text) - 1):
        a = text[i : i + 2]
        if text.index(a) != i or not a.strip():
            continue
        for j in range(i + 2, len(text) - 1):
            b = text[j : j + 2]
            if text.index(b) == j and b.strip() and a not in b:
                return a, b
    return None, None


def stats_g(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    from .stats import g_statistic

    return g_statistic(counts.tolist(), probs.tolist())


def _p(g: float, df: int) -> float:
    from .stats import chi2_sf

    return chi2_sf(g, df)
