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


def _start(
    model: Any,
    tokenizer: Any,
    prompt: Prompt,
    params: SamplingParams | None,
    tools: list[dict] | None = None,
    constraint_factory: Callable[[], Any] | None = None,
    sampler: str | None = None,
    on_delta: Callable[[Delta], None] | None = None,
) -> tuple[Engine, Request, list[int], int]:
    """Resolve the prompt, check the request, and submit its choices to an engine of their size.
    Returns (engine, request, prompt ids, seed)."""
    params = params or SamplingParams()
    prompt_ids = encode_prompt(tokenizer, prompt, tools)
    seed, seqs = make_sequences(tokenizer, prompt_ids, params, model.args.max_positions, constraint_factory)
    need = len(prompt_ids) + seqs[0].max_new_tokens
    engine = Engine(model, max_batch=len(seqs), max_len=need, sampler=sampler)
    return engine, engine.submit(Request(seqs, on_delta=on_delta)), prompt_ids, seed


def _steps(engine: Engine, request: Request) -> Iterator[None]:
    """Step the engine until the request has finished; re-raise the error that failed it."""
    while not request.finished:
        engine.step()
        yield
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
    engine, request, prompt_ids, seed = _start(
        model, tokenizer, prompt, params, tools, constraint_factory, sampler
    )
    for _ in _steps(engine, request):
        pass
    return completion_of(request.sequences, prompt_ids, seed)


def stream(
    model: Any, tokenizer: Any, prompt: Prompt, params: SamplingParams | None = None, **options: Any
) -> Iterator[Delta]:
    """Yield each choice's Deltas as they are produced (UTF-8-safe, stop prefixes held back).

    The arguments are ``generate()``'s (``options``: ``tools``, ``constraint_factory``,
    ``sampler``). The last Delta of each choice carries its ``finish_reason``.
    """
    out: list[Delta] = []
    engine, request, _ids, _seed = _start(model, tokenizer, prompt, params, on_delta=out.append, **options)
    for _ in _steps(engine, request):
        yield from out
        out.clear()
