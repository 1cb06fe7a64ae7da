"""Request models of the OpenAI-compatible API, and the JSON shapes of its responses.

Requests are validated by pydantic in strict JSON mode: a number where a number is expected (an int
is accepted for a float), never a string of one; booleans are not integers; NaN and infinity are
rejected. The sampling fields' ranges (docs/sampling.md's table, the OpenAI ranges) have one home,
``SamplingParams``: the server builds one from the request, and its ``ParamError`` becomes the 400
naming the field. What this module adds are the server's caps on sizes (limits.py).

Unknown fields are rejected (OpenAI's own "Unrecognized request argument"), except these harmless
ones, accepted and ignored: ``user``, ``safety_identifier``, ``prompt_cache_key``, ``metadata``,
``store`` (false only: nothing is stored), ``service_tier`` ("auto" / "default" only),
``stream_options.include_obfuscation`` (no obfuscation is ever added).

Known parameters that nemo_ref does not implement are rejected with a 400 naming them, never
silently ignored: ``audio``, ``modalities`` other than ["text"], ``functions`` / ``function_call``
(the deprecated form of tools), ``prediction``, ``reasoning_effort``, ``verbosity``,
``web_search_options``, ``moderation``, ``prompt_cache_options``, ``prompt_cache_retention``; on
/v1/completions also ``echo`` (true), ``best_of`` (> 1), ``suffix``, and batches of prompts.

Fields sent by clients through ``extra_body`` arrive at the top level: ``top_k``, ``min_p``,
``repetition_penalty``, ``logprobs_mode`` ("raw" | "processed") and ``structured_outputs`` (false
turns grammar enforcement off for the request).

Responses are plain dicts, so each one reads like the JSON it produces: their parts (the envelope,
logprobs, usage) are built by the functions at the end of this file, the bodies by responses.py and
streaming.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ..sampling.params import DISTRIBUTION_FIELDS, ParamError, SamplingParams
from .limits import MAX_DETOKENIZE_IDS, MAX_LOGIT_BIAS, MAX_STOP_CHARS, MAX_TOOLS

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "DetokenizeRequest",
    "Envelope",
    "TokenizeRequest",
    "ValidationError",
    "error_body",
    "first_error",
    "legacy_logprobs",
    "logprob_entry",
    "usage",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True)


def _unsupported(*allowed: Any):
    """A known OpenAI parameter nemo_ref does not implement: only its "off" values pass."""

    def check(value: Any) -> Any:
        if value not in allowed:
            shown = " or ".join("null" if a is None else repr(a) for a in allowed)
            raise ValueError(f"not supported by nemo_ref (only {shown} is accepted)")
        return value

    return Annotated[Any, AfterValidator(check), Field(default=None)]


# ---- field types --------------------------------------------------------------------------------


def _check_stop(value: Any) -> Any:
    """The server's cap on a stop string's length (what a stop may be: SamplingParams)."""
    items = value if isinstance(value, list) else [value]
    if any(isinstance(s, str) and len(s) > MAX_STOP_CHARS for s in items):
        raise ValueError(f"each stop string may have at most {MAX_STOP_CHARS} characters")
    return value


def _check_logit_bias(value: Any) -> Any:
    """The server's cap on entries, and keys as JSON writes a token id: its digits, nothing
    around them (what a key and a bias may be: SamplingParams, which forgives spaces)."""
    if isinstance(value, dict):
        if len(value) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} entries are accepted (got {len(value)})")
        for key in value:
            if key != key.strip():
                raise ValueError(f"keys must be token ids written in ASCII digits; got {key[:20]!r}")
    return value


Stop = Annotated[str | list[str], BeforeValidator(_check_stop)]
LogitBias = Annotated[dict[str, float], AfterValidator(_check_logit_bias)]


class StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None  # accepted; nemo_ref never adds obfuscation


class FunctionDef(_Strict):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # the schema is enforced whatever this says


class ToolDef(_Strict):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"] = "function"
    function: NamedFunction


class TextFormat(_Strict):
    type: Literal["text"]


class JsonObjectFormat(_Strict):
    type: Literal["json_object"]


class JsonSchemaSpec(_Strict):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None  # enforced whether or not strict (docs/serving.md)


class JsonSchemaFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


# ---- requests -----------------------------------------------------------------------------------


class _Common(_Strict):
    """What chat and text completions share: the model, streaming, and the sampling knobs (docs/sampling.md)."""

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Sampling: typed here, ranges checked by SamplingParams (sampling_params below).
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: LogitBias | None = None
    seed: int | None = None
    stop: Stop | None = None
    max_tokens: int | None = None
    logprobs_mode: Literal["raw", "processed"] | None = None

    # Harmless OpenAI fields: accepted, ignored.
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    metadata: dict[str, str] | None = None
    store: _unsupported(None, False)
    service_tier: _unsupported(None, "auto", "default")

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling_params(self, *, logprobs: bool, top_logprobs: int, max_completion_tokens: int | None):
        """The request's SamplingParams: its ranges are checked there (ParamError names the field)."""
        given = {
            name: getattr(self, name)
            for name in (*DISTRIBUTION_FIELDS, "seed", "max_tokens", "logprobs_mode")
            if getattr(self, name) is not None
        }
        if self.stop is not None:
            given["stop"] = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        return SamplingParams(
            **given,
            n=self.n,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            max_completion_tokens=max_completion_tokens,
        )


