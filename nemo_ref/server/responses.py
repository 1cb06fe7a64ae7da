"""Response assembly: the JSON body of a finished, non-streaming job (streaming.py writes the
same content as server-sent events). Shapes of the parts (logprobs, usage): protocol.py."""

from __future__ import annotations

from typing import Any

from . import protocol as P
from .jobs import Job, outcome


def chat_body(job: Job, env: P.Envelope, tokenizer: Any) -> dict:
    choices = []
    for seq in job.seqs:
        out = outcome(seq, tokenizer, job.tools)
        message: dict[str, Any] = {"role": "assistant", "content": out.content}
        if out.tool_calls:
            message["tool_calls"] = out.tool_calls
        logprobs = None
        if seq.params.logprobs:
            logprobs = {"content": [P.logprob_entry(x) for x in seq.logprobs]}
        choices.append(
            {"index": seq.index, "message": message, "logprobs": logprobs, "finish_reason": out.finish_reason}
        )
    n_out = sum(len(s.output) for s in job.seqs)
    return {**env.head("chat.completion"), "choices": choices, "usage": P.usage(len(job.prompt_ids), n_out)}


def completion_body(job: Job, env: P.Envelope, tokenizer: Any) -> dict:
    choices = []
    for seq in job.seqs:
        out = outcome(seq, tokenizer, tools=False)
        logprobs = P.legacy_logprobs(seq.logprobs) if seq.params.logprobs else None
        choices.append(
            {
                "index": seq.index,
                "text": out.content,
                "logprobs": logprobs,
                "finish_reason": out.finish_reason,
            }
        )
    n_out = sum(len(s.output) for s in job.seqs)
    return {**env.head("text_completion"), "choices": choices, "usage": P.usage(len(job.prompt_ids), n_out)}
