"""Structured outputs and tool calls for Nemo (Tekken v3), enforced with llguidance.

The sampler's step S0 (docs/sampling.md) sets the logits of every token the grammar forbids to
-inf. This module turns the OpenAI request fields into llguidance grammars (lark text with
`%json {schema}` embeds), and `Constraint` follows one generated choice through its grammar.

Decisions (SAMPLING-SPEC "Structured outputs and tools"):

- `response_format` `{"type": "text"}` -> no grammar; `json_object` -> one JSON object;
  `json_schema` -> the schema, enforced whether or not `strict` is set (a missing schema means
  "an object"). Enum-only and other type-less schemas are enforced too. Property order follows the
  schema. Schemas using keywords llguidance cannot enforce (`not`, `if`, `uniqueItems`,
  `contains`, unknown formats, ...) are rejected with `GrammarError`, never silently ignored.
- Whitespace between JSON tokens is flexible but bounded: each gap is at most one line break
  followed by at most 16 spaces or tabs (`WS_MAX_INDENT`), enough for pretty-printing, too little
  for a model to loop on whitespace until max_tokens. The document starts at its first
  character (no leading whitespace) and ends at its last (EOS is then the only choice).
- Tool calls use Nemo's v3 format: the control token `[TOOL_CALLS]` (id 9) then a JSON array of
  `{"name": ..., "arguments": {...}}`, optionally followed by `"id": "<9 alphanumerics>"` (the
  order in which Nemo's prompt re-encodes calls). Each tool's `parameters` schema constrains its
  `arguments` (whether or not the tool is `strict`; a tool without parameters takes `{}`).
  The call wrapper is written in lark (not one big schema) so that each tool's `$ref`s resolve
  against its own `parameters`.
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

Grammars are compiled once per distinct text (an LRU of pristine matchers, deep-copied per
Constraint) and the llguidance tokenizer is built once per Tokenizer (0.5 s). llguidance and
mistral-common are imported lazily: `import nemo_ref` needs neither.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "WS_MAX_INDENT",
    "Constraint",
    "GrammarError",
    "grammar_for_request",
    "json_grammar",
    "make_tool_call_id",
    "parse_tool_calls",
    "tool_grammar",
]

TOOL_CALLS_ID = 9  # `[TOOL_CALLS]` in Tekken v3
WS_MAX_INDENT = 16
# One gap of whitespace between JSON tokens: at most one line break, then <= 16 spaces/tabs.
_JSON_WS = rf"(\r?\n)?[ \t]{{0,{WS_MAX_INDENT}}}"
# The same inside lark (a lexeme may not be empty, so it is used as `WS?`).
_LARK_WS = rf"/[ \t]{{1,{WS_MAX_INDENT}}}|\r?\n[ \t]{{0,{WS_MAX_INDENT}}}/"
_FUNCTION_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


class GrammarError(ValueError):
    """A response_format / tools / tool_choice that cannot be turned into a grammar.

    `param` names the request field to blame ("response_format", "tools", "tool_choice",
    "parallel_tool_calls"); the server answers HTTP 400 with it.
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


# --------------------------------------------------------------------------------------------------
# grammars


def _llg():
    try:
        import llguidance
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "structured outputs and tools need llguidance: pip install 'nemo_ref[structured]'"
        ) from e
    return llguidance


def _with_ws(schema: dict) -> dict:
    """The schema with our x-guidance options: bounded whitespace, unknown keywords rejected."""
    xg = dict(schema.get("x-guidance") or {})
    xg.update(whitespace_flexible=True, whitespace_pattern=_JSON_WS, lenient=False)
    return {**schema, "x-guidance": xg}


