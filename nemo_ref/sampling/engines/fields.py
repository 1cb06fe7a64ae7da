"""How an engine treats one request field: used (validated, clamped or rejected), ignored, unsupported.

A `Field` is data (the docs' field table is rendered from it); `check_number` and `check_bias` apply it
the way the engine does, raising nemo_ref's ParamError with what the engine answers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..params import ParamError


@dataclass(frozen=True)
class Field:
    """What an engine does with one request field.

    treatment: "use" (validated, then sets `knob`), "ignore" (the engine does not read the field;
    the knob keeps its default), "unsupported" (a non-neutral value is an error: `answer`).
    Range: [lo, hi] with open ends as flagged; outside it the engine rejects (`violation="reject"`,
    answering `answer`) or clamps into the range (`violation="clamp"`)."""

    treatment: str
    knob: str | None = None
    kind: str = "float"  # "float" | "int" | "bias"
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    violation: str = "reject"
    answer: str = ""
    source: str = ""
    assumed: bool = False
    transform: Callable[[Any], dict[str, Any]] | None = None  # value -> knobs (TGI's presence)
    reject_values: tuple[Any, ...] = ()  # in range but refused (SGLang's top_k = 0)
    required: bool = False  # absent is an error (mistral-inference's temperature)
    false_bans: bool = False  # logit_bias value `false` means -inf (llama-server)


def _range_text(f: Field) -> str:
    lo = "(" if f.lo_open else "["
    hi = ")" if f.hi_open else "]"
    return f"{lo}{f.lo:g}, {f.hi:g}{hi}"


def check_number(name: str, value: Any, f: Field, engine: str) -> float | int:
    if f.kind == "int":
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ParamError(name, f"{engine}: {name} must be an integer; got {value!r}")
        x: float | int = int(value)
    else:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ParamError(name, f"{engine}: {name} must be a number; got {value!r}")
        x = float(value)
        if not math.isfinite(x):
            raise ParamError(name, f"{engine}: {name} must be finite; got {value!r} (JSON has no NaN)")
    if x in f.reject_values:
        raise ParamError(name, f"{engine} rejects {name}={value!r}: {f.answer}")
    below = x < f.lo or (f.lo_open and x == f.lo)
    above = x > f.hi or (f.hi_open and x == f.hi)
    if below or above:
        if f.violation == "clamp":
            return type(x)(f.lo if below else f.hi)
        answer = f.answer or f"{name} must be in {_range_text(f)}"
        raise ParamError(name, f"{engine} rejects {name}={value!r}: {answer}")
    return x


def check_bias(value: Any, f: Field, engine: str) -> dict[int, float]:
    if not isinstance(value, Mapping):
        raise ParamError("logit_bias", f"{engine}: logit_bias must be an object {{token id: bias}}")
    out: dict[int, float] = {}
    for key, bias in value.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise ParamError("logit_bias", f"{engine}: logit_bias key {key!r} is not a token id") from None
        if isinstance(key, bool) or token < 0:
            raise ParamError("logit_bias", f"{engine}: logit_bias key {key!r} is not a token id")
        if bias is False and f.false_bans:
            out[token] = -math.inf
            continue
        number = Field("use", kind="float", lo=f.lo, hi=f.hi, violation=f.violation, answer=f.answer)
        out[token] = out.get(token, 0.0) + float(check_number("logit_bias", bias, number, engine))
    return out


# ---- the three treatments, as the definitions write them -----------------------------------------


def use(
    knob: str, source: str, lo: float = -math.inf, hi: float = math.inf, answer: str = "", **kw: Any
) -> Field:
    """A field the engine reads into `knob`, valid in [lo, hi] (open ends and the rest: Field)."""
    return Field("use", knob, lo=lo, hi=hi, answer=answer, source=source, **kw)


def ignored(knob: str, source: str, answer: str, assumed: bool = False) -> Field:
    """A field the engine does not read on its OpenAI route: the knob keeps its default."""
    return Field("ignore", knob, answer=answer, source=source, assumed=assumed)


def unsupported(knob: str, source: str, answer: str, assumed: bool = False) -> Field:
    """A field the engine does not have: any value but its own default is an error (`answer`)."""
    return Field("unsupported", knob, answer=answer, source=source, assumed=assumed)


def in_range(knob: str, source: str, interval: str, answer: str, **kw: Any) -> Field:
    """A field the engine reads into `knob`, valid in `interval` as its own message writes it
    ("[0, 2]", "(0, 1]"); `answer` may say {knob} and {interval}, so the range is written once."""
    lo, hi = (int(x) if x.lstrip("-").isdigit() else float(x) for x in interval[1:-1].split(", "))
    text = answer.format(knob=knob, interval=interval)
    return use(knob, source, lo, hi, text, lo_open=interval[0] == "(", hi_open=interval[-1] == ")", **kw)
