"""OpenAI-style chat messages and tools -> mistral-common's request model, with OpenAI leniency.

`nemo_ref.tokenizer.Tokenizer.encode_chat` calls `convert_messages` / `convert_tools` and hands the
result to mistral-common, which owns every prompt format. What is decided here: which OpenAI shapes
are accepted (content as a string or text parts, tool-call arguments as a JSON string or an object,
`developer` as `system`), how client tool-call ids map to the 9 alphanumerics Mistral's formats
require (`nemo_tool_call_id`), and the one error type, `ChatFormatError`, naming the request field.
mistral-common is imported inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

__all__ = [
    "FUNCTION_NAME_RE",
    "TOOL_CALL_ID_PATTERN",
    "ChatFormatError",
    "base62_tool_call_id",
    "convert_messages",
    "convert_tools",
    "nemo_tool_call_id",
    "short_error",
]

# Nemo's prompt format: a tool-call id is exactly 9 alphanumerics (mistral-common rejects others).
TOOL_CALL_ID_LEN = 9
TOOL_CALL_ID_PATTERN = rf"[a-zA-Z0-9]{{{TOOL_CALL_ID_LEN}}}"
_NEMO_ID_RE = re.compile(TOOL_CALL_ID_PATTERN)
FUNCTION_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # mistral-common's rule (structured.py too)
TOOL_CALL_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


class ChatFormatError(ValueError):
    """A chat request that cannot be encoded; `param` names the request field to blame.

    The server turns it into HTTP 400 `{"error": {"message": ..., "param": err.param}}`.
    """

    def __init__(self, message: str, param: str = "messages"):
        super().__init__(message)
        self.param = param


def nemo_tool_call_id(client_id: str) -> str:
    """Map a client's tool-call id to the 9-alphanumeric form Nemo's prompt format requires.

    Ids already of that form are kept. Any other id (OpenAI's `call_abc...`, uuids) is replaced by
    the first 9 base-62 digits of its SHA-256: a pure function, so the assistant's call and the
    tool result that answers it (same client id) get the same mapped id in every request.
    """
    if _NEMO_ID_RE.fullmatch(client_id):
        return client_id
    return base62_tool_call_id(hashlib.sha256(client_id.encode("utf-8")).digest())


def base62_tool_call_id(digest: bytes) -> str:
    """A tool-call id in Nemo's form from a hash: the first 9 base-62 digits of ``digest``."""
    n = int.from_bytes(digest, "big")
    digits = []
    for _ in range(TOOL_CALL_ID_LEN):
        n, r = divmod(n, 62)
        digits.append(TOOL_CALL_ID_ALPHABET[r])
    return "".join(digits)


def short_error(e: Exception) -> str:
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


def convert_messages(messages: Any) -> list:
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


def convert_tools(tools: Any) -> list:
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
        if not FUNCTION_NAME_RE.fullmatch(fn["name"]):
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