def _json_embed(schema: Any, param: str, what: str) -> str:
    """`%json {...}` text for a schema, checked by llguidance's compiler."""
    if not isinstance(schema, Mapping):
        raise GrammarError(f"{what} must be a JSON object", param)
    try:
        text = json.dumps(_with_ws(dict(schema)), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise GrammarError(f"{what} is not valid JSON: {e}", param) from e
    embed = "%json " + text
    err = _llg().LLMatcher.validate_grammar("start: " + embed)
    if err:
        raise GrammarError(f"{what} cannot be enforced: {_first_line(err)}", param)
    return embed


def _first_line(err: str) -> str:
    line = err.strip().splitlines()[0] if err.strip() else "invalid"
    return re.sub(r"^at \d+\(\d+\): ", "", line)


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
    a JSON document valid for the schema (enforced whether or not strict). Whitespace between
    tokens is bounded (see module doc). Raises GrammarError(param="response_format").
    """
    schema = _response_schema(response_format)
    if schema is None:
        return None
    embed = _json_embed(schema, "response_format", "json_schema.schema")
    return f"start: {embed}\n"


def _normalize_choice(tool_choice: Any, names: list[str]) -> tuple[str, str | None]:
    """-> (mode, forced name): mode in auto | none | required."""
    if tool_choice is None:
        tool_choice = "auto"
    if isinstance(tool_choice, str):
        if tool_choice in ("auto", "none", "required"):
            return tool_choice, None
        if tool_choice == "any":  # Mistral's name for "required"
            return "required", None
        raise GrammarError(
            f"tool_choice must be 'auto', 'none', 'required', 'any' or a named function, got {tool_choice!r}",
            "tool_choice",
        )
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if tool_choice.get("type", "function") != "function" or not isinstance(name, str):
            raise GrammarError(
                'a named tool_choice is {"type": "function", "function": {"name": ...}}',
                "tool_choice",
            )
        if name not in names:
            raise GrammarError(
                f"tool_choice names {name!r}, which is not among the tools {names}", "tool_choice"
            )
        return "required", name
    raise GrammarError("tool_choice must be a string or an object", "tool_choice")


def _tool_functions(tools: Any) -> list[tuple[str, dict]]:
    if tools is None:
        return []
    if not isinstance(tools, Sequence) or isinstance(tools, str | bytes):
        raise GrammarError("tools must be a list", "tools")
    out: list[tuple[str, dict]] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function":
            raise GrammarError(f"tools[{i}]: only type 'function' tools are supported", "tools")
        fn = tool.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(name, str) or not _FUNCTION_NAME_RE.fullmatch(name):
            raise GrammarError(f"tools[{i}]: function.name must be 1-64 of a-z, A-Z, 0-9, _ and -", "tools")
        if any(name == n for n, _ in out):
            raise GrammarError(f"tools[{i}]: duplicate function name {name!r}", "tools")
        params = fn.get("parameters")
        if params is None:  # OpenAI: no parameters = a function without arguments
            params = {"type": "object", "properties": {}, "additionalProperties": False}
        if not isinstance(params, Mapping):
            raise GrammarError(f"tools[{i}]: function.parameters must be an object", "tools")
        out.append((name, dict(params)))
    return out


def _calls_rules(functions: list[tuple[str, dict]], parallel: bool) -> list[str]:
    """Lark rules for `calls`: the JSON array that follows `[TOOL_CALLS]`."""
    rules = []
    if parallel:
        rules.append('calls: "[" WS? call (WS? "," WS? call)* WS? "]"')
    else:
        rules.append('calls: "[" WS? call WS? "]"')
    rules.append("call: " + " | ".join(f"call_{i}" for i in range(len(functions))))
    for i, (name, params) in enumerate(functions):
        embed = _json_embed(params, "tools", f"parameters of tool {name!r}")
        rules.append(
            f'call_{i}: "{{" WS? "\\"name\\"" WS? ":" WS? "\\"{name}\\"" WS? "," WS? '
            f'"\\"arguments\\"" WS? ":" WS? args_{i} '
            '(WS? "," WS? "\\"id\\"" WS? ":" WS? CALL_ID)? WS? "}"'
        )
        rules.append(f"args_{i}: {embed}")
    rules.append('CALL_ID: /"[a-zA-Z0-9]{9}"/')
    return rules


def grammar_for_request(
    response_format: dict | None = None,
    tools: list[dict] | None = None,
    tool_choice: Any = "auto",
    parallel_tool_calls: bool = True,
) -> str | None:
    """The one grammar for a chat request's response_format + tools + tool_choice, or None.

    - no tools (or tool_choice none): `json_grammar(response_format)`;
    - tools and tool_choice required / any / named: the calls only (response_format is moot);
    - tools and auto: plain text -> text, then optionally calls; JSON -> the JSON document or
      the calls (never both).
    Raises GrammarError with param response_format / tools / tool_choice / parallel_tool_calls.
    """
    if not isinstance(parallel_tool_calls, bool):
        raise GrammarError("parallel_tool_calls must be a boolean", "parallel_tool_calls")
    functions = _tool_functions(tools)
    names = [n for n, _ in functions]
    mode, only = _normalize_choice(tool_choice, names)
    schema = _response_schema(response_format)
    if not functions:
        if mode != "auto" and mode != "none":
            raise GrammarError(f"tool_choice {tool_choice!r} needs tools", "tool_choice")
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
    # SentencePiece models write the array after a space (mistral-common encodes a call as
    # `[TOOL_CALLS]▁[{...`, the dummy prefix); one optional space is allowed for every tokenizer.
    calls = '<TOOL_CALLS> " "? calls'
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
        lines.append(f"WS: {_LARK_WS}")
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
# Constraint: one choice's walk through its grammar

_lock = threading.Lock()
_llg_tokenizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_GRAMMAR_CACHE_SIZE = 64
_grammars: OrderedDict[tuple[int, str], Any] = OrderedDict()


def _llg_tokenizer(tokenizer: Any) -> Any:
    """llguidance's view of a tokenizer, built once per Tokenizer (about 0.5 s)."""
    with _lock:
        lt = _llg_tokenizers.get(tokenizer)
        if lt is None:
            if getattr(tokenizer, "kind", "tekken") == "tekken":
                from mistral_common.guidance.tokenizer import from_mistral_tokenizer

                lt = from_mistral_tokenizer(tokenizer.mistral)
            else:  # mistral-common's adapter is Tekken-only; ours for SentencePiece
                lt = _llg().LLTokenizer(_llg().TokenizerWrapper(tokenizer.llguidance_view()))
            _llg_tokenizers[tokenizer] = lt
        return lt


def _pristine_matcher(lt: Any, grammar: str) -> Any:
    """A compiled, unused matcher for (tokenizer, grammar); callers deep-copy it."""
    key = (id(lt), grammar)
    with _lock:
        m = _grammars.get(key)
        if m is not None:
            _grammars.move_to_end(key)
            return m
    m = _llg().LLMatcher(lt, grammar, log_level=0)
    if m.is_error():
        raise GrammarError(f"grammar does not compile: {_first_line(m.get_error())}")
    with _lock:
        _grammars[key] = m
        while len(_grammars) > _GRAMMAR_CACHE_SIZE:
            _grammars.popitem(last=False)
    return m


class Constraint:
    """One choice's state in a grammar (wraps `llguidance.LLMatcher`).

    Per step: `allowed()` (bool [vocab_size], True = may be sampled), or `forced()` (the only
    allowed token, if exactly one), then `consume(token)` with the token actually sampled.
    EOS is allowed only when `is_accepting()`; once `is_done()` (the grammar can take nothing
    more), EOS is the only allowed token. Consuming EOS is allowed in an accepting state.

    Construction is cheap after the first use of a grammar text (compiled grammars are cached
    and deep-copied); the llguidance tokenizer is built once per Tokenizer.
    """

    def __init__(self, tokenizer: Any, grammar: str):
        if not isinstance(grammar, str) or not grammar.strip():
            raise GrammarError("empty grammar")
        self.tokenizer = tokenizer
        self.grammar = grammar
        self.vocab_size = int(tokenizer.vocab_size)
        lt = _llg_tokenizer(tokenizer)
        self._matcher = _pristine_matcher(lt, grammar).deep_copy()
        self._words = np.zeros((1, (lt.vocab_size + 31) // 32), dtype=np.int32)
        self._allowed: np.ndarray | None = None  # cached mask for the current state

    def _mask(self) -> np.ndarray:
        if self._allowed is None:
            from llguidance.numpy import fill_next_token_bitmask

            if self._matcher.is_error():
                raise RuntimeError(f"grammar matcher failed: {self._matcher.get_error()}")
            fill_next_token_bitmask(self._matcher, self._words)
            # bit b of int32 word w is token 32*w + b: little-endian bytes, little bit order.
            bits = np.unpackbits(self._words.view(np.uint8), bitorder="little")
            self._allowed = bits[: self.vocab_size].view(np.bool_)
        return self._allowed

    def allowed(self) -> torch.Tensor:
        """Bool tensor [vocab_size]: True for the tokens the grammar allows next (a new tensor)."""
        return torch.from_numpy(self._mask().copy())

    def mask_logits_(self, logits: torch.Tensor) -> torch.Tensor:
        """Set the logits of forbidden tokens to -inf, in place (last dim = vocab); returns them."""
        forbid = ~torch.from_numpy(self._mask()).to(logits.device)
        return logits.masked_fill_(forbid, float("-inf"))

    def forced(self) -> int | None:
        """The only allowed token if exactly one is allowed, else None."""
        nz = np.flatnonzero(self._mask())
        return int(nz[0]) if nz.size == 1 else None

    def consume(self, token_id: int) -> None:
        """Advance past the sampled token. A token the grammar forbids raises ValueError."""
        t = int(token_id)
        if self._allowed is not None and not (0 <= t < self.vocab_size and self._allowed[t]):
            raise ValueError(f"token {t} is not allowed by the grammar here")
        self._allowed = None
        if not self._matcher.consume_token(t):
            raise ValueError(f"token {t} rejected by the grammar: {self._matcher.get_error()}")

    def is_accepting(self) -> bool:
        """True when the output so far is complete (EOS may follow)."""
        return bool(self._matcher.is_accepting())

    def is_done(self) -> bool:
        """True when nothing more can follow (only EOS, or EOS was consumed)."""
        return bool(self._matcher.is_stopped())


# --------------------------------------------------------------------------------------------------
# tool-call output


def make_tool_call_id(seed: Any = None, index: int = 0) -> str:
    """A 9-alphanumeric tool-call id (Nemo's format). Random when `seed` is None; otherwise a
    pure function of (seed, index), e.g. seed=(request seed, choice index)."""
    if seed is None:
        return "".join(secrets.choice(_ALNUM) for _ in range(9))
    digest = hashlib.sha256(
        b"nemo-ref-tool-call-id\x00" + repr(seed).encode() + b"\x00" + str(index).encode()
    ).digest()
    n = int.from_bytes(digest, "big")
    out = []
    for _ in range(9):
        n, r = divmod(n, 62)
        out.append(_ALNUM[r])
    return "".join(out)


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
    marker = getattr(tokenizer, "tool_calls_id", TOOL_CALLS_ID)
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
