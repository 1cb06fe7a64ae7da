"""A request's choices: the prompt resolved to token ids, checked against the context, and one
``Sequence`` per choice with the request's seed. Shared by ``generate()`` and the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .sampling.params import ParamError, SamplingParams
from .sampling.rng import random_seed
from .sequence import Sequence

Prompt = list[int] | str | list[dict[str, Any]]


def encode_prompt(tokenizer: Any, prompt: Prompt, tools: list[dict] | None = None) -> list[int]:
    """Token ids for ``prompt``: ids as given, text with BOS, or chat messages via mistral-common."""
    if isinstance(prompt, str):
        return tokenizer.encode(prompt, bos=True)
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt) and prompt:
        return tokenizer.encode_chat(prompt, tools=tools)
    if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        if not prompt:
            raise ParamError("prompt", "the prompt must hold at least one token")
        return list(prompt)
    raise ParamError("prompt", "prompt must be token ids, a string, or a list of chat messages")


def check_token_ids(ids: list[int], vocab: int, param: str) -> None:
    """Ids a client sent (a prompt, ids to decode) lie in [0, vocab): ParamError naming ``param``."""
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise ParamError(param, f"token ids must lie in [0, {vocab}); got {bad[:5]}")


def make_sequences(
    tokenizer: Any,
    prompt_ids: list[int],
    params: SamplingParams,
    context: int,
    constraint_factory: Callable[[], Any] | None = None,
) -> tuple[int, list[Sequence]]:
    """Validate the request against the context and build its choices. Returns (seed, sequences)."""
    params.check_vocab(tokenizer.vocab_size)
    check_token_ids(prompt_ids, tokenizer.vocab_size, "prompt")
    if len(prompt_ids) >= context:
        raise ParamError("prompt", f"the prompt has {len(prompt_ids)} tokens; the context holds {context}")
    max_new = params.max_new_tokens
    if max_new is None:
        max_new = context - len(prompt_ids)
    elif len(prompt_ids) + max_new > context:
        name = "max_completion_tokens" if params.max_completion_tokens is not None else "max_tokens"
        raise ParamError(
            name,
            f"prompt ({len(prompt_ids)} tokens) + {name} ({max_new}) exceeds the context of "
            f"{context} tokens; {name} must be <= {context - len(prompt_ids)}",
        )
    seed = params.seed if params.seed is not None else random_seed()
    seqs = [
        Sequence(
            index=i,
            prompt=prompt_ids,
            params=params,
            seed=seed,
            max_new_tokens=max_new,
            tokenizer=tokenizer,
            constraint=constraint_factory() if constraint_factory is not None else None,
        )
        for i in range(params.n)
    ]
    return seed, seqs
