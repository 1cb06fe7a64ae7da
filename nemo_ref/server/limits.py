"""What one request may cost, and who may send it: the server's caps and its guard middleware.

Every input is bounded before work proportional to it starts (docs/serving.md "Limits"):

- the body: at most ``max_request_bytes`` (413 beyond; a ``Content-Length`` over it is refused
  before a byte is read), read within ``body_timeout_s`` (408), then handed to the app whole. A
  client that goes away while uploading is logged as one line, never as an internal error;
- caps checked by the request models (protocol.py): ``MAX_TOOLS`` tools, ``MAX_LOGIT_BIAS``
  logit_bias entries (a key is at most 10 ASCII digits: SamplingParams' rule), stop strings of at
  most ``MAX_STOP_CHARS`` characters, at most ``MAX_DETOKENIZE_IDS`` ids to /detokenize;
- prompts are length-checked before tokenising (``prompt_chars_cap``): no token is longer than
  the tokenizer's longest piece, so more characters than that times the context cannot fit;
- ``max_request_tokens`` bounds n x max_tokens of one request (the rows it can hold, for how long).

The guard (one ASGI middleware) also enforces the exposure rules: with an API key, every route but
/health needs ``Authorization: Bearer <key>`` (401 otherwise; compared in constant time); a POST
must say ``Content-Type: application/json`` (415: a plain-text cross-site form post cannot reach
the model); with allowed hosts, the ``Host`` header must name one of them (400: DNS rebinding).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("nemo_ref.server")

MAX_TOOLS = 128  # OpenAI's own cap
MAX_LOGIT_BIAS = 1024  # entries
MAX_STOP_CHARS = 256  # per stop string: each is one KMP automaton of that many states (sequence.StopMatcher)
MAX_DETOKENIZE_IDS = 262_144

DEFAULT_MAX_REQUEST_BYTES = 4 * 2**20
DEFAULT_MAX_QUEUE = 64
DEFAULT_MAX_REQUEST_TOKENS = 16_384
# Connections (connections.py; here so that the command's --help needs no uvicorn)
HEADER_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_LIMIT_CONCURRENCY = 512
KEEP_ALIVE_S = 5


@dataclass(frozen=True)
class Limits:
    """The server's configurable limits (``nemo-ref serve`` options of the same names)."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    body_timeout_s: float = 30.0
    max_queue: int = DEFAULT_MAX_QUEUE  # requests waiting for rows; 429 beyond
    max_request_tokens: int = DEFAULT_MAX_REQUEST_TOKENS  # n x max_tokens of one request
    api_key: str | None = None
    allowed_hosts: tuple[str, ...] | None = None  # None: any Host header


def prompt_chars_cap(max_model_len: int, longest_token_bytes: int) -> int:
    """Characters beyond which a text cannot fit in ``max_model_len`` tokens: a character is at
    least one byte and a token at most ``longest_token_bytes`` bytes."""
    return max_model_len * longest_token_bytes


def text_chars(value: Any) -> int:
    """Characters of every string in a JSON value (the text a chat prompt must encode)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(text_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(text_chars(v) for v in value)
    return 0


# ---- the guard ----------------------------------------------------------------------------------


Refusal = tuple[int, dict, list[tuple[bytes, bytes]]]  # status, OpenAI error body, extra headers


def _error(message: str, status: int, param: str | None = None, headers=()) -> Refusal:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    return status, body, list(headers)


class Guard:
    """ASGI middleware: host, auth and content-type checks, then the body, bounded, read whole."""

    def __init__(self, app: Any, limits: Limits):
        self.app, self.limits = app, limits
        self._key = limits.api_key.encode() if limits.api_key else None
        hosts = limits.allowed_hosts
        self._hosts = {h.lower() for h in hosts} if hosts else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refuse(scope, headers)
        if refusal is not None:
            return await _respond(send, *refusal)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        body = await self._read_body(scope, headers, receive, send)
        if body is None:
            return  # answered (413 / 408) or the client went away

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # only a disconnect can follow

        await self.app(scope, replay, send)

    def _refuse(self, scope: dict, headers: dict[str, str]) -> Refusal | None:
        if self._hosts is not None:
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.strip("[]").lower() not in self._hosts:
                return _error(f"the Host header {host[:100]!r} is not allowed here", 400)
        if self._key is not None and scope["path"] != "/health":
            scheme, _, token = headers.get("authorization", "").partition(" ")
            # compare_digest: the time taken does not depend on how much of the key was right
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._key):
                message = "a valid API key is required: Authorization: Bearer <key>"
                return _error(message, 401, headers=[(b"www-authenticate", b"Bearer")])
        if scope["method"] == "POST":
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                shown = kind[:60] or "none"
                return _error(f"Content-Type must be application/json (got {shown})", 415, "body")
        return None

    async def _read_body(self, scope, headers, receive, send) -> bytes | None:
        cap = self.limits.max_request_bytes
        # The rest of a refused body is not read: the connection cannot be reused.
        close = [(b"connection", b"close")]
        too_big = _error(f"the request body exceeds the server's limit of {cap} bytes", 413, "body", close)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            await _respond(send, *too_big)
            return None
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                await _respond(send, *_error("the request body did not arrive in time", 408, "body", close))
                return None
            if message["type"] == "http.disconnect":
                client = scope.get("client") or ("?", 0)
                log.info(
                    "client %s:%s went away while uploading %s %s (%d bytes received)",
                    client[0],
                    client[1],
                    scope["method"],
                    scope["path"],
                    size,
                )
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                await _respond(send, *too_big)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _respond(send, status: int, body: dict, extra: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + extra})
    await send({"type": "http.response.body", "body": payload})
