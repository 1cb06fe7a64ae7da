"""The steps an engine's order may name, and what each needs: the sampler chain of docs/engines.md.

`STEPS` maps a step name ("logit_bias", "repetition", ..., "top_p") to its title, when it is on,
the setting text a trace shows, and the function of steps.py it runs with the engine's choices
(penalty scope, tie rule, top_p boundary). `check_consistent` holds a definition's descriptive
choices (the docs' table) to its step order (what runs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import steps
from .spec import EngineSpec


@dataclass
class Row:
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
    apply: Callable[[np.ndarray, Row], np.ndarray]


def _apply_repetition(z: np.ndarray, row: Row) -> np.ndarray:
    ids = row.scope(row.spec.repetition_scope.value)
    return steps.repetition_penalty(z, row.knobs["repetition_penalty"], ids, row.spec.repetition_sign.value)


def _apply_additive(z: np.ndarray, row: Row) -> np.ndarray:
    ids, counts = _counts(row.scope(row.spec.penalty_scope.value))
    return steps.additive_penalties(
        z, ids, counts, row.knobs["presence_penalty"], row.knobs["frequency_penalty"]
    )


def _apply_normalised_frequency(z: np.ndarray, row: Row) -> np.ndarray:
    history = row.scope(row.spec.penalty_scope.value)
    ids, counts = _counts(history)
    return steps.normalised_frequency(z, ids, counts, history.size, row.knobs["frequency_penalty"])


def _apply_temperature(z: np.ndarray, row: Row) -> np.ndarray:
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


def check_consistent(spec: EngineSpec) -> None:
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


__all__ = ["ARITHMETIC_STEPS", "STEPS", "Row", "Step", "check_consistent"]
