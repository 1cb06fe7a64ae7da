"""Server-sent events for ``stream: true`` (docs/serving.md "Streaming").

Each event is ``data: <json>\\n\\n`` and the last one is ``data: [DONE]``. For chat:

1. one chunk with ``delta.role = "assistant"`` (and empty content) for every choice;
2. content chunks as text forms, one choice per chunk, ``choices[i].index`` always set, the
   tokens' logprobs travelling with the text they produced (a chunk may carry logprobs and no
   text: a token whose bytes are not yet a complete UTF-8 character, or one that is part of a
   tool call). The engine's Sequence already holds back incomplete UTF-8 and any suffix that may
   still become a stop string;
3. for a choice that ends in tool calls: one chunk with ``delta.tool_calls`` holding every call
   whole (``index``, ``id``, ``type``, ``function.name``, ``function.arguments``); the text after
   ``[TOOL_CALLS]`` is never sent as content;
4. a chunk with an empty delta and the choice's ``finish_reason``;
5. with ``stream_options.include_usage``: a chunk with ``choices: []`` and ``usage`` (every other
   chunk then has ``usage: null``, as OpenAI does);
6. ``data: [DONE]``.

An error after the first byte (the engine failed the request) is sent as ``data: {"error": ...}``
and then ``data: [DONE]``. /v1/completions streams ``text_completion`` chunks the same way,
without the role chunk and tool calls, with the legacy logprobs object.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from .jobs import Job, JobFailed, outcome
from .protocol import Envelope, error_body, legacy_logprobs, logprob_entry, usage

log = logging.getLogger("nemo_ref.server")

DONE = "data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(obj: Any) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n\n"


class _Split:
    """Per choice: which streamed text is content and which is a tool call's JSON (held)."""

    def __init__(self) -> None:
        self.pos = 0  # characters of the choice's text received so far
        self.calls_at: int | None = None  # where [TOOL_CALLS] began, in those characters
        self.held = ""

    def content(self, text: str, calls_at: int | None, tools: bool) -> str:
        if tools and self.calls_at is None and calls_at is not None:
            self.calls_at = calls_at
        if self.calls_at is None:
            out = text
        else:
            keep = max(0, self.calls_at - self.pos)
            out, self.held = text[:keep], self.held + text[keep:]
        self.pos += len(text)
        return out


async def chat_stream(job: Job, env: Envelope, tokenizer: Any, *, include_usage: bool) -> AsyncIterator[str]:
    head = env.head("chat.completion.chunk")
    if include_usage:
        head["usage"] = None

    def chunk(index: int, delta: dict, logprobs: list | None = None, finish: str | None = None) -> str:
        lp = {"content": logprobs} if logprobs else None
        choice = {"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}
        return sse({**head, "choices": [choice]})

    try:
        first = [
            {
                "index": i,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            for i in range(len(job.seqs))
        ]
        yield sse({**head, "choices": first})
        splits = [_Split() for _ in job.seqs]
        async for ev in job.events():
            d = ev.delta
            text = splits[d.index].content(d.text, ev.tool_text_start, job.tools)
            lps = [logprob_entry(x) for x in d.logprobs] if d.logprobs else None
            if text or lps:
                yield chunk(d.index, {"content": text} if text else {}, lps)
            if d.finish_reason is None:
                continue
            out = outcome(job.seqs[d.index], tokenizer, job.tools)
            if out.tool_calls:
                calls = [{"index": k, **call} for k, call in enumerate(out.tool_calls)]
                yield chunk(d.index, {"tool_calls": calls})
            elif splits[d.index].held:  # [TOOL_CALLS] then no valid call: it was text after all
                yield chunk(d.index, {"content": splits[d.index].held})
            yield chunk(d.index, {}, None, out.finish_reason)
        if include_usage:
            n_out = sum(len(s.output) for s in job.seqs)
            yield sse({**head, "choices": [], "usage": usage(len(job.prompt_ids), n_out)})
    except JobFailed as e:
        yield sse(error_body(str(e), e.param, e.type))
    except Exception as e:  # a bug: still end the stream in a way clients understand
        log.exception("error while streaming %s", env.id)
        yield sse(error_body(f"internal error: {type(e).__name__}: {e}", None, "server_error"))
    finally:
        job.cancel()  # no-op when finished; frees the slots at once if the client went away
    yield DONE


async def completion_stream(
    job: Job, env: Envelope, tokenizer: Any, *, include_usage: bool
) -> AsyncIterator[str]:
    head = env.head("text_completion")
    if include_usage:
        head["usage"] = None
    offsets = [0] * len(job.seqs)

    def chunk(index: int, text: str, logprobs: dict | None, finish: str | None) -> str:
        choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
        return sse({**head, "choices": [choice]})

    try:
        async for ev in job.events():
            d = ev.delta
            lps = legacy_logprobs(d.logprobs, offsets[d.index]) if d.logprobs else None
            offsets[d.index] += len(d.text)
            if d.text or lps:
                yield chunk(d.index, d.text, lps, None)
            if d.finish_reason is not None:
                out = outcome(job.seqs[d.index], tokenizer, tools=False)
                yield chunk(d.index, "", None, out.finish_reason)
        if include_usage:
            n_out = sum(len(s.output) for s in job.seqs)
            yield sse({**head, "choices": [], "usage": usage(len(job.prompt_ids), n_out)})
    except JobFailed as e:
        yield sse(error_body(str(e), e.param, e.type))
    except Exception as e:
        log.exception("error while streaming %s", env.id)
        yield sse(error_body(f"internal error: {type(e).__name__}: {e}", None, "server_error"))
    finally:
        job.cancel()
    yield DONE
