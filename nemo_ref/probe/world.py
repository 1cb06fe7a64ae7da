"""What each candidate engine predicts for a design, from what the endpoint showed of its logits.

The anchor request (T = 1, top_logprobs = K) gives K token texts and their log-probabilities: the
model's logits for those K tokens up to one unknown constant. The rest of the vocabulary is one
"other" cell holding the leftover mass. To ask an engine emulation (nemo_ref.sampling.engines)
what it would do, the probe builds a small synthetic vocabulary: the K known tokens (ids 0..K-1)
with those logits, then a tail of equal tokens carrying the leftover mass, each no more likely
than the K-th known token. Two unknowns are handled explicitly:

- the tail's shape: every prediction is computed for a heavy tail (as few tail tokens as
  possible, each as likely as the K-th known one) and a light one (4096 tokens); a design is
  used only when every engine's two predictions agree (total variation < TAIL_TOLERANCE), so no
  conclusion rests on the invisible part of the vocabulary;
- the constant: multiplicative penalties (repetition) depend on the sign of the real logit, which
  logprobs do not show. Predictions are computed for several offsets c (logits = logprobs + c)
  and the likelihood is maximised over c per context (a profile likelihood, one nuisance
  parameter per context and engine).

Predictions are over K + 1 cells: the known tokens, then "other". A design the engine rejects
predicts ``REJECT`` (the endpoint's 400 is then the observation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..sampling.params import ParamError

REJECT = "reject"
TAIL_TOLERANCE = 0.01
LIGHT_TAIL = 4096
OFFSETS = (0.0,)  # logits = logprobs + c; one value: every design in use is offset-free
SIGN_PROBE_OFFSET = 40.0  # every logit positive: tells offset-dependent predictions apart


@dataclass
class Context:
    """One anchor prompt: the known tokens' texts and mean logprobs, and where they occur in the
    prompt (synthetic prompt ids: known token i is id i, every other prompt token a filler)."""

    prompt: str | list[int]  # text, or token ids (completions route)
    tokens: list[str]  # K token texts, most likely first
    logprobs: np.ndarray  # [K], mean over the anchor's repeats
    spread: float  # max |difference| between the repeats' logprobs
    prompt_ids: list[int] = field(default_factory=list)  # synthetic: i for known token i, else FILLER
    exact_prompt: bool = False  # True when /tokenize gave the prompt's real token ids

    @property
    def k(self) -> int:
        return len(self.tokens)

    @property
    def other(self) -> float:
        return max(0.0, 1.0 - float(np.exp(self.logprobs).sum()))

    def cell(self, token_text: str | None) -> int:
        """The cell of a sampled token: its index among the known tokens, else K ("other")."""
        if token_text is not None:
            for i, t in enumerate(self.tokens):
                if t == token_text:
                    return i
        return self.k

    def logits(self, tail: str, offset: float) -> np.ndarray:
        """The synthetic vocabulary's logits: K known, then the tail (the last id is the filler)."""
        known = self.logprobs.astype(np.float64)
        mass = self.other
        floor = float(np.exp(known.min()))
        m = (max(1, math.ceil(mass / floor)) if mass > 0 else 1) if tail == "heavy" else LIGHT_TAIL
        each = mass / m if mass > 0 else 1e-12 * floor
        tail_logits = np.full(m + 1, math.log(each))
        tail_logits[-1] = math.log(1e-12 * floor)  # the filler: never a real competitor
        return np.concatenate([known, tail_logits]) + offset


@dataclass
class Prediction:
    """An engine's prediction for one design: per offset, the cell probabilities (or REJECT).

    ``status_known`` is False when the design sends a field the engine does not have: whether an
    engine answers an unknown field with a 400 or ignores it is not part of its sampling semantics
    (the emulation ignores it), so such an answer is no evidence either way.
    """

    by_offset: list[np.ndarray | str]
    message: str = ""  # the engine's error message when it rejects
    status_known: bool = True
    unknown: bool = False  # the prediction depends on the logits' unknown offset (see predict)

    @property
    def rejects(self) -> bool:
        return isinstance(self.by_offset[0], str)


def knows_fields(engine: Any, design: Mapping[str, Any]) -> bool:
    return all(name in engine.spec.fields for name in design)


