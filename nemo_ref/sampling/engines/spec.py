"""An engine is a set of named choices over the shared steps (steps.py); this module runs them.

`EngineSpec` holds the choices, each a `Cited` value (the value, the engine's source file that
decides it, and whether it is an assumption rather than something read in the source). `Engine`
turns a client's request into knobs (`resolve`), runs the engine's step order over one row of
logits (`trace`), and answers the questions a user asks of an engine: the final distribution, what
its logprobs report, and, where the source makes the draw deterministic, the token for a seed.

The knobs are the request fields' meanings, named as OpenAI names the fields, plus `repeat_last_n`
(the penalty window of llama.cpp and Ollama). A request field maps to a knob through a `Field`: it
may be used (validated, clamped or rejected as the engine does: fields.py), silently ignored (the engine does
not read it on its OpenAI route), or unsupported (the engine answers an error).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..params import DISTRIBUTION_FIELDS, ParamError
from ..reference import SamplingError
from . import steps
from .fields import Field, check_bias, check_number

KNOBS = (*DISTRIBUTION_FIELDS, "repeat_last_n")
NEUTRAL: dict[str, Any] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "logit_bias": {},
    "repeat_last_n": None,  # no window: the whole scope
}


@dataclass(frozen=True)
class Cited:
    """One choice of one engine, with the file (at the engine's version) it was read from."""

    value: Any
    source: str
    assumed: bool = False  # True: not read in the engine's source; an explicit assumption


@dataclass(frozen=True)
class EngineSpec:
    name: str
    version: str
    order: Cited  # tuple of step names (see STEPS)
    defaults: Cited  # {knob: value} where the engine differs from NEUTRAL
    fields: Mapping[str, Field]
    repetition_sign: Cited  # "positive_divides" | "ctrl_divides_all"
    repetition_scope: Cited  # "prompt+output" | "output" | "window"
    penalty_scope: Cited  # presence/frequency: "output" | "window" | "prompt+output"
    frequency_formula: Cited  # "openai" | "normalised"
    top_k_ties: Cited  # "keep" | "exactly_k" | "exactly_k_unspecified"
    top_p_boundary: Cited  # "lt": keep A(t) < p; "le": keep A(t) <= p
    zero_temperature: (
        Cited  # "greedy" | "reject" | "keep_first_max" | "greedy_via_top_k" | "argmax_if_not_positive"
    )
    min_temperature: Cited  # a positive floor small T is raised to, or None
    logprobs_mode: Cited  # "raw" | "tempered" | "processed"
    seeding: Cited  # text
    unknown_bias_ids: Cited = Cited("reject", "")  # logit_bias ids >= V: "reject" | "drop"
    float32: Cited = Cited(False, "")  # the engine's logits and arithmetic are float32
    draw: Callable[..., int] | None = None  # (final z, knobs, output_tokens, seed) -> token
    notes: tuple[str, ...] = ()

    @property
    def seed_reproducible(self) -> bool:
        return self.draw is not None


@dataclass
class Trace:
    """One row through one engine. steps[i] = (step name, setting text), every step of the engine's
    order, as run ("off" / "skipped" when it did nothing); stage_logits[i] = the logits after step i
    (float64 [V], -inf = removed); dropped_by[t] = index of the step that removed token t, or -1;
    final = the final distribution (float64 [V], sums to 1); knobs = the resolved request."""

    steps: list[tuple[str, str]]
    stage_logits: list[np.ndarray]
    final: np.ndarray
    dropped_by: np.ndarray
    knobs: dict[str, Any]
    input_logits: np.ndarray
    tempered_logits: np.ndarray | None = None  # after temperature, before the filters

    def stage_probabilities(self, i: int) -> np.ndarray:
        """softmax of the logits after step i (a dense pass: computed on demand, not stored)."""
        return steps.softmax(self.stage_logits[i])

    def dropped_at(self, token: int) -> str | None:
        """The name of the step that removed `token`, or None if it survived."""
        i = int(self.dropped_by[token])
        return None if i < 0 else self.steps[i][0]


# ---- the steps, by name --------------------------------------------------------------------------


@dataclass
class _Row:
    """What the steps of one call need besides the logits."""

    spec: EngineSpec
    knobs: dict[str, Any]
    prompt: np.ndarray
    output: np.ndarray

    def scope(self, which: str) -> np.ndarray:
        """The token ids a penalty sees: "output", "prompt+output", or "window" (the last
        repeat_last_n of prompt + output: llama-server accepts every prompt token into it)."""
        if which == "output":
            return self.output
        history = np.concatenate([self.prompt, self.output])
        n = self.knobs["repeat_last_n"]
        if which != "window" or n is None:
            return history
        return history[max(history.size - n, 0) :] if n > 0 else history[:0]


def _counts(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.unique(tokens, return_counts=True)


def _is_greedy(k: Mapping[str, Any], s: EngineSpec) -> bool:
    t = k["temperature"]
    rule = s.zero_temperature.value
    return t <= 0 if rule == "argmax_if_not_positive" else (t == 0 and rule == "greedy")


@dataclass(frozen=True)
class Step:
    title: str
    enabled: Callable[[Mapping[str, Any], EngineSpec], bool]
    setting: Callable[[Mapping[str, Any], EngineSpec], str]
    apply: Callable[[np.ndarray, _Row], np.ndarray]


def _apply_repetition(z: np.ndarray, row: _Row) -> np.ndarray:
    ids = row.scope(row.spec.repetition_scope.value)
    return steps.repetition_penalty(z, row.knobs["repetition_penalty"], ids, row.spec.repetition_sign.value)


def _apply_additive(z: np.ndarray, row: _Row) -> np.ndarray:
    ids, counts = _counts(row.scope(row.spec.penalty_scope.value))
    return steps.additive_penalties(
        z, ids, counts, row.knobs["presence_penalty"], row.knobs["frequency_penalty"]
    )


def _apply_normalised_frequency(z: np.ndarray, row: _Row) -> np.ndarray:
    history = row.scope(row.spec.penalty_scope.value)
    ids, counts = _counts(history)
    return steps.normalised_frequency(z, ids, counts, history.size, row.knobs["frequency_penalty"])


def _apply_temperature(z: np.ndarray, row: _Row) -> np.ndarray:
    t = row.knobs["temperature"]
    if t <= 0:  # only reached with zero_temperature == "keep_first_max" (llama.cpp's temp sampler)
        return steps.greedy(z)
    return steps.temperature(z, t)


def _window_text(k: Mapping[str, Any], s: EngineSpec, which: str) -> str:
    if which == "window":
        return f"last {k['repeat_last_n']} of prompt+output"
    return which


ARITHMETIC_STEPS = frozenset(
    {"logit_bias", "repetition", "presence_frequency", "normalised_frequency", "temperature"}
)

STEPS: dict[str, Step] = {
    "logit_bias": Step(
        "logit_bias",
        lambda k, s: bool(k["logit_bias"]),
        lambda k, s: f"{len(k['logit_bias'])} token(s)",
        lambda z, row: steps.logit_bias(z, row.knobs["logit_bias"]),
    ),
    "repetition": Step(
        "repetition penalty",
        lambda k, s: k["repetition_penalty"] != 1 and k["repeat_last_n"] != 0,
        lambda k, s: f"{k['repetition_penalty']:g} over {_window_text(k, s, s.repetition_scope.value)}",
        _apply_repetition,
    ),
    "presence_frequency": Step(
        "presence/frequency",
        lambda k, s: (k["presence_penalty"] != 0 or k["frequency_penalty"] != 0) and k["repeat_last_n"] != 0,
        lambda k, s: (
            f"pres {k['presence_penalty']:g}, freq {k['frequency_penalty']:g} over "
            f"{_window_text(k, s, s.penalty_scope.value)}"
        ),
        _apply_additive,
    ),
    "normalised_frequency": Step(
        "frequency (count / length)",
        lambda k, s: k["frequency_penalty"] != 0,
        lambda k, s: f"freq {k['frequency_penalty']:g} * count / length over {s.penalty_scope.value}",
        _apply_normalised_frequency,
    ),
    "greedy": Step(
        "greedy",
        _is_greedy,
        lambda k, s: f"T={k['temperature']:g}: argmax, the rest skipped",
        lambda z, row: steps.greedy(z),
    ),
    "temperature": Step(
        "temperature",
        lambda k, s: True,
        lambda k, s: (
            f"T={k['temperature']:g}" + (": keep the first maximum" if k["temperature"] <= 0 else "")
        ),
        _apply_temperature,
    ),
    "min_p": Step(
        "min_p",
        lambda k, s: k["min_p"] > 0,
        lambda k, s: f"{k['min_p']:g}",
        lambda z, row: steps.min_p(z, row.knobs["min_p"]),
    ),
    "top_k": Step(
        "top_k",
        lambda k, s: k["top_k"] > 0,
        lambda k, s: f"{k['top_k']}",
        lambda z, row: steps.top_k(
            z, row.knobs["top_k"], "keep" if row.spec.top_k_ties.value == "keep" else "exactly_k"
        ),
    ),
    "top_p": Step(
        "top_p",
        lambda k, s: k["top_p"] < 1,
        lambda k, s: f"{k['top_p']:g}",
        lambda z, row: steps.top_p(z, row.knobs["top_p"], row.spec.top_p_boundary.value),
    ),
}


# ---- the engine ----------------------------------------------------------------------------------


def _as_logits(logits: Any) -> np.ndarray:
    if hasattr(logits, "detach"):  # a torch tensor, without importing torch
        logits = logits.detach().cpu().double().numpy()
    z = np.array(logits, dtype=np.float64)  # a copy: the steps never touch the caller's array
    if z.ndim != 1 or z.size == 0:
        raise SamplingError(f"logits must be one non-empty row (1-D); got shape {z.shape}")
    if np.isnan(z).any() or (z == math.inf).any():
        raise SamplingError("logits contain NaN or +inf")
    return z


def _as_ids(tokens: Any, vocab: int, what: str) -> np.ndarray:
    if hasattr(tokens, "detach"):
        tokens = tokens.detach().cpu().numpy()
    ids = np.asarray(list(tokens) if not isinstance(tokens, np.ndarray) else tokens, dtype=np.int64).reshape(
        -1
    )
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise SamplingError(f"{what} contain ids outside [0, {vocab})")
    return ids


def _check_consistent(spec: EngineSpec) -> None:
    """The descriptive choices (the docs' table) and the step order (what runs) must agree."""
    order = spec.order.value
    unknown = [s for s in order if s not in STEPS]
    formula = {"openai": "presence_frequency", "normalised": "normalised_frequency"}
    rules = {
        "unknown steps": not unknown,
        "frequency_formula": all(
            (f == spec.frequency_formula.value) == (st in order) for f, st in formula.items()
        ),
        "repetition_scope": (spec.repetition_scope.value == "none") == ("repetition" not in order),
        "top_k_ties": (spec.top_k_ties.value == "none") == ("top_k" not in order),
        "zero_temperature": (spec.zero_temperature.value in ("greedy", "argmax_if_not_positive"))
        == ("greedy" in order),
    }
    broken = [name for name, ok in rules.items() if not ok]
    if broken:
        raise ValueError(f"engine {spec.name}: its choices contradict its step order: {broken} {unknown}")


class Engine:
    """One engine's sampling semantics (the public face of an EngineSpec)."""

    def __init__(self, spec: EngineSpec):
        _check_consistent(spec)
        self.spec = spec
        self.name = spec.name
        self.version = spec.version
        self.logprobs_mode: str = spec.logprobs_mode.value
        self.seed_reproducible = spec.seed_reproducible
        knobs = dict(NEUTRAL)
        knobs.update(spec.defaults.value)
        self._defaults = knobs
        # Per request field: the value in effect when a client omits it (a renamed field shows its
        # knob's default; TGI's presence_penalty, which rewrites another knob, shows its own off value).
        self.defaults: dict[str, Any] = {
            name: NEUTRAL[name] if f.transform is not None else knobs[f.knob]
            for name, f in spec.fields.items()
            if f.knob is not None
        }

    def __repr__(self) -> str:
        return f"Engine({self.name!r}, {self.version!r})"

    # -- the request -------------------------------------------------------------------------------

    def resolve(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The knobs this engine runs with for `request`: defaults, the fields it reads (validated,
        clamped or rejected as it does), its own rules (clamps, greedy rewrites). Fields outside
        `spec.fields` (seed, max_tokens, ...) are not sampling knobs and are left alone."""
        return self._resolve(request)[0]

    def request_notes(self, request: Mapping[str, Any]) -> list[str]:
        """What this engine silently does to `request`: fields ignored, values clamped, rewrites
        (e.g. TGI's presence_penalty -> repetition_penalty, vLLM's temperature floor)."""
        return self._resolve(request)[1]

    def _resolve(self, request: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        knobs = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self._defaults.items()}
        notes: list[str] = []
        for name, f in self.spec.fields.items():
            if f.required and request.get(name) is None:
                raise ParamError(name, f"{self.name}: {f.answer}")
        for name, value in request.items():
            f = self.spec.fields.get(name)
            if f is None or value is None:  # null asks for the default on every engine here
                continue
            if f.treatment == "ignore":
                notes.append(f"{name}: {f.answer}")
                continue
            if f.treatment == "unsupported":
                if f.knob is not None and value == self._defaults[f.knob]:
                    continue  # the value the engine uses anyway: what omitting the field means
                raise ParamError(name, f"{self.name}: {f.answer}")
            checked = (
                check_bias(value, f, self.name)
                if f.kind == "bias"
                else check_number(name, value, f, self.name)
            )
            if f.kind != "bias" and checked != value:
                notes.append(f"{name}: {value!r} clamped to {checked!r}")
            if f.transform is not None:
                rewritten = f.transform(checked)
                knobs.update(rewritten)
                notes.append(
                    f"{name}: {value!r} becomes " + ", ".join(f"{k} {v!r}" for k, v in rewritten.items())
                )
            else:
                knobs[f.knob] = checked
        return self._engine_rules(knobs, notes), notes

    def _engine_rules(self, knobs: dict[str, Any], notes: list[str]) -> dict[str, Any]:
        s = self.spec
        if knobs["top_k"] < 0:
            knobs["top_k"] = 0  # -1 (and, where accepted, other negatives) means off
        floor = s.min_temperature.value
        if floor is not None and 0 < knobs["temperature"] < floor:
            notes.append(f"temperature: {knobs['temperature']!r} raised to {floor!r}")
            knobs["temperature"] = floor
        if s.zero_temperature.value == "greedy_via_top_k" and knobs["temperature"] < 1e-6:
            notes.append(f"temperature: {knobs['temperature']!r} becomes temperature 1.0, top_k 1")
            knobs["temperature"], knobs["top_k"] = 1.0, 1
        return knobs

    def ignored_fields(self, request: Mapping[str, Any]) -> list[str]:
        """Fields of `request` this engine silently does not read (a common surprise)."""
        return [
            n
            for n, v in request.items()
            if v is not None and n in self.spec.fields and self.spec.fields[n].treatment == "ignore"
        ]

    # -- one row -----------------------------------------------------------------------------------

    def _prepare(
        self, logits: Any, request: Mapping[str, Any], prompt_tokens: Any, output_tokens: Any
    ) -> tuple[np.ndarray, _Row]:
        knobs = self.resolve(request)
        z = _as_logits(logits)
        if self.spec.float32.value:
            z = z.astype(np.float32).astype(np.float64)  # the engine holds float32 logits
        vocab = z.size
        bad = [t for t in knobs["logit_bias"] if t >= vocab]
        if bad and self.spec.unknown_bias_ids.value == "drop":
            knobs["logit_bias"] = {t: b for t, b in knobs["logit_bias"].items() if t < vocab}
        elif bad:
            raise ParamError(
                "logit_bias", f"{self.name}: logit_bias token ids must lie in [0, {vocab}); got {bad[:5]}"
            )
        row = _Row(
            self.spec,
            knobs,
            _as_ids(prompt_tokens, vocab, "prompt tokens"),
            _as_ids(output_tokens, vocab, "output tokens"),
        )
        return z, row

    def _run(
        self, z: np.ndarray, row: _Row, keep_stages: bool
    ) -> tuple[np.ndarray, list[tuple[str, str]], list[np.ndarray], np.ndarray | None]:
        names: list[tuple[str, str]] = []
        stages: list[np.ndarray] = []
        tempered = None
        halted = False
        f32 = self.spec.float32.value
        for name in self.spec.order.value:
            step = STEPS[name]
            if halted:
                names.append((name, "skipped (greedy)"))
            elif not step.enabled(row.knobs, self.spec):
                names.append((name, "off"))
            else:
                names.append((name, step.setting(row.knobs, self.spec)))
                z = step.apply(z, row)
                if f32 and name in ARITHMETIC_STEPS:  # the filters only remove, never compute
                    z = z.astype(np.float32).astype(np.float64)
                if name == "logit_bias" and not np.isfinite(z).any():  # only a bias can ban them all
                    raise SamplingError(
                        f"{self.name}: logit_bias leaves every token at -inf; nothing to sample"
                    )
                if name == "greedy":
                    halted = True
                if name == "temperature":
                    tempered = z
            if keep_stages:
                stages.append(z)
        return z, names, stages, tempered

    def trace(
        self,
        logits: Any,
        request: Mapping[str, Any],
        prompt_tokens: Sequence[int] = (),
        output_tokens: Sequence[int] = (),
    ) -> Trace:
        z0, row = self._prepare(logits, request, prompt_tokens, output_tokens)
        z, names, stages, tempered = self._run(z0, row, keep_stages=True)
        dropped = np.full(z0.size, -1, dtype=np.int64)
        alive = np.isfinite(z0)
        for i, stage in enumerate(stages):
            now = np.isfinite(stage)
            dropped[alive & ~now] = i
            alive = now
        return Trace(names, stages, steps.softmax(z), dropped, row.knobs, z0, tempered)

    def probabilities(
        self,
        logits: Any,
        request: Mapping[str, Any],
        prompt_tokens: Sequence[int] = (),
        output_tokens: Sequence[int] = (),
    ) -> np.ndarray:
        """The final next-token distribution over the whole vocabulary (float64 [V], sums to 1)."""
        z0, row = self._prepare(logits, request, prompt_tokens, output_tokens)
        return steps.softmax(self._run(z0, row, keep_stages=False)[0])

    def distribution(
        self,
        logits: Any,
        request: Mapping[str, Any],
        prompt_tokens: Sequence[int] = (),
        output_tokens: Sequence[int] = (),
    ) -> list[float]:
        return self.probabilities(logits, request, prompt_tokens, output_tokens).tolist()

    def logprobs(
        self,
        logits: Any,
        request: Mapping[str, Any],
        prompt_tokens: Sequence[int] = (),
        output_tokens: Sequence[int] = (),
    ) -> np.ndarray:
        """What this engine's API reports as logprobs (float64 [V]), per `logprobs_mode`: "raw" is
        log_softmax of the model's logits; "tempered" after penalties, bias and temperature, before
        the filters; "processed" of the final distribution (-inf for dropped tokens)."""
        z0, row = self._prepare(logits, request, prompt_tokens, output_tokens)
        if self.logprobs_mode == "raw":
            return steps.log_softmax(z0)
        z, _, _, tempered = self._run(z0, row, keep_stages=False)
        if self.logprobs_mode == "tempered":
            return steps.log_softmax(tempered if tempered is not None else z)
        with np.errstate(divide="ignore"):
            return steps.log_softmax(z)

    def sample(
        self,
        logits: Any,
        request: Mapping[str, Any],
        prompt_tokens: Sequence[int],
        output_tokens: Sequence[int],
        seed: int,
    ) -> int:
        """The token this engine draws for `seed` at this step (the step index is
        len(output_tokens)), where its source makes the draw a function of the seed."""
        if self.spec.draw is None:
            raise NotImplementedError(f"{self.name}: {self.spec.seeding.value}")
        z0, row = self._prepare(logits, request, prompt_tokens, output_tokens)
        z = self._run(z0, row, keep_stages=False)[0]
        return self.spec.draw(z, row.knobs, row.output, seed)


__all__ = ["KNOBS", "NEUTRAL", "STEPS", "Cited", "Engine", "EngineSpec", "Field", "Step", "Trace"]