class ChatCompletionRequest(_Common):
    """POST /v1/chat/completions."""

    # Checked by the tokenizer (roles, content parts, tool calls), which names the bad message.
    messages: Annotated[list[dict[str, Any]], Field(min_length=1)]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: ResponseFormat | None = None
    structured_outputs: bool | None = None
    tools: Annotated[list[ToolDef], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required", "any"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None

    # Known, not implemented: rejected unless off.
    audio: _unsupported(None)
    modalities: _unsupported(None, ["text"])
    functions: _unsupported(None)
    function_call: _unsupported(None)
    prediction: _unsupported(None)
    reasoning_effort: _unsupported(None)
    verbosity: _unsupported(None)
    web_search_options: _unsupported(None)
    moderation: _unsupported(None)
    prompt_cache_options: _unsupported(None)
    prompt_cache_retention: _unsupported(None)

    def params(self) -> SamplingParams:
        return self.sampling_params(
            logprobs=bool(self.logprobs),
            top_logprobs=self.top_logprobs or 0,
            max_completion_tokens=self.max_completion_tokens,
        )

    def tools_json(self) -> list[dict] | None:
        return [t.model_dump(exclude_none=True) for t in self.tools] if self.tools else None

    def tool_choice_json(self) -> str | dict:
        if self.tool_choice is None:
            return "auto"
        if isinstance(self.tool_choice, str):
            return self.tool_choice
        return self.tool_choice.model_dump()

    def response_format_json(self) -> dict | None:
        if self.response_format is None:
            return None
        return self.response_format.model_dump(by_alias=True, exclude_none=True)


def _single_prompt(value: Any) -> Any:
    if isinstance(value, list) and value and all(isinstance(p, (str, list)) for p in value):
        raise ValueError("batches of prompts are not supported: send one prompt per request")
    return value


class CompletionRequest(_Common):
    """POST /v1/completions: one prompt, as text (BOS is added) or as token ids (used as given)."""

    prompt: Annotated[str | Annotated[list[int], Field(min_length=1)], BeforeValidator(_single_prompt)]
    # The legacy API's logprobs is the number of top alternatives (0 = the sampled token only).
    logprobs: int | None = None
    echo: _unsupported(None, False)
    best_of: _unsupported(None, 1)
    suffix: _unsupported(None)

    def params(self) -> SamplingParams:
        try:
            return self.sampling_params(
                logprobs=self.logprobs is not None,
                top_logprobs=self.logprobs or 0,
                max_completion_tokens=None,
            )
        except ParamError as e:  # the legacy logprobs is the core's top_logprobs, renamed
            if e.param != "top_logprobs":
                raise
            raise ParamError("logprobs", e.message.replace("top_logprobs", "logprobs")) from None


class TokenizeRequest(_Strict):
    """POST /tokenize."""

    prompt: str
    add_special_tokens: bool = True  # BOS
    model: str | None = None


class DetokenizeRequest(_Strict):
    """POST /detokenize."""

    tokens: Annotated[list[int], Field(max_length=MAX_DETOKENIZE_IDS)]
    model: str | None = None


# ---- errors -------------------------------------------------------------------------------------


def error_body(message: str, param: str | None, type_: str = "invalid_request_error", code=None) -> dict:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _where(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "int", "list[str]", "list[int]", "dict[str,any]") or "[" in str(part):
            continue  # pydantic's union-member tags
        else:
            out += ("." if out else "") + str(part)
    return out


def first_error(exc: ValidationError) -> tuple[str, str | None]:
    """(message, param) for a pydantic ValidationError: the first bad field, all its complaints.

    ``param`` is the top-level request field (the full path is in the message).
    """
    errors = exc.errors(include_url=False)
    e = errors[0]
    if e["type"] == "json_invalid":
        return f"the request body is not valid JSON: {e['msg']}", "body"
    if not e["loc"]:
        return f"the request body must be a JSON object: {e['msg']}", "body"
    param = str(e["loc"][0])
    if e["type"] == "extra_forbidden":
        return f"Unrecognized request argument supplied: {_where(e['loc'])}", param
    msgs = []
    for err in errors:
        if err["loc"] and str(err["loc"][0]) == param:
            text = f"{_where(err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            if text not in msgs:
                msgs.append(text)
    shown = repr(e.get("input"))
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return "; ".join(msgs[:3]) + f" (got {shown})", param


# ---- responses ----------------------------------------------------------------------------------


@dataclass
class Envelope:
    """The fields every response body and stream chunk of one request starts with."""

    id: str
    created: int
    model: str
    system_fingerprint: str  # "nemo-ref-random-weights" when the weights are random
    seed: int  # nemo_ref's extension: the seed used, so that any completion can be reproduced

    def head(self, object_: str) -> dict:
        return {
            "id": self.id,
            "object": object_,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.system_fingerprint,
            "seed": self.seed,
        }


LOGPROB_FLOOR = -9999.0  # JSON has no -Infinity; a token the grammar forbade reports this


def _finite(x: float) -> float:
    return x if math.isfinite(x) else LOGPROB_FLOOR


def logprob_entry(lp: Any) -> dict:
    """One ``logprobs.content[i]`` entry from a sequence.TokenLogprob (raw ``bytes`` included)."""
    return {
        "token": lp.token,
        "logprob": _finite(lp.logprob),
        "bytes": lp.bytes,
        "top_logprobs": [
            {"token": t.token, "logprob": _finite(t.logprob), "bytes": t.bytes} for t in lp.top_logprobs
        ],
    }


def legacy_logprobs(entries: list[Any], text_offset: int = 0) -> dict:
    """/v1/completions' logprobs object (tokens, token_logprobs, top_logprobs, text_offset)."""
    offsets, pos = [], text_offset
    for lp in entries:
        offsets.append(pos)
        pos += len(lp.token)
    return {
        "tokens": [lp.token for lp in entries],
        "token_logprobs": [_finite(lp.logprob) for lp in entries],
        "top_logprobs": [{t.token: _finite(t.logprob) for t in lp.top_logprobs} for lp in entries],
        "text_offset": offsets,
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
