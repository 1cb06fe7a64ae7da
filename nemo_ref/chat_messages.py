"""OpenAI-style chat messages and tools -> mistral-common's request model, with OpenAI leniency.

`nemo_ref.tokenizer.Tokenizer.encode_chat` calls `convert_messages` / `convert_tools` and hands the
result to mistral-common, which owns every prompt format. What is decided here: which OpenAI shapes
are accepted (content as a string or text parts, tool-call arguments as a JSON string or an object,
`developer` as `system`), how client tool-call ids map to the 9 alphanumerics Mistral's formats
require (`nemo_tool_call_id`), and the one error type, `ChatFormatError`, naming the request field.
mistral-common is imported inside the functions.

This module is the one home of the rules on tool definitions (`tool_functions`: the shape, the
function-name rule, unique names) and on `tool_choice` (`tool_choice_mode`): the prompt encoder,
the grammar builder (structured.py) and the server all call these two.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FUNCTION_NAME_RE",
    "TOOL_CALL_ID_PATTERN",
    "ChatFormatError",
    "ToolFunction",
    "base62_tool_call_id",
    "convert_messages",
    "convert_tools",
    "nemo_tool_call_id",
    "short_error",
    "tool_choice_mode",
    "tool_functions",
]

# Nemo's prompt format: a tool-call id is exactly 9 alphanumerics (mistral-common rejects others).
TOOL_CALL_ID_LEN = 9
TOOL_CALL_ID_PATTERN = rf"[a-zA-Z0-9]{{{TOOL_CALL_ID_LEN}}}"
_NEMO_ID_RE = re.compile(TOOL_CALL_ID_PATTERN)
FUNCTION_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # mistral-common's rule
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


@dataclass(frozen=True)
class ToolFunction:
    """One checked tool definition. ``parameters`` is None when the tool declares none (OpenAI: a
    function without arguments)."""

    name: str
    description: str
    parameters: dict | None


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 70 else repr(text[:67]) + "..."


def tool_functions(tools: Any) -> list[ToolFunction]:
    """The tools' function definitions, checked: OpenAI's `[{"type": "function", "function":
    {"name", "description", "parameters"}}]` (None: no tools).

    Names follow mistral-common's rule (`FUNCTION_NAME_RE`) and are unique; `parameters` is an
    object (a JSON schema) or absent; `description` a string or absent. Raises ChatFormatError
    with param "tools", naming the tool by its index.
    """
    if tools is None:
        return []
    if not isinstance(tools, Sequence) or isinstance(tools, str | bytes):
        raise ChatFormatError("tools must be a list", "tools")
    out: list[ToolFunction] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function":
            raise ChatFormatError(f"{where}: only type 'function' tools are supported", "tools")
        fn = tool.get("function")
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise ChatFormatError(f"{where}: function.name is required", "tools")
        name = fn["name"]
        if not FUNCTION_NAME_RE.fullmatch(name):
            raise ChatFormatError(
                f"{where}: function.name {_shown(name)} must be 1-64 of a-z, A-Z, 0-9, _ and -", "tools"
            )
        if any(f.name == name for f in out):
            raise ChatFormatError(f"{where}: duplicate function name {name!r}", "tools")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, Mapping):
            raise ChatFormatError(f"{where}: function.parameters must be an object", "tools")
        desc = fn.get("description")
        if desc is not None and not isinstance(desc, str):
            raise ChatFormatError(f"{where}: function.description must be a string", "tools")
        out.append(ToolFunction(name, desc or "", None if params is None else dict(params)))
    return out


def tool_choice_mode(tool_choice: Any, names: list[str]) -> tuple[str, str | None]:
    """OpenAI's `tool_choice` checked against the tools' ``names`` -> (mode, forced name).

    mode is "auto", "none" or "required" (Mistral's "any" is "required"); a named function
    `{"type": "function", "function": {"name": N}}` is "required" with N forced. None means
    "auto". "required" and a named function need tools. Raises ChatFormatError with param
    "tool_choice".
    """
    if tool_choice is None:
        tool_choice = "auto"
    if isinstance(tool_choice, str):
        if tool_choice not in ("auto", "none", "required", "any"):
            raise ChatFormatError(
                f"tool_choice must be 'auto', 'none', 'required', 'any' or a named function, "
                f"got {_shown(tool_choice)}",
                "tool_choice",
            )
        mode = "required" if tool_choice == "any" else tool_choice
        if mode == "required" and not names:
            raise ChatFormatError(f"tool_choice {tool_choice!r} needs at least one tool", "tool_choice")
        return mode, None
    if not isinstance(tool_choice, Mapping):
        raise ChatFormatError("tool_choice must be a string or an object", "tool_choice")
    fn = tool_choice.get("function")
    name = fn.get("name") if isinstance(fn, Mapping) else None
    if tool_choice.get("type", "function") != "function" or not isinstance(name, str):
        raise ChatFormatError(
            'a named tool_choice is {"type": "function", "function": {"name": ...}}', "tool_choice"
        )
    if name not in names:
        raise ChatFormatError(
            f"tool_choice names the function {_shown(name)}, which is not among the tools {names}",
            "tool_choice",
        )
    return "required", name


def convert_tools(tools: Any) -> list:
    """OpenAI tools -> mistral-common `Tool`s (checked by `tool_functions`)."""
    from mistral_common.protocol.instruct.tool_calls import Function, Tool

    return [
        Tool(function=Function(name=f.name, description=f.description, parameters=f.parameters or {}))
        for f in tool_functions(tools)
    ]