def predict(engine: Any, context: Context, design: Mapping[str, Any]) -> Prediction | None:
    """The engine's cell distribution for ``design`` at ``context``; None when it depends on the
    unknown tail (the design is then unusable for this context)."""
    known = knows_fields(engine, design)
    try:
        engine.resolve(design)
    except ParamError as e:
        return Prediction([REJECT] * len(OFFSETS), str(e), known)
    out: list[np.ndarray | str] = []
    for offset in OFFSETS:
        cells = []
        for tail in ("heavy", "light"):
            z = context.logits(tail, offset)
            fill = z.size - 1
            prompt = [i if i < context.k else fill for i in context.prompt_ids]
            try:
                p = engine.probabilities(z, design, prompt, ())
            except (ValueError, ParamError):
                return None
            cells.append(np.append(p[: context.k], max(0.0, 1.0 - p[: context.k].sum())))
        if 0.5 * np.abs(cells[0] - cells[1]).sum() > TAIL_TOLERANCE:
            return None
        out.append(0.5 * (cells[0] + cells[1]))
    # A multiplicative penalty (TGI maps presence_penalty to a repetition penalty) acts on the sign
    # of the real logit, which logprobs hide: if shifting every logit changes the prediction, the
    # engine's prediction for this design is unknown (scored as well as the best engine's, never
    # better, and it separates nothing).
    shifted = []
    for tail in ("heavy", "light"):
        z = context.logits(tail, SIGN_PROBE_OFFSET)
        prompt = [i if i < context.k else z.size - 1 for i in context.prompt_ids]
        try:
            p = engine.probabilities(z, design, prompt, ())
        except (ValueError, ParamError):
            return None
        shifted.append(np.append(p[: context.k], max(0.0, 1.0 - p[: context.k].sum())))
    if 0.5 * np.abs(0.5 * (shifted[0] + shifted[1]) - out[0]).sum() > TAIL_TOLERANCE:
        return Prediction(out, status_known=known, unknown=True)
    return Prediction(out, status_known=known)


def separation(a: Prediction, b: Prediction) -> float:
    """How far apart two predictions are: 1 if exactly one rejects (and both know the fields), 0
    if either rejects otherwise, else the smallest total variation over the offsets' pairs (a
    difference that some offset could explain is no difference)."""
    if a.rejects or b.rejects:
        return 1.0 if a.rejects != b.rejects and a.status_known and b.status_known else 0.0
    if a.unknown or b.unknown:
        return 0.0
    best = 1.0
    for p in a.by_offset:
        for q in b.by_offset:
            best = min(best, 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum()))
    return best


def design_key(design: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in design.items())


def order_designs() -> list[dict[str, Any]]:
    """The grid the order-and-truncation designs are chosen from."""
    grid = []
    for t in (0.5, 1.0, 1.5):
        for top_p in (None, 0.5, 0.75, 0.9):
            for top_k in (None, 2, 3):
                for min_p in (None, 0.15, 0.3):
                    d: dict[str, Any] = {"temperature": t}
                    if top_p is not None:
                        d["top_p"] = top_p
                    if top_k is not None:
                        d["top_k"] = top_k
                    if min_p is not None:
                        d["min_p"] = min_p
                    grid.append(d)
    return grid


ADDITIVE_PENALTIES = (("presence_penalty", 1.5), ("frequency_penalty", 1.5))
MULTIPLICATIVE_PENALTIES = (("repetition_penalty", 1.8), ("repeat_penalty", 1.8))


def penalty_designs(penalties=ADDITIVE_PENALTIES) -> list[dict[str, Any]]:
    """Penalties at step 0 (nothing generated yet: only prompt-scoped penalties can act).

    Only the additive ones (presence, frequency) enter the likelihood test: a multiplicative
    (repetition) penalty divides positive logits and multiplies negative ones, and logprobs do not
    show a logit's sign, so its effect cannot be predicted; penalties.py tests only whether it moves
    anything.
    """
    grid = []
    for name, value in penalties:
        for t, top_p in ((1.0, 0.8), (0.7, None), (1.0, None)):
            d: dict[str, Any] = {"temperature": t, name: value}
            if top_p is not None:
                d["top_p"] = top_p
            grid.append(d)
    return grid


def choose_designs(
    engines: Sequence[Any], context: Context, candidates: Sequence[dict[str, Any]], how_many: int
) -> tuple[list[tuple[dict[str, Any], dict[str, Prediction]]], dict[tuple[str, str], float]]:
    """Greedily pick the designs that separate the most pairs of engines.

    Returns the chosen designs with every engine's prediction, and for every pair of engines the
    best separation any usable candidate offers (pairs near 0 cannot be told apart here).
    """
    table = []
    for d in candidates:
        preds = {}
        for e in engines:
            p = predict(e, context, d)
            if p is None:
                break
            preds[e.name] = p
        else:
            table.append((d, preds))
    names = [e.name for e in engines]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    seps = [{pair: separation(preds[pair[0]], preds[pair[1]]) for pair in pairs} for _, preds in table]
    best_possible = {pair: max((s[pair] for s in seps), default=0.0) for pair in pairs}
    chosen: list[int] = []
    covered = dict.fromkeys(pairs, 0.0)
    for _ in range(how_many):
        gains = []
        for i, s in enumerate(seps):
            if i in chosen or all(table[i][1][n].rejects for n in names):
                gains.append(-1.0)
                continue
            # value: how much closer each pair gets to a separation of 0.5, the pairs separated
            # worst so far weighing most (a design that splits a hard pair beats one that splits
            # several easy ones again)
            gains.append(
                sum(
                    max(0.0, min(s[p], 0.5) - min(covered[p], 0.5)) / (covered[p] + 0.02)
                    for p in pairs
                    if best_possible[p] >= 0.02
                )
            )
        if not gains or max(gains) <= 1e-9:
            break
        i = int(np.argmax(gains))
        chosen.append(i)
        for p in pairs:
            covered[p] = max(covered[p], seps[i][p])
    return [table[i] for i in chosen], best_possible
