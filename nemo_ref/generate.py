"""Generation: ``generate()`` returns a Completion; ``stream()`` yields text deltas as they form.

Both resolve the prompt (token ids, text, or chat messages), validate the request against the
model's context, give every choice its seed (the request's, or one drawn from the OS and reported
back), and drive an ``Engine`` synchronously until every choice has finished. The request
building (``encode_prompt``, ``make_sequences``) lives in ``request.py``, which the server uses too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .engine import Engine, Request
from .request import Prompt, encode_prompt, make_sequences
from .sampling.params import SamplingParams
from .sequence import Delta, Sequence, TokenLogprob


@dataclass
class Choice:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str
    logprobs: list[TokenLogprob] | None


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int  # every sampled token, EOS and a stop string's last token included

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Completion:
    choices: list[Choice]
    usage: Usage
    seed: int  # the seed used: the request's, or the one drawn for it (reproduces this completion)
    prompt_token_ids: list[int] = field(default_factory=list)

    # The first choice's fields, for the common n = 1 case.
    @property
    def text(self) -> str:
        return self.choices[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.choices[0].token_ids

    @property
    def finish_reason(self) -> str:
        return self.choices[0].finish_reason

    @property
    def logprobs(self) -> list[TokenLogprob] | None:
        return self.choices[0].logprobs


def _engine_for(model: Any, seqs: list[Sequence], sampler: str | None) -> Engine:
    need = len(seqs[0].prompt) + seqs[0].max_new_tokens
    return Engine(model, max_batch=len(seqs), max_len=need, sampler=sampler)


def _prepare(model, tokenizer, prompt, params, tools, constraint_factory):
    params = params or SamplingParams()
    prompt_ids = encode_prompt(tokenizer, prompt, tools)
    seed, seqs = make_sequences(tokenizer, prompt_ids, params, model.args.max_positions, constraint_factory)
    return prompt_ids, seed, seqs


def _run(engine: Engine, request: Request) -> None:
    engine.submit(request)
    while not request.finished:
        engine.step()
    if request.error is not None:
        raise request.error


def completion_of(seqs: list[Sequence], prompt_ids: list[int], seed: int) -> Completion:
    choices = [
        Choice(
            index=s.index,
            text=s.text,
            token_ids=list(s.output),
            finish_reason=s.finish_reason or "length",
            logprobs=s.logprobs if s.params.logprobs else None,
        )
        for s in seqs
    ]
    usage = Usage(len(prompt_ids), sum(len(s.output) for s in seqs))
    return Completion(choices, usage, seed, prompt_ids)


def generate(
    model: Any,
    tokenizer: Any,
    prompt: Prompt,
    params: SamplingParams | None = None,
    *,
    tools: list[dict] | None = None,
    constraint_factory: Callable[[], Any] | None = None,
    sampler: str | None = None,
) -> Completion:
    """Generate ``params.n`` choices for ``prompt``; see docs/sampling.md for every parameter.

    ``constraint_factory`` builds one S0 constraint per choice (``allowed()``, ``consume()``,
    ``is_done()``), e.g. a ``nemo_ref.structured.Constraint``. ``sampler``: "torch" or "triton";
    by default the Triton kernel on a CUDA model, the torch sampler elsewhere.
    """
    prompt_ids, seed, seqs = _prepare(model, tokenizer, prompt, params, tools, constraint_factory)
    _run(_engine_for(model, seqs, sampler), Request(seqs))
    return completion_of(seqs, prompt_ids, seed)


def stream(
    model: Any,
    tokenizer: Any,
    prompt: Prompt,
    params: SamplingParams | None = None,
    *,
    tools: list[dict] | None = None,
    constraint_factory: Callable[[], Any] | None = None,
    sampler: str | None = None,
) -> Iterator[Delta]:
    """Yield each choice's Deltas as they are produced (UTF-8-safe, stop prefixes held back).

    The last Delta of each choice carries its ``finish_reason``.
    """
    _ids, _seed, seqs = _prepare(model, tokenizer, prompt, params, tools, constraint_factory)
    engine = _engine_for(model, seqs, sampler)
    out: list[Delta] = []
    request = engine.submit(Request(seqs, on_delta=out.append))
    while not request.finished:
        engine.step()
        yield from out
        out.clear()
    if request.error is not None:
        raise request.error
