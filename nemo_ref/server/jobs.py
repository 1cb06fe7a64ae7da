"""The bridge between async HTTP handlers and the engine's thread, and what a finished choice means.

One ``Engine`` serves the whole app from its own thread (continuous batching: every running
sequence advances one token per step). A handler turns its HTTP request into a ``Job`` (state.py):
the prompt is encoded, the parameters and grammar are checked (every problem is a 400 naming the
field), and the choices are built as engine ``Sequence``s (``build_job``). ``Job.submit`` hands them to the
engine; the engine calls ``on_delta`` from its thread for every token, and the job forwards each
Delta to the handler's asyncio queue with ``loop.call_soon_threadsafe``. ``Job.events()`` yields
them in order until every choice has finished; leaving it early (the client went away, or the
handler was cancelled) cancels the engine request, which frees its KV-cache rows before the next
decode step.

The engine has no completion callback, so ``events()`` also polls ``Request.finished`` a few times
a second: that is how a request failed by the engine (its error set, no final delta) is noticed,
and how a non-streaming handler notices a client that disconnected.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..constraint import BoundedLRU, GrammarError, digest  # llguidance itself is imported lazily
from ..engine import Engine, QueueFull, Request
from ..request import make_sequences
from ..sampling.params import ParamError
from ..sequence import Delta, Sequence

POLL_S = 0.1  # how often a waiting handler checks for engine failure and client disconnects
RETRY_AFTER_S = 1  # what a 429 suggests: rows free up every few decode steps


class APIError(Exception):
    """An HTTP error in OpenAI's shape: 400 for bad input (``param`` names the request field),
    404 for an unknown model id, 429 when the waiting queue is full, 503 while loading."""

    def __init__(self, message: str, param: str | None, status: int = 400, headers: dict | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.headers = message, param, status, headers


class JobFailed(Exception):
    """The engine failed a request: an internal error (HTTP 500), or the request's grammar failed
    in generation (400 naming ``param``: the schema could not be enforced, and retrying would not
    help). Mid-stream, an error event of the same type."""

    def __init__(self, message: str, status: int = 500, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param

    @property
    def type(self) -> str:
        return "invalid_request_error" if self.status < 500 else "server_error"


@dataclass
class Event:
    """One Delta from the engine, plus where tool calls began in that choice's text, if here."""

    delta: Delta
    tool_text_start: int | None  # len(seq.text) when [TOOL_CALLS] was sampled (this delta)


_END = object()  # queued after the engine finished a request: nothing follows


@dataclass(eq=False)
class Job:
    """One API request's choices, in the engine and on their way back to the handler."""

    engine: Engine
    prompt_ids: list[int]
    seed: int
    seqs: list[Sequence]
    tools: bool  # tools were offered: [TOOL_CALLS] output becomes OpenAI tool_calls
    grammar_param: str | None = None  # the field blamed if the grammar fails in generation
    request: Request | None = None
    loop: asyncio.AbstractEventLoop | None = None
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    def submit(self, max_waiting: int | None = None) -> None:
        """Hand the choices to the engine; 429 (with Retry-After) if ``max_waiting`` requests
        already wait for rows."""
        self.loop = asyncio.get_running_loop()
        self.request = Request(self.seqs, on_delta=self._on_delta)
        try:
            self.engine.submit(self.request, max_waiting=max_waiting)
        except QueueFull as e:
            raise APIError(str(e), None, 429, {"Retry-After": str(RETRY_AFTER_S)}) from e
        except ValueError as e:  # make_sequences checked the same limits: kept for safety
            raise APIError(str(e), "messages") from e

    def _on_delta(self, delta: Delta) -> None:
        """Runs on the engine's thread: record what only that thread may read, then hand over."""
        try:
            seq = self.seqs[delta.index]
            start = len(seq.text) if seq.tool_calls_id in delta.token_ids else None
            self.loop.call_soon_threadsafe(self.queue.put_nowait, Event(delta, start))
        except RuntimeError:  # the event loop is closed (server shutting down)
            self.engine.cancel(self.request)

    def cancel(self) -> None:
        if self.request is not None and not self.request.finished:
            self.engine.cancel(self.request)

    async def events(self, disconnected: Callable[[], Awaitable[bool]] | None = None) -> AsyncIterator[Event]:
        """Every Event until all choices finished. Cancels the request if the caller stops early.

        ``disconnected``: polled while waiting (non-streaming handlers; a streaming response is
        cancelled by Starlette when its client goes away, which lands in the ``finally``).
        """
        remaining = len(self.seqs)
        ended = False
        next_check = self.loop.time() + POLL_S
        try:
            while remaining:
                try:
                    item = await asyncio.wait_for(self.queue.get(), POLL_S)
                except asyncio.TimeoutError:  # (3.10: not yet the builtin TimeoutError)
                    item = None
                if disconnected is not None and (item is None or self.loop.time() >= next_check):
                    next_check = self.loop.time() + POLL_S
                    if await disconnected():
                        return
                if item is None:
                    if not ended and (self.request.finished or not engine_alive(self.engine)):
                        # Deltas the engine sent before finishing are already queued: _END follows them.
                        ended = True
                        self.loop.call_soon(self.queue.put_nowait, _END)
                    continue
                if item is _END:
                    raise self._failure()
                yield item
                if item.delta.finish_reason is not None:
                    remaining -= 1
        finally:
            if remaining:
                self.cancel()

    def _failure(self) -> JobFailed:
        err = self.request.error
        if isinstance(err, GrammarError):
            param = self.grammar_param or "response_format"
            return JobFailed(f"{param}: generation stopped: {err}", 400, param)
        if err is None and not engine_alive(self.engine):
            err = "the engine thread stopped"
        return JobFailed(f"generation failed: {err or 'the request ended early'}")

    async def run(self, disconnected: Callable[[], Awaitable[bool]] | None = None) -> bool:
        """Wait for every choice (non-streaming). False if the client disconnected first."""
        async for _ in self.events(disconnected):
            pass
        return all(s.done for s in self.seqs)


