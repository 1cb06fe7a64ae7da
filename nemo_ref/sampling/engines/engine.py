"""An engine at work: `Engine` turns a client's request into knobs and runs its step order.

`Engine` (the public face of an `EngineSpec`, spec.py) turns a client's request into knobs
(`resolve`), runs the engine's step order (chain.py) over one row of logits (`trace`), and answers
the questions a user asks of an engine: the final distribution, what its logprobs report, and,
where the source makes the draw deterministic, the token for a seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..params import ParamError
from ..reference import SamplingError
from . import steps
from .chain import ARITHMETIC_STEPS, STEPS, Row, check_consistent
from .fields import check_bias, check_number
from .spec import NEUTRAL, EngineSpec

Tokens = Sequence[int]  # token ids: a list, a numpy array or a torch tensor


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


class Engine:
    """One engine's sampling semantics (the public face of an EngineSpec)."""

    def __init__(self, spec: EngineSpec):
        check_consistent(spec)
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
    ) -> tuple[np.ndarray, Row]:
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
        row = Row(
            self.spec,
            knobs,
            _as_ids(prompt_tokens, vocab, "prompt tokens"),
            _as_ids(output_tokens, vocab, "output tokens"),
        )
        return z, row

    def _run(
        self, z: np.ndarray, row: Row, keep_stages: bool
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
        self, logits: Any, request: Mapping[str, Any], prompt_tokens: Tokens = (), output_tokens: Tokens = ()
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
        self, logits: Any, request: Mapping[str, Any], prompt_tokens: Tokens = (), output_tokens: Tokens = ()
    ) -> np.ndarray:
        """The final next-token distribution over the whole vocabulary (float64 [V], sums to 1)."""
        z0, row = self._prepare(logits, request, prompt_tokens, output_tokens)
        return steps.softmax(self._run(z0, row, keep_stages=False)[0])

    def distribution(
        self, logits: Any, request: Mapping[str, Any], prompt_tokens: Tokens = (), output_tokens: Tokens = ()
    ) -> list[float]:
        return self.probabilities(logits, request, prompt_tokens, output_tokens).tolist()

    def logprobs(
        self, logits: Any, request: Mapping[str, Any], prompt_tokens: Tokens = (), output_tokens: Tokens = ()
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
        self, logits: Any, request: Mapping[str, Any], prompt_tokens: Tokens, output_tokens: Tokens, seed: int
    ) -> int:
        """The token this engine draws for `seed` at this step (the step index is
        len(output_tokens)), where its source makes the draw a function of the seed."""
        if self.spec.draw is None:
            raise NotImplementedError(f"{self.name}: {self.spec.seeding.value}")
        z0, row = self._prepare(logits, request, prompt_tokens, output_tokens)
        z = self._run(z0, row, keep_stages=False)[0]
        return self.spec.draw(z, row.knobs, row.output, seed)


__all__ = ["Engine", "Trace"]
