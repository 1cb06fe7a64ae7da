"""Nemo's Tekken tokenizer, chat encoding and byte-exact incremental decoding.

Mistral Nemo uses Tekken v3: a tiktoken-style byte-level BPE (`tekken_240718.json`, shipped inside
the mistral-common wheel) with 131,072 ids. The first 1,000 ids are control tokens (0 `<unk>`,
1 `<s>`, 2 `</s>`, 3 `[INST]`, 4 `[/INST]`, 5/6 `[AVAILABLE_TOOLS]`, 7/8 `[TOOL_RESULTS]`,
9 `[TOOL_CALLS]`, 11 `<pad>`, ...); ids 1000..1255 are the 256 single bytes; the rest are merges.

Everything that defines Nemo's prompt format is delegated to mistral-common (the reference Mistral
publishes): `encode_chat` only translates OpenAI-style messages into mistral-common's request model
and calls `encode_chat_completion`. What this module adds:

- OpenAI-compatible leniency where Nemo's format is stricter than OpenAI's (tool-call ids that are
  not 9 alphanumerics are mapped, content may be a list of text parts, a final assistant message is
  continued), and one error type, `ChatFormatError`, with the request field to blame.
- Raw token bytes (`token_bytes`), never U+FFFD-replaced, for logprobs and for streaming.
- `IncrementalDecoder`: 1,435 Tekken tokens are not valid UTF-8 on their own (an emoji can take
  four byte tokens), so streamed text must hold back incomplete UTF-8 sequences.

mistral-common is imported lazily so that `import nemo_ref` works with torch/safetensors/numpy only.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "BUNDLED_TEKKEN",
    "ChatFormatError",
    "IncrementalDecoder",
    "Tokenizer",
    "bundled_tekken_path",
    "load_tokenizer",
    "nemo_tool_call_id",
]

BUNDLED_TEKKEN = "tekken_240718.json"  # Nemo 2407's tokenizer, inside mistral_common/data/

_NEMO_ID_RE = re.compile(r"[A-Za-z0-9]{9}")
_FUNCTION_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # mistral-common's rule
_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


class ChatFormatError(ValueError):
    """A chat request that cannot be encoded; `param` names the request field to blame.

    The server turns it into HTTP 400 `{"error": {"message": ..., "param": err.param}}`.
    """

    def __init__(self, message: str, param: str = "messages"):
        super().__init__(message)
        self.param = param


def _require_mistral_common() -> None:
    try:
        import mistral_common  # noqa: F401
    except ImportError as e:
        raise ImportError("the tokenizer needs mistral-common: pip install 'nemo_ref[tokenizer]'") from e


def bundled_tekken_path() -> Path:
    """Path of the Tekken v3 file bundled with mistral-common (works offline)."""
    _require_mistral_common()
    import mistral_common

    return Path(mistral_common.__file__).parent / "data" / BUNDLED_TEKKEN


def nemo_tool_call_id(client_id: str) -> str:
    """Map a client's tool-call id to the 9-alphanumeric form Nemo's prompt format requires.

    Ids already of that form are kept. Any other id (OpenAI's `call_abc...`, uuids) is replaced by
    the first 9 base-62 digits of its SHA-256: a pure function, so the assistant's call and the
    tool result that answers it (same client id) get the same mapped id in every request.
    """
    if _NEMO_ID_RE.fullmatch(client_id):
        return client_id
    n = int.from_bytes(hashlib.sha256(client_id.encode("utf-8")).digest(), "big")
    digits = []
    for _ in range(9):
        n, r = divmod(n, 62)
        digits.append(_ALNUM[r])
    return "".join(digits)


def load_tokenizer(path: str | Path | None = None) -> Tokenizer:
    """Load Nemo's Tekken tokenizer.

    `path` may be a Tekken json file, or a checkpoint directory: its own `tekken.json` is used
    when present (else another `*tekken*.json` in it; else the bundled file, with a warning).
    `None` loads the bundled `tekken_240718.json`. Loading takes about a second, so tokenizers are
    cached per resolved file (they are immutable); every caller gets the same object.
    """
    _require_mistral_common()
    if path is None:
        file = bundled_tekken_path()
    else:
        p = Path(path).expanduser()
        if p.is_dir():
            candidates = [p / "tekken.json", *sorted(p.glob("*tekken*.json"))]
            found = [c for c in candidates if c.is_file()]
            if found:
                file = found[0]
            else:
                warnings.warn(
                    f"{p} has no tekken.json; using the bundled {BUNDLED_TEKKEN}",
                    stacklevel=2,
                )
                file = bundled_tekken_path()
        elif p.is_file():
            file = p
        else:
            raise FileNotFoundError(f"no tokenizer file or directory at {p}")
    file = file.resolve()
    return _load_file(str(file), file.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _load_file(file: str, _mtime_ns: int) -> Tokenizer:
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    if "tekken" not in Path(file).name or not file.endswith(".json"):
        # mistral-common recognises Tekken files by name.
        raise ValueError(f"{file}: expected a Tekken tokenizer file named like 'tekken*.json'")
    mistral = MistralTokenizer.from_file(file)
    if not isinstance(mistral.instruct_tokenizer.tokenizer, Tekkenizer):
        raise ValueError(f"{file} is not a Tekken tokenizer")
    return Tokenizer(mistral, path=Path(file))


class Tokenizer:
    """Tekken tokenizer for Nemo, wrapping a mistral-common `MistralTokenizer`.

    Attributes: `vocab_size` (131072), `bos_id` (1), `eos_id` (2), `n_special` (1000: ids below are
    control tokens), `mistral` (the `MistralTokenizer`), `tekken` (its inner `Tekkenizer`),
    `version` (e.g. "v3"), `path` (the tekken json it was loaded from, or None).
    """

    def __init__(self, mistral: Any, path: Path | None = None):
        tekken = mistral.instruct_tokenizer.tokenizer
        self.mistral = mistral
        self.tekken = tekken
        self.path = path
        self.version: str = tekken.version.value
        self.vocab_size: int = tekken.n_words
        self.n_special: int = tekken.num_special_tokens
        self.bos_id: int = tekken.bos_id
        self.eos_id: int = tekken.eos_id
        self.pad_id: int = tekken.pad_id
        self.unk_id: int = tekken.unk_id
        # Raw bytes of every id: control tokens as their text ("[INST]"), others as stored in the
        # BPE table. Built once (~0.1 s); decoding is a byte join plus one UTF-8 decode.
        self._bytes: list[bytes] = [
            tekken.id_to_byte_piece(i, special_token_policy=_keep()) for i in range(self.vocab_size)
        ]
        self._special_ids = {self._bytes[i].decode(): i for i in range(self.n_special)}

    def __repr__(self) -> str:
        return f"Tokenizer(tekken {self.version}, vocab_size={self.vocab_size}, path={self.path})"

    # ----------------------------------------------------------------------------------------------
    # ids <-> text
    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Plain text to ids. Control-token spellings in `text` (e.g. "[INST]") are encoded as
        ordinary text, never as control tokens, so user text cannot inject prompt structure."""
        return self.tekken.encode(text, bos=bos, eos=eos)

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Ids to text: the tokens' bytes joined and decoded as UTF-8 (invalid or incomplete
        sequences become U+FFFD, as `bytes.decode(errors="replace")`). Control tokens are
        dropped, or written as their text ("[TOOL_CALLS]") when `skip_special` is False.
        Equal to feeding the ids to an `IncrementalDecoder` and flushing."""
        return self.decode_bytes(ids, skip_special).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Sequence[int], skip_special: bool = True) -> bytes:
        """Raw bytes of a sequence of ids (control tokens dropped or spelled out)."""
        out = []
        for t in ids:
            t = self._check(t)
            if skip_special and t < self.n_special:
                continue
            out.append(self._bytes[t])
        return b"".join(out)

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of one token (never U+FFFD-replaced). Byte tokens 1000..1255 are the single
        bytes 0..255; control tokens give their text form, e.g. b"[INST]", b"</s>"."""
        return self._bytes[self._check(token_id)]

    def token_str(self, token_id: int) -> str:
        """Display form of one token (logprobs' `token`): its bytes decoded with U+FFFD for
        bytes that are not valid UTF-8 on their own (the same as mistral-common's
        `id_to_piece`); control tokens as their text. Lossy: use `token_bytes` for the truth."""
        return self._bytes[self._check(token_id)].decode("utf-8", errors="replace")

    def is_special(self, token_id: int) -> bool:
        """True for control tokens (ids below `n_special`)."""
        return 0 <= int(token_id) < self.n_special

    def special_id(self, text: str) -> int:
        """Id of a control token from its text form, e.g. "[TOOL_CALLS]" -> 9."""
        try:
            return self._special_ids[text]
        except KeyError:
            raise ValueError(f"unknown control token {text!r}") from None

    def _check(self, token_id: int) -> int:
        t = int(token_id)
        if not 0 <= t < self.vocab_size:
            raise ValueError(f"token id {t} out of range [0, {self.vocab_size})")
        return t

    # ----------------------------------------------------------------------------------------------
    # chat
    def encode_chat(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """Encode an OpenAI-style conversation into Nemo's prompt, via mistral-common.

        messages: dicts with `role` in system | developer (treated as system) | user | assistant |
        tool. `content` is a string or a list of `{"type": "text", "text": ...}` parts (Nemo reads
        text only: other part types are rejected). Assistant messages may carry `tool_calls`
        (`[{"id", "type": "function", "function": {"name", "arguments"}}]`, arguments a JSON string
        or an object); tool messages need `tool_call_id`.

        tools: OpenAI-style `[{"type": "function", "function": {"name", "description",
        "parameters"}}]`. They are shown to the model (before the last `[INST]`); tool_choice is not
        part of the prompt (enforcing it is the grammar's job, see nemo_ref.structured).

        Leniency, where Nemo's format is stricter than the OpenAI API:
        - tool-call ids not of Nemo's 9-alphanumeric form (OpenAI's `call_...`) are mapped with
          `nemo_tool_call_id`, identically in the call and in its result;
        - an assistant message with both text and tool calls keeps only the calls (Tekken v3 has
          no way to write both: the text is dropped);
        - a final assistant message (or any with `"prefix": true`, which must be last) is
          continued: it is encoded without `</s>` and the model goes on from its last token.

        Returns the token ids (starting with `<s>`). Raises `ChatFormatError` (a ValueError, with
        `.param` "messages" or "tools") for anything malformed.
        """
        from mistral_common.exceptions import MistralCommonException
        from mistral_common.protocol.instruct.request import ChatCompletionRequest

        mc_messages = _convert_messages(messages)
        mc_tools = _convert_tools(tools) if tools else None
        try:
            request = ChatCompletionRequest(messages=mc_messages, tools=mc_tools)
            return list(self.mistral.encode_chat_completion(request).tokens)
        except (MistralCommonException, ValueError, AssertionError) as e:
            raise ChatFormatError(f"invalid messages: {_short(e)}", "messages") from e

    def encode_chat_text(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        """The chat prompt with control tokens spelled out (for display and debugging)."""
        return self.decode(self.encode_chat(messages, tools), skip_special=False)


def _keep():
    from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

    return SpecialTokenPolicy.KEEP


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _content(msg: dict, where: str, *, required: bool) -> Any:
    """OpenAI content (str | list of text parts | None) -> str | list[TextChunk] | None."""
    from mistral_common.protocol.instruct.chunk import TextChunk

    content = msg.get("content")
    if content is None:
        if required:
            raise ChatFormatError(f"{where}: content is required")
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        chunks = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                chunks.append(TextChunk(text=part))
            elif isinstance(part, dict) and part.get("type") == "text":
                if not isinstance(part.get("text"), str):
                    raise ChatFormatError(f"{where}.content[{j}]: text part needs a string 'text'")
                chunks.append(TextChunk(text=part["text"]))
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ChatFormatError(
                    f"{where}.content[{j}]: only text parts are supported by Nemo, got {kind!r}"
                )
        if required and not chunks:
            raise ChatFormatError(f"{where}: content is empty")
        return chunks
    raise ChatFormatError(f"{where}: content must be a string or a list of text parts")


def _convert_tool_call(call: Any, where: str) -> Any:
    from mistral_common.protocol.instruct.tool_calls import FunctionCall, ToolCall

    if not isinstance(call, dict):
        raise ChatFormatError(f"{where}: a tool call must be an object")
    if call.get("type", "function") != "function":
        raise ChatFormatError(f"{where}: only type 'function' tool calls are supported")
    fn = call.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise ChatFormatError(f"{where}: function.name is required")
    cid = call.get("id")
    if not isinstance(cid, str) or not cid:
        raise ChatFormatError(f"{where}: id is required")
    args = fn.get("arguments", "{}")
    if isinstance(args, dict):
        args = json.dumps(args, ensure_ascii=False)
    elif args is None:
        args = "{}"
    elif not isinstance(args, str):
        raise ChatFormatError(f"{where}: function.arguments must be a JSON string or an object")
    return ToolCall(id=nemo_tool_call_id(cid), function=FunctionCall(name=fn["name"], arguments=args))


def _convert_messages(messages: Any) -> list:
    from mistral_common.protocol.instruct.messages import (
        AssistantMessage,
        SystemMessage,
        ToolMessage,
        UserMessage,
    )

    if not isinstance(messages, list) or not messages:
        raise ChatFormatError("messages must be a non-empty list")
    out = []
    last = len(messages) - 1
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise ChatFormatError(f"{where} must be an object")
        role = msg.get("role")
        if role in ("system", "developer"):
            out.append(SystemMessage(content=_content(msg, where, required=True)))
        elif role == "user":
            out.append(UserMessage(content=_content(msg, where, required=True)))
        elif role == "assistant":
            raw_calls = msg.get("tool_calls") or []
            if not isinstance(raw_calls, list):
                raise ChatFormatError(f"{where}.tool_calls must be a list")
            calls = [_convert_tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(raw_calls)]
            content = None if calls else _content(msg, where, required=False)
            prefix = bool(msg.get("prefix", False)) or (i == last and not calls)
            if not calls and not content:
                raise ChatFormatError(f"{where}: an assistant message needs content or tool_calls")
            if prefix and i != last:
                raise ChatFormatError(f"{where}: a prefix assistant message must be the last one")
            out.append(AssistantMessage(content=content, tool_calls=calls or None, prefix=prefix))
        elif role == "tool":
            cid = msg.get("tool_call_id")
            if not isinstance(cid, str) or not cid:
                raise ChatFormatError(f"{where}: tool_call_id is required")
            content = _content(msg, where, required=False)
            out.append(ToolMessage(content=content or "", tool_call_id=nemo_tool_call_id(cid)))
        else:
            raise ChatFormatError(f"{where}: unknown role {role!r}")
    return out


def _convert_tools(tools: Any) -> list:
    from mistral_common.protocol.instruct.tool_calls import Function, Tool

    if not isinstance(tools, list):
        raise ChatFormatError("tools must be a list", "tools")
    out = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise ChatFormatError(f"{where}: only type 'function' tools are supported", "tools")
        fn = tool.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ChatFormatError(f"{where}: function.name is required", "tools")
        if not _FUNCTION_NAME_RE.fullmatch(fn["name"]):
            raise ChatFormatError(
                f"{where}: function name {fn['name']!r} must be 1-64 of a-z, A-Z, 0-9, _ and -",
                "tools",
            )
        params = fn.get("parameters")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ChatFormatError(f"{where}: function.parameters must be an object", "tools")
        desc = fn.get("description") or ""
        if not isinstance(desc, str):
            raise ChatFormatError(f"{where}: function.description must be a string", "tools")
        out.append(Tool(function=Function(name=fn["name"], description=desc, parameters=params)))
    return out


class IncrementalDecoder:
    """Byte-exact streaming detokenizer.

    `push(id)` returns the text completed by that token: bytes of an incomplete UTF-8 sequence
    are held back until a later token completes them. `flush()` ends the stream, emitting what is
    held (as U+FFFD where it is not valid UTF-8). For any ids, the concatenation of all pushes and
    the flush equals `tokenizer.decode(ids, skip_special)`, i.e. the joined bytes decoded with
    `errors="replace"` (Python's incremental UTF-8 decoder guarantees this). `text` is all text
    emitted so far; `pending` the bytes held back.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True):
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""

    def push(self, token_id: int) -> str:
        t = int(token_id)
        if self.skip_special and self.tokenizer.is_special(t):
            return ""
        new = self._dec.decode(self.tokenizer.token_bytes(t), final=False)
        self.text += new
        return new

    def flush(self) -> str:
        new = self._dec.decode(b"", final=True)
        self.text += new
        return new

    @property
    def pending(self) -> bytes:
        return self._dec.getstate()[0]
