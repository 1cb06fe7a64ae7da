"""SamplingParams: every sampling parameter, validated once, at construction (docs/sampling.md).

Validation is strict on purpose: a request with `top_p=1.5` or `temperature=NaN` is almost always a
client bug, and silently clamping it would hide that bug behind plausible-looking text. Every error
is a ParamError that names the parameter and its valid range, so the server can turn it into an
OpenAI-style 400 with `param` set.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_STOP = 4
MAX_TOP_LOGPROBS = 20
MAX_N = 128
# The largest token id a logit_bias key may name before the vocabulary is known (check_vocab then
# bounds it by the model's): int32, what every engine stores ids in. It also bounds the digits a
# key may have, so that int() never meets a 5,000-digit string (Python refuses 4,300+).
MAX_TOKEN_ID = 2**31 - 1
MAX_TOKEN_ID_DIGITS = len(str(MAX_TOKEN_ID))
LOGPROBS_MODES = ("raw", "processed")
# The request fields that shape the distribution (S0..S8's knobs): the one list that compare, the
# engines' emulations and the server's --semantics start from.
DISTRIBUTION_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
)
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: r"\d" would take "١" (an Arabic-Indic one)


class ParamError(ValueError):
    """An invalid sampling parameter. `param` is the parameter's name, as the API spells it."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param
        self.message = message


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(name: str, valid: str, value: Any) -> ParamError:
    return ParamError(name, f"{name} must be {valid}; got {_show(value)}")


def _is_int(value: Any) -> bool:
    # bool is a subclass of int in Python; the spec says booleans are not integers.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _number(name: str, value: Any, lo: float, hi: float, valid: str, lo_open: bool = False) -> float:
    """A finite float in [lo, hi] (or (lo, hi]); ints are accepted (JSON `1` means 1.0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(name, valid, value)
    try:
        x = float(value)
    except OverflowError:  # an int too large for a float
        raise _fail(name, valid, value) from None
    if not math.isfinite(x) or x < lo or x > hi or (lo_open and x == lo):
        raise _fail(name, valid, value)
    return x


def _integer(name: str, value: Any, lo: int, hi: int | None, valid: str) -> int:
    if not _is_int(value) or value < lo or (hi is not None and value > hi):
        raise _fail(name, valid, value)
    return int(value)


def _optional_int(name: str, value: Any, lo: int, hi: int | None, valid: str) -> int | None:
    return None if value is None else _integer(name, value, lo, hi, valid)


def _token_id(key: Any) -> int | None:
    """A logit_bias key as a token id, or None: an int, or a string of ASCII digits (JSON object
    keys are strings; surrounding whitespace is forgiven), in [0, MAX_TOKEN_ID]."""
    if _is_int(key):
        token = int(key)
    elif (
        isinstance(key, str)
        and len(digits := key.strip()) <= MAX_TOKEN_ID_DIGITS
        and _DIGITS.fullmatch(digits)
    ):
        token = int(digits)
    else:
        return None
    return token if 0 <= token <= MAX_TOKEN_ID else None


def _logit_bias(value: Any) -> dict[int, float]:
    """{token id: bias}; JSON objects only have string keys, so "42" is accepted as 42."""
    valid = (
        "a mapping of token ids (integers in [0, 2**31 - 1], or strings of their ASCII digits) "
        "to numbers in [-100, 100]"
    )
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail("logit_bias", valid, value)
    out: dict[int, float] = {}
    for key, bias in value.items():
        token = _token_id(key)
        if token is None:
            raise _fail("logit_bias", valid, {key: bias})
        if token in out:
            raise ParamError("logit_bias", f"logit_bias lists token {token} twice")
        out[token] = _number("logit_bias", bias, -100.0, 100.0, valid)
    return dict(sorted(out.items()))


def _stop(value: Any) -> tuple[str, ...]:
    valid = f"a non-empty string or a list of at most {MAX_STOP} non-empty strings"
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or len(items) > MAX_STOP:
        raise _fail("stop", valid, value)
    if not all(isinstance(s, str) and s for s in items):
        raise _fail("stop", valid, value)
    return tuple(items)


@dataclass(frozen=True)
class SamplingParams:
    """One request's sampling parameters. Defaults are the "off" values: plain softmax sampling."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    logprobs: bool = False
    top_logprobs: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int = 1
    logprobs_mode: str = "raw"

    def __post_init__(self) -> None:
        normalised = {
            "temperature": _number("temperature", self.temperature, 0, 2, "a number in [0, 2]"),
            "top_p": _number("top_p", self.top_p, 0, 1, "a number in [0, 1]"),
            "top_k": _integer("top_k", self.top_k, -1, None, "an integer >= 0 (or -1 for off)"),
            "min_p": _number("min_p", self.min_p, 0, 1, "a number in [0, 1]"),
            "repetition_penalty": _number(
                "repetition_penalty", self.repetition_penalty, 0, 2, "a number in (0, 2]", True
            ),
            "presence_penalty": _number(
                "presence_penalty", self.presence_penalty, -2, 2, "a number in [-2, 2]"
            ),
            "frequency_penalty": _number(
                "frequency_penalty", self.frequency_penalty, -2, 2, "a number in [-2, 2]"
            ),
            "logit_bias": _logit_bias(self.logit_bias),
            "top_logprobs": _integer(
                "top_logprobs",
                self.top_logprobs,
                0,
                MAX_TOP_LOGPROBS,
                f"an integer in [0, {MAX_TOP_LOGPROBS}]",
            ),
            "seed": _optional_int(
                "seed", self.seed, INT64_MIN, INT64_MAX, "null or an integer in [-2**63, 2**63 - 1]"
            ),
            "stop": _stop(self.stop),
            "max_tokens": _optional_int("max_tokens", self.max_tokens, 1, None, "an integer >= 1"),
            "max_completion_tokens": _optional_int(
                "max_completion_tokens", self.max_completion_tokens, 1, None, "an integer >= 1"
            ),
            "n": _integer("n", self.n, 1, MAX_N, f"an integer in [1, {MAX_N}]"),
        }
        if not isinstance(self.logprobs, bool):
            raise _fail("logprobs", "a boolean", self.logprobs)
        if normalised["top_logprobs"] > 0 and not self.logprobs:
            raise ParamError("top_logprobs", "top_logprobs must be 0 unless logprobs is true (it is false)")
        if self.logprobs_mode not in LOGPROBS_MODES:
            raise _fail("logprobs_mode", "'raw' or 'processed'", self.logprobs_mode)
        for name, value in normalised.items():
            object.__setattr__(self, name, value)  # frozen: normalise in place, once

    def __hash__(self) -> int:  # logit_bias is a dict, so the generated __hash__ would fail
        return hash(
            tuple(
                tuple(getattr(self, f.name).items()) if f.name == "logit_bias" else getattr(self, f.name)
                for f in fields(self)
            )
        )

    @property
    def max_new_tokens(self) -> int | None:
        """The token cap: max_completion_tokens wins over the legacy max_tokens when both are set."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def greedy(self) -> bool:
        """temperature 0: the rank-0 token, S5..S9 skipped."""
        return self.temperature == 0

    def check_vocab(self, vocab_size: int) -> None:
        """logit_bias ids must be real tokens; only the model knows the vocabulary size."""
        bad = [t for t in self.logit_bias if t >= vocab_size]
        if bad:
            raise ParamError(
                "logit_bias",
                f"logit_bias token ids must lie in [0, {vocab_size}); got {_show(bad[:5])}",
            )
