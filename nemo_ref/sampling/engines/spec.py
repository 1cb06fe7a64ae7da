"""An engine, as data: a set of named choices over the shared steps, each with its source.

`EngineSpec` holds the choices, each a `Cited` value (the value, the engine's source file that
decides it, and whether it is an assumption rather than something read in the source). The
definitions (definitions/, one module per engine family) fill them in; chain.py names the steps
an order may list; engine.py runs them (`Engine`).

The knobs are the request fields' meanings, named as OpenAI names the fields, plus `repeat_last_n`
(the penalty window of llama.cpp and Ollama). A request field maps to a knob through a `Field`
(fields.py): it may be used (validated, clamped or rejected as the engine does), silently ignored
(the engine does not read it on its OpenAI route), or unsupported (the engine answers an error).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..params import DISTRIBUTION_FIELDS
from .fields import Field

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
    """One engine: its request fields (fields.py) and its choices, each `Cited`; the values each
    choice may take are listed beside it. docs/engines.md renders one column per EngineSpec."""

    name: str
    version: str
    order: Cited  # tuple of step names (chain.STEPS)
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


__all__ = ["KNOBS", "NEUTRAL", "Cited", "EngineSpec"]
