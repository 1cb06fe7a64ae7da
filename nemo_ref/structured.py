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
- Whitespace between JSON tokens is bounded: each gap is empty, one space, or one line break
  followed by at most 16 spaces or tabs (`WS_MAX_INDENT`): compact, `json.dumps` and
  pretty-printed documents all fit, and no gap can take more than a couple of tokens, so a model
  cannot spend its tokens on whitespace (termination comes from the grammar, whatever the model
  prefers). The document starts at its first character (no leading whitespace) and ends at its
  last (EOS is then the only choice).
- Tool calls use Nemo's v3 format exactly as mistral-common writes it when it re-encodes a call:
  the control token `[TOOL_CALLS]` (id 9) then `[{"name": "N", "arguments": {...}}, ...]`, each
  call optionally ending with `, "id": "<9 alphanumerics>"`, with `json.dumps`'s separators
  (`", "` and `": "`) and no other whitespace, in the wrapper and in the arguments alike. Each
  tool's `parameters` schema constrains its `arguments` (whether or not the tool is `strict`; a
  tool without parameters takes `{}`). The call wrapper is written in lark (not one big schema) so
  that each tool's `$ref`s resolve against its own `parameters`.
- Grammar failures are errors, never a normal-looking stop: a grammar that llguidance compiles but
  cannot run (a schema that only refers to itself; one too large for its parser's limits) is
  found by probing its first steps when it is compiled (`GrammarError`, a 400 in the server); a
  failure later in generation raises `GrammarError` from `Constraint` (before any mask is built
  from a matcher in error, which would allow only EOS). Messages are one short line: llguidance's
  error text carries a dump of its state, which never reaches a client.
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

Grammars are compiled once per distinct text (an LRU of pristine matchers keyed by the text's
SHA-256, bounded in count and in bytes of grammar text; each Constraint deep-copies one) and the
llguidance tokenizer is built once per Tokenizer (0.5 s). A schema's JSON text may have at most
`MAX_SCHEMA_CHARS` characters. llguidance and
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
    "MAX_SCHEMA_CHARS",
    "WS_MAX_INDENT",
    "BoundedLRU",
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
# One gap of whitespace between JSON tokens: nothing, one space, or a line break and an indent.
_JSON_WS = rf"( |\r?\n[ \t]{{0,{WS_MAX_INDENT}}})?"
# mistral-common's serialisation of tool calls (json.dumps defaults): no other whitespace.
_CANONICAL = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
MAX_SCHEMA_CHARS = 256 * 1024  # one schema's JSON text; bounds compile time and cache memory
_ERROR_CHARS = 200  # llguidance errors are cut to this (their full text dumps parser state)
_PROBE_TOKENS = 8  # first tokens tried on a freshly compiled grammar (see _probe)
_EMBED_LINE = re.compile(r"^\w+: (%json .*)$", re.MULTILINE)
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


def _with_ws(schema: dict, canonical: bool = False) -> dict:
    """The schema with our x-guidance options: bounded (or canonical) whitespace, unknown
    keywords rejected."""
    xg = dict(schema.get("x-guidance") or {})
    if canonical:
        xg.pop("whitespace_pattern", None)
        xg.update(_CANONICAL)
    else:
        xg.update(whitespace_flexible=True, whitespace_pattern=_JSON_WS)
    xg["lenient"] = False
    return {**schema, "x-guidance": xg}


def _json_embed(schema: Any, param: str, what: str, canonical: bool = False) -> str:
    """`%json {...}` text for a schema, checked by llguidance's compiler."""
    if not isinstance(schema, Mapping):
        raise GrammarError(f"{what} must be a JSON object", param)
    try:
        if not _uses_all_of(schema):
            schema = _closed(schema)
        text = json.dumps(_with_ws(dict(schema), canonical), ensure_ascii=False, allow_nan=False)
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


def _first_line(err: str) -> str:
    """llguidance's error, short: its first line (the rest is a dump of the parser's state)."""
    line = err.strip().splitlines()[0] if err.strip() else "invalid"
    line = re.sub(r"^at \d+\(\d+\): ", "", line)
    return line if len(line) <= _ERROR_CHARS else line[: _ERROR_CHARS - 3] + "..."


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
    rules = ['calls: "[" call (", " call)* "]"' if parallel else 'calls: "[" call "]"']
    rules.append("call: " + " | ".join(f"call_{i}" for i in range(len(functions))))
    for i, (name, params) in enumerate(functions):
        embed = _json_embed(params, "tools", f"parameters of tool {name!r}", canonical=True)
        rules.append(
            f'call_{i}: "{{\\"name\\": \\"{name}\\", \\"arguments\\": " args_{i} '
            '(", \\"id\\": " CALL_ID)? "}"'
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
    calls = f"<[{TOOL_CALLS_ID}]> calls"
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
# Constraint: one choice's walk through its grammar

_lock = threading.Lock()
_llg_tokenizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class BoundedLRU:
    """A thread-safe LRU bounded by entry count and by the bytes its callers say each entry costs.

    Keys are digests (a client's 5 MB schema is never a key); ``size`` is the caller's measure of
    what an entry holds (the grammar text's length: a compiled matcher grows with it).
    """

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Any, value: Any, size: int) -> None:
        if size > self.max_bytes:
            return  # never cached: it would evict everything else
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, freed) = self._items.popitem(last=False)
                self._bytes -= freed

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


