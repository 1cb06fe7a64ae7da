"""Structured outputs and tool calls for Nemo (Tekken v3), enforced with llguidance.

The sampler's step S0 (docs/sampling.md) sets the logits of every token the grammar forbids to
-inf. This module turns the OpenAI request fields into llguidance grammars (lark text with
`%json {schema}` embeds), and `Constraint` follows one generated choice through its grammar.

Decisions (docs/sampling.md and docs/serving.md, "Structured outputs and tools"):

- `response_format` `{"type": "text"}` -> no grammar; `json_object` -> one JSON object;
  `json_schema` -> the schema, enforced whether or not `strict` is set (a missing schema means
  "an object"). Enum-only and other type-less schemas are enforced too. Property order follows the
  schema. Schemas using keywords llguidance cannot enforce (`not`, `if`, `uniqueItems`,
  `contains`, unknown formats, ...) are rejected with `GrammarError`, never silently ignored.
- JSON is written with `json.dumps`'s separators and no other whitespace: one space after each
  `,` and `:` outside strings, nothing anywhere else (`_CANONICAL`), for `response_format`
  documents and tool calls alike. One form, not a family of them: a gap that may hold a line
  break and an indent lets a model spend its tokens on whitespace (a random model took the
  newline plus 8 x two spaces at almost every gap, and 1/20 small objects ended within 60 tokens;
  issue 15 item 8), and `json.dumps` style is what mistral-common writes in Nemo's prompt.
  Termination comes from the grammar (each gap is forced) and from the schema's bounds on
  strings and numbers. The document starts at its first character and ends at its last (EOS is
  then the only choice).
- Tool calls use Nemo's v3 format exactly as mistral-common writes it when it re-encodes a call:
  the control token `[TOOL_CALLS]` (id 9) then `[{"name": "N", "arguments": {...}}, ...]`, each
  call optionally ending with `, "id": "<9 alphanumerics>"`, with the same separators in the
  wrapper and in the arguments. Each tool's `parameters` schema constrains its `arguments`
  (whether or not the tool is `strict`; a tool without parameters takes `{}`). The call wrapper is written in lark (not one big schema) so
  that each tool's `$ref`s resolve against its own `parameters`.
- Grammar failures are errors, never a normal-looking stop (nemo_ref/constraint.py): a grammar
  that compiles but cannot run is found when it is compiled; one that fails later raises.
- tool_choice: `auto` -> optional text, then optionally `[TOOL_CALLS]` and calls; `none` -> text
  only (`[TOOL_CALLS]` masked); `required` (alias `any`) -> `[TOOL_CALLS]` and at least one call,
  no text; `{"type": "function", "function": {"name": N}}` -> like required, calls to N only.
  `parallel_tool_calls=False` -> exactly one call. With no tools, `auto`/`none` need no grammar
  (None) and `required`/named are errors. Text is any valid UTF-8 without control tokens (so text
  modes also mask `[INST]` and friends).
- EOS (`</s>`) is allowed only where the grammar accepts; after a complete JSON document or call
  array it is the only allowed token (`Constraint.forced()` returns it).
- `grammar_for_request` combines a response format with tools: tool_choice `auto` with a JSON
  response format allows either the JSON document or the calls.

`Constraint` (nemo_ref/constraint.py) runs a grammar for one choice. A schema's JSON text may
have at most `MAX_SCHEMA_CHARS` characters. llguidance and mistral-common are imported lazily:
`import nemo_ref` needs neither.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from .chat_messages import (
    TOOL_CALL_ID_ALPHABET,
    TOOL_CALL_ID_LEN,
    TOOL_CALL_ID_PATTERN,
    ChatFormatError,
    base62_tool_call_id,
    tool_choice_mode,
    tool_functions,
)
from .constraint import BoundedLRU, Constraint, GrammarError, _first_line, _llg
from .sequence import tool_calls_id

__all__ = [
    "MAX_SCHEMA_CHARS",
    "BoundedLRU",
    "Constraint",
    "GrammarError",
    "grammar_for_request",
    "json_grammar",
    "make_tool_call_id",
    "parse_tool_calls",
    "tool_grammar",
]

# Every JSON document and tool call is written with json.dumps's separators (", " and ": ") and no
# other whitespace: mistral-common's serialisation of tool calls, and one form for all JSON.
_CANONICAL = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
MAX_SCHEMA_CHARS = 256 * 1024  # one schema's JSON text; bounds compile time and cache memory


# --------------------------------------------------------------------------------------------------
# grammars


_OPEN_KEYWORDS = ("additionalProperties", "patternProperties", "unevaluatedProperties", "allOf", "anyOf")
_OPEN_KEYWORDS += ("oneOf", "$ref", "if")
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SCHEMA_LISTS = ("anyOf", "oneOf", "prefixItems")


def _closed(schema: Any) -> Any:
    """The schema with `additionalProperties: false` on every object that lists `properties` and
    says nothing about other keys (and is not composed with allOf/anyOf/oneOf/$ref/if).

    JSON Schema lets such an object take any other key; a model that never stops writing keys
    never ends the document (a random model always does that). Described properties only, as
    xgrammar's strict mode and OpenAI's strict outputs do. A schema using allOf anywhere is left
    as it is: closing a branch would forbid the properties of the others.
    """
    if not isinstance(schema, Mapping):
        return schema
    out = dict(schema)
    if isinstance(out.get("properties"), Mapping) and not any(k in out for k in _OPEN_KEYWORDS):
        out["additionalProperties"] = False
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), Mapping):
            out[key] = {k: _closed(v) for k, v in out[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_closed(v) for v in out[key]]
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), Mapping):
            out[key] = _closed(out[key])
    return out


def _uses_all_of(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "allOf" in value or any(_uses_all_of(v) for v in value.values())
    if isinstance(value, list):
        return any(_uses_all_of(v) for v in value)
    return False


def _with_ws(schema: dict) -> dict:
    """The schema with our x-guidance options: json.dumps separators, unknown keywords rejected."""
    xg = dict(schema.get("x-guidance") or {})
    xg.pop("whitespace_pattern", None)
    xg.update(_CANONICAL, lenient=False)
    return {**schema, "x-guidance": xg}


def _json_embed(schema: Any, param: str, what: str) -> str:
    """`%json {...}` text for a schema, checked by llguidance's compiler."""
    if not isinstance(schema, Mapping):
        raise GrammarError(f"{what} must be a JSON object", param)
    try:
        if not _uses_all_of(schema):
            schema = _closed(schema)
        text = json.dumps(_with_ws(dict(schema)), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise GrammarError(f"{what} is not valid JSON: {_first_line(str(e))}", param) from None
    if len(text) > MAX_SCHEMA_CHARS:
        raise GrammarError(
            f"{what} is {len(text)} characters of JSON; at most {MAX_SCHEMA_CHARS} are accepted", param
        )
    embed = "%json " + text
    err = _llg().LLMatcher.validate_grammar("start: " + embed)
    if err:
        raise GrammarError(f"{what} cannot be enforced: {_first_line(err)}", param)
    return embed


def _response_schema(response_format: Any) -> dict | None:
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise GrammarError("response_format must be an object", "response_format")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        js = response_format.get("json_schema")
        if not isinstance(js, Mapping):
            raise GrammarError("json_schema must be an object", "response_format")
        schema = js.get("schema")
        if schema is None:
            return {"type": "object"}
        if not isinstance(schema, Mapping):
            raise GrammarError("json_schema.schema must be an object", "response_format")
        return dict(schema)
    raise GrammarError(
        f"response_format.type must be 'text', 'json_object' or 'json_schema', got {kind!r}",
        "response_format",
    )


def json_grammar(response_format: dict | None) -> str | None:
    """Grammar for an OpenAI `response_format`, or None for plain text.

    `{"type": "text"}` -> None; `{"type": "json_object"}` -> one JSON object;
    `{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": ...}}` ->
    a JSON document valid for the schema (enforced whether or not strict), with `json.dumps`'s
    separators (see module doc). Raises GrammarError(param="response_format").
    """
    schema = _response_schema(response_format)
    if schema is None:
        return None
    embed = _json_embed(schema, "response_format", "json_schema.schema")
    return f"start: {embed}\n"


def _tool_functions(tools: Any, tool_choice: Any) -> tuple[list[tuple[str, dict]], str, str | None]:
    """-> ([(name, parameters schema)], mode, forced name), checked by the rules' one home
    (chat_messages.tool_functions / tool_choice_mode), their errors as GrammarErrors."""
    try:
        functions = tool_functions(tools)
        mode, only = tool_choice_mode(tool_choice, [f.name for f in functions])
    except ChatFormatError as e:
        raise GrammarError(str(e), e.param) from None
    # OpenAI: no parameters = a function without arguments
    no_args = {"type": "object", "properties": {}, "additionalProperties": False}
    return [(f.name, no_args if f.parameters is None else f.parameters) for f in functions], mode, only


def _calls_rules(functions: list[tuple[str, dict]], parallel: bool) -> list[str]:
    """Lark rules for `calls`: the JSON array that follows `[TOOL_CALLS]`."""
    rules = ['calls: "[" call (", " call)* "]"' if parallel else 'calls: "[" call "]"']
    rules.append("call: " + " | ".join(f"call_{i}" for i in range(len(functions))))
    for i, (name, params) in enumerate(functions):
        embed = _json_embed(params, "tools", f"parameters of tool {name!r}")
        rules.append(
            f'call_{i}: "{{\\"name\\": \\"{name}\\", \\"arguments\\": " args_{i} '
            '(", \\"id\\": " CALL_ID)? "}"'
        )
        rules.append(f"args_{i}: {embed}")
    rules.append(f'CALL_ID: /"{TOOL_CALL_ID_PATTERN}"/')
    return rules


def grammar_for_request(
    response_format: dict | None = None,
    tools: list[dict] | None = None,
    tool_choice: Any = "auto",
    parallel_tool_calls: bool = True,
    space_before_calls: bool = False,
) -> str | None:
    """The one grammar for a chat request's response_format + tools + tool_choice, or None.

    ``space_before_calls``: allow one space between `[TOOL_CALLS]` and the array (SentencePiece
    tokenizers: mistral-common encodes a call as `[TOOL_CALLS]▁[{...`, the dummy prefix); Tekken
    writes none, and its grammar allows none.

    - no tools (or tool_choice none): `json_grammar(response_format)`;
    - tools and tool_choice required / any / named: the calls only (response_format is moot);
    - tools and auto: plain text -> text, then optionally calls; JSON -> the JSON document or
      the calls (never both).
    Raises GrammarError with param response_format / tools / tool_choice / parallel_tool_calls.
    """
    if not isinstance(parallel_tool_calls, bool):
        raise GrammarError("parallel_tool_calls must be a boolean", "parallel_tool_calls")
    functions, mode, only = _tool_functions(tools, tool_choice)
    schema = _response_schema(response_format)
    if not functions:  # (tool_choice_mode refused required / named without tools)
        return json_grammar(response_format)
    if only is not None:
        functions = [(n, p) for n, p in functions if n == only]

    lines: list[str] = []
    if schema is not None:
        content, content_rules = (
            "json_doc",
            ["json_doc: " + _json_embed(schema, "response_format", "json_schema.schema")],
        )
    else:
        content, content_rules = "TEXT", ["TEXT: /(.|\\n)+/"]
    # `[TOOL_CALLS]` by name (llguidance's `<NAME>`): id 9 in Tekken, 5 in SentencePiece v2+.
    calls = '<TOOL_CALLS> " "? calls' if space_before_calls else "<TOOL_CALLS> calls"
    if mode == "none":
        if schema is not None:
            return json_grammar(response_format)
        lines.append("start: TEXT?")
    elif mode == "required":
        lines.append(f"start: {calls}")
        content_rules = []
    elif schema is not None:  # auto with a JSON response format
        lines.append(f"start: {content} | {calls}")
    else:  # auto with text
        lines.append(f"start: TEXT? ({calls})?")
    if mode != "none":
        lines += _calls_rules(functions, parallel_tool_calls)
    lines += content_rules
    return "\n".join(lines) + "\n"


def tool_grammar(
    tools: list[dict] | None, tool_choice: Any = "auto", parallel_tool_calls: bool = True
) -> str | None:
    """Grammar for tools + tool_choice with plain-text content (see module doc), or None.

    None only when there are no tools and tool_choice is auto / none (nothing to enforce).
    With tools, every mode returns a grammar: `auto` still constrains what follows
    `[TOOL_CALLS]`, `none` masks it. Unknown tool name in a named tool_choice, or
    required/named without tools -> GrammarError(param="tool_choice").
    """
    return grammar_for_request(None, tools, tool_choice, parallel_tool_calls)


# --------------------------------------------------------------------------------------------------
# tool-call output


def make_tool_call_id(seed: Any = None, index: int = 0) -> str:
    """A 9-alphanumeric tool-call id (Nemo's format). Random when `seed` is None; otherwise a
    pure function of (seed, index), e.g. seed=(request seed, choice index)."""
    if seed is None:
        return "".join(secrets.choice(TOOL_CALL_ID_ALPHABET) for _ in range(TOOL_CALL_ID_LEN))
    digest = hashlib.sha256(
        b"nemo-ref-tool-call-id\x00" + repr(seed).encode() + b"\x00" + str(index).encode()
    ).digest()
    return base62_tool_call_id(digest)


def _calls_from_json(text: str) -> list[dict] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return None
    calls = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        args = item.get("arguments", {})
        if isinstance(args, str):  # tolerated in unconstrained output: arguments as a JSON string
            try:
                args = json.loads(args)
            except ValueError:
                return None
        if not isinstance(args, dict):
            return None
        calls.append({"name": item["name"], "arguments": args})
    return calls


def parse_tool_calls(
    tokenizer: Any, token_ids: Sequence[int], *, id_seed: Any = None
) -> tuple[str | None, list[dict]]:
    """Split generated ids into (content, tool_calls) in OpenAI's shape.

    Without `[TOOL_CALLS]`: (the decoded text, []). With it: content is the text before it (None
    if empty or only whitespace), and each call is
    `{"id": 9 alphanumerics, "type": "function", "function": {"name", "arguments": JSON string}}`.
    `arguments` is re-serialised with `json.dumps(..., ensure_ascii=False)` (the separators
    Nemo's prompt uses when the call is sent back). Ids the model may have written are ignored:
    ids come from `make_tool_call_id(id_seed, i)` (random when id_seed is None). Trailing EOS is
    ignored. If what follows `[TOOL_CALLS]` is not a valid call array (unconstrained output cut
    by max_tokens, say), nothing is lost: (all the decoded text, []).
    """
    ids = [int(t) for t in token_ids]
    while ids and ids[-1] == tokenizer.eos_id:
        ids.pop()
    marker = tool_calls_id(tokenizer)
    if marker is None or marker not in ids:
        return tokenizer.decode(ids), []
    first = ids.index(marker)
    content = tokenizer.decode(ids[:first])
    # Unconstrained output may repeat [TOOL_CALLS]: every segment must be a call array.
    segments, cur = [], []
    for t in ids[first + 1 :]:
        if t == marker:
            segments.append(cur)
            cur = []
        else:
            cur.append(t)
    segments.append(cur)
    calls: list[dict] = []
    for seg in segments:
        parsed = _calls_from_json(tokenizer.decode(seg))
        if parsed is None:
            return tokenizer.decode(ids), []
        calls += parsed
    out = [
        {
            "id": make_tool_call_id(id_seed, i),
            "type": "function",
            "function": {
                "name": c["name"],
                "arguments": json.dumps(c["arguments"], ensure_ascii=False),
            },
        }
        for i, c in enumerate(calls)
    ]
    return (content if content.strip() else None), out