def engine_alive(engine: Engine) -> bool:
    """False once the engine's thread has died (an exception escaped a step)."""
    thread = getattr(engine, "_thread", None)
    return thread is None or thread.is_alive()


# ---- building a job -----------------------------------------------------------------------------


def _blame(exc: Exception, default: str | None) -> APIError:
    return APIError(str(exc), getattr(exc, "param", None) or default)


def build_job(
    engine: Engine,
    tokenizer: Any,
    prompt_ids: list[int],
    params: Any,
    *,
    grammar: str | None = None,
    tools: bool = False,
    grammar_param: str = "response_format",
    prompt_param: str = "prompt",
    max_request_tokens: int | None = None,
) -> Job:
    """Check the request against the context and build its choices (one Constraint each).

    ``prompt_param`` is the field blamed for a prompt that is too long ("messages" for chat).
    ``max_request_tokens`` caps n x max_tokens: a request that asks for more is a 400; one that
    leaves max_tokens to its default gets rest-of-context capped to its share of it.
    """
    factory = None
    if grammar is not None:
        from ..structured import Constraint

        try:
            Constraint(tokenizer, grammar)  # compiles (and caches) the grammar now: errors are 400s
        except (GrammarError, ImportError) as e:
            raise _blame(e, grammar_param) from e

        def factory():
            return Constraint(tokenizer, grammar)

    try:
        seed, seqs = make_sequences(tokenizer, prompt_ids, params, engine.max_len, factory)
    except ParamError as e:
        raise APIError(str(e), prompt_param if e.param == "prompt" else e.param) from e
    if max_request_tokens is not None:
        _cap_request_tokens(seqs, params, max_request_tokens)
    return Job(engine, prompt_ids, seed, seqs, tools, grammar_param if grammar is not None else None)


def _cap_request_tokens(seqs: list[Sequence], params: Any, cap: int) -> None:
    n = len(seqs)
    asked = params.max_completion_tokens or params.max_tokens
    if asked is not None and n * asked > cap:
        field_ = "max_completion_tokens" if params.max_completion_tokens else "max_tokens"
        raise APIError(
            f"n ({n}) x {field_} ({asked}) = {n * asked} exceeds the server's limit of {cap} "
            f"completion tokens per request (--max-request-tokens)",
            field_,
        )
    share = max(1, cap // n)
    for seq in seqs:  # the default, rest of the context, shrinks to the request's share
        seq.max_new_tokens = min(seq.max_new_tokens, share)


_request_grammars = BoundedLRU(max_entries=256, max_bytes=32 * 2**20)


def _grammar_for(key: str) -> str | None:
    from ..structured import grammar_for_request

    k = digest(key)
    hit = _request_grammars.get(k)
    if hit is not None:
        return hit[0]
    response_format, tools, tool_choice, parallel, space = json.loads(key)
    grammar = grammar_for_request(response_format, tools, tool_choice, parallel, space)
    _request_grammars.put(k, (grammar,), len(grammar or ""))
    return grammar


def request_grammar(
    response_format: dict | None,
    tools: list[dict] | None,
    tool_choice: Any,
    parallel_tool_calls: bool,
    space_before_calls: bool = False,
) -> str | None:
    """The grammar text for a chat request, cached per distinct (format, tools, choice, parallel,
    space before the calls: SentencePiece tokenizers, see structured.grammar_for_request).

    The key keeps the schema's property order (it is the JSON property order enforced), so two
    schemas that differ only in order are two grammars.
    """
    if response_format is None and not tools and tool_choice in ("auto", "none"):
        return None
    key = json.dumps(
        [response_format, tools, tool_choice, parallel_tool_calls, space_before_calls], ensure_ascii=False
    )
    try:
        return _grammar_for(key)
    except (GrammarError, ImportError) as e:  # ImportError: llguidance is not installed
        raise _blame(e, "tools" if tools else "response_format") from e


# ---- what a finished choice says ----------------------------------------------------------------


@dataclass
class Outcome:
    content: str | None
    tool_calls: list[dict]
    finish_reason: str


def outcome(seq: Sequence, tokenizer: Any, tools: bool) -> Outcome:
    """Content, tool calls and finish reason of a finished choice.

    Tool calls are returned only when tools were offered and the calls parse (the grammar makes
    sure they do); otherwise ``[TOOL_CALLS]`` output is plain text (control tokens skipped) and a
    "tool_calls" finish becomes "stop".
    """
    finish = seq.finish_reason or "length"
    if tools and finish == "tool_calls":
        from ..structured import parse_tool_calls

        content, calls = parse_tool_calls(tokenizer, seq.output)
        if calls:
            return Outcome(content, calls, "tool_calls")
    return Outcome(seq.text, [], "stop" if finish == "tool_calls" else finish)