_grammars = BoundedLRU(max_entries=64, max_bytes=32 * 2**20)  # pristine matchers


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _llg_tokenizer(tokenizer: Any) -> Any:
    """llguidance's view of a Tekken tokenizer, built once per Tokenizer (about 0.5 s)."""
    with _lock:
        lt = _llg_tokenizers.get(tokenizer)
        if lt is None:
            from mistral_common.guidance.tokenizer import from_mistral_tokenizer

            lt = from_mistral_tokenizer(tokenizer.mistral)
            _llg_tokenizers[tokenizer] = lt
        return lt


def _fill(matcher: Any, words: np.ndarray) -> None:
    """The next-token bitmask, or GrammarError: a matcher in error fills a mask that allows only
    EOS, which would end the output as if it were complete."""
    from llguidance.numpy import fill_next_token_bitmask

    if not matcher.is_error():
        fill_next_token_bitmask(matcher, words)
    if matcher.is_error():
        raise GrammarError(_failure(matcher.get_error()))


def _failure(err: str) -> str:
    reason = _first_line(err)
    if reason == "NoExtensionBias":  # llguidance: no token can ever extend the output
        return "the grammar admits no output (e.g. a schema that only refers to itself)"
    return f"the grammar cannot be enforced: {reason}"


def _probe(matcher: Any, n_vocab: int, eos: int) -> None:
    """Run a fresh matcher's first steps, so that a grammar llguidance compiles but cannot run
    fails now rather than in generation: one that admits no document at all (a schema that only
    refers to itself), one whose first tokens already exceed the parser's limits (hundreds of
    optional properties). The first mask, then up to _PROBE_TOKENS allowed tokens spread over
    the vocabulary, each consumed by a copy that must then still produce a mask."""
    words = np.zeros((1, (n_vocab + 31) // 32), dtype=np.int32)
    _fill(matcher, words)
    allowed = np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little")[:n_vocab])
    if allowed.size == 0 or (allowed.size == 1 and allowed[0] == eos and not matcher.is_accepting()):
        raise GrammarError("the grammar allows no output")
    for t in allowed[np.linspace(0, allowed.size - 1, min(_PROBE_TOKENS, allowed.size)).astype(int)]:
        if int(t) == eos:
            continue
        m = matcher.deep_copy()
        if not m.consume_token(int(t)):
            raise GrammarError(_failure(m.get_error()))
        _fill(m, words)


def _pristine_matcher(lt: Any, grammar: str, eos: int) -> Any:
    """A compiled, probed, unused matcher for (tokenizer, grammar); callers deep-copy it."""
    key = (id(lt), digest(grammar))
    m = _grammars.get(key)
    if m is not None:
        return m
    m = _llg().LLMatcher(lt, grammar, log_level=0)
    if m.is_error():
        raise GrammarError(f"the grammar does not compile: {_first_line(m.get_error())}")
    _probe(m, lt.vocab_size, eos)
    # A schema embedded deeper (a tool's arguments) is reached only after the tokens before it:
    # each is probed as a grammar of its own (our grammars put every %json embed on one line).
    for embed in _EMBED_LINE.findall(grammar):
        if f"start: {embed}\n" != grammar:
            _pristine_matcher(lt, f"start: {embed}\n", eos)
    _grammars.put(key, m, len(grammar))
    return m


class Constraint:
    """One choice's state in a grammar (wraps `llguidance.LLMatcher`).

    Per step: `allowed()` (bool [vocab_size], True = may be sampled), or `forced()` (the only
    allowed token, if exactly one), then `consume(token)` with the token actually sampled.
    EOS is allowed only when `is_accepting()`; once `is_done()` (the grammar can take nothing
    more), EOS is the only allowed token. Consuming EOS is allowed in an accepting state.
    A grammar that fails (at compile time, when probed, or later) raises `GrammarError`.

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
        self._matcher = _pristine_matcher(lt, grammar, tokenizer.eos_id).deep_copy()
        self._words = np.zeros((1, (lt.vocab_size + 31) // 32), dtype=np.int32)
        self._allowed: np.ndarray | None = None  # cached mask for the current state

    def _mask(self) -> np.ndarray:
        if self._allowed is None:
            _fill(self._matcher, self._words)
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
        """Advance past the sampled token. A token the grammar forbids raises ValueError; a
        grammar that fails here raises GrammarError (a ValueError too)."""
        t = int(token_id)
        if self._allowed is not None and not (0 <= t < self.vocab_size and self._allowed[t]):
            raise ValueError(f"token {t} is not allowed by the grammar here")
        self._allowed = None
        if not self._matcher.consume_token(t):
            raise GrammarError(f"token {t} rejected by the grammar: {_first_line(self._matcher.get_error())}")

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
    if TOOL_CALLS_ID not in ids:
        return tokenizer.decode(ids), []
    first = ids.index(TOOL_CALLS_ID)
    content = tokenizer.decode(ids[:first])
    # Unconstrained output may repeat [TOOL_CALLS]: every segment must be a call array.
    segments, cur = [], []
    for t in ids[first + 1 :]:
        if t == TOOL_CALLS_ID:
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
