"""``nemo-ref generate``: one completion (or ``-n`` of them) from the command line, with the sampling
flags of docs/sampling.md and ``--explain N``, a replay of the first N steps stage by stage."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..sampling.params import DISTRIBUTION_FIELDS
from .flags import (
    add_model_args,
    add_prompt_args,
    add_sampler_arg,
    load_from_args,
    logit_bias_item,
    prompt_from_args,
)

# The flags that reach SamplingParams under their own names; --logit-bias (ID=VALUE items),
# --logprobs (implied by --top-logprobs) and --stop are converted on the way (params_from_args).
SAMPLING_FLAGS = (
    *(name for name in DISTRIBUTION_FIELDS if name != "logit_bias"),
    *("top_logprobs", "logprobs_mode", "seed", "max_tokens", "n"),
)


def add_commands(sub: Any) -> None:
    g = sub.add_parser("generate", help="generate text (embedded random-weight model unless --checkpoint)")
    g.add_argument("prompt")
    add_prompt_args(g)
    g.add_argument("--stream", action="store_true", help="print text as it is generated")
    g.add_argument("--json", action="store_true", help="print the whole completion as JSON")
    g.add_argument("--explain", type=int, default=0, metavar="N", help="explain the first N steps")
    add_sampler_arg(g)
    add_model_args(g)
    add_sampling_args(g)
    g.set_defaults(func=run)


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling (docs/sampling.md)")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--min-p", type=float, default=0.0)
    g.add_argument("--repetition-penalty", type=float, default=1.0)
    g.add_argument("--presence-penalty", type=float, default=0.0)
    g.add_argument("--frequency-penalty", type=float, default=0.0)
    g.add_argument("--logit-bias", action="append", default=[], metavar="ID=VALUE")
    g.add_argument("--logprobs", action="store_true")
    g.add_argument("--top-logprobs", type=int, default=0)
    g.add_argument("--logprobs-mode", choices=("raw", "processed"), default="raw")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--stop", action="append", default=[], help="a stop string (repeatable, <= 4)")
    g.add_argument("--max-tokens", type=int, default=64)
    g.add_argument("-n", type=int, default=1, help="number of choices")


def _logit_bias(items: list[str]) -> dict[int, float]:
    out = {}
    for item in items:
        try:
            token, bias = logit_bias_item(item)
        except ValueError:
            raise SystemExit(f"--logit-bias expects ID=VALUE, got {item!r}") from None
        out[token] = bias
    return out


def params_from_args(args: argparse.Namespace) -> Any:
    """The SamplingParams the flags describe (ParamError, naming the field and its range, if bad)."""
    from ..sampling.params import SamplingParams

    return SamplingParams(
        **{name: getattr(args, name) for name in SAMPLING_FLAGS},
        logit_bias=_logit_bias(args.logit_bias),
        logprobs=args.logprobs or args.top_logprobs > 0,
        stop=tuple(args.stop),
    )


def run(args: argparse.Namespace) -> int:
    from ..generate import generate, stream
    from ..request import encode_prompt
    from ..sampling.params import ParamError

    if args.explain < 0:
        print("error: --explain must be >= 0", file=sys.stderr)
        return 2
    try:
        model, tok, warning = load_from_args(args)
    except ValueError as e:  # ConfigError, CheckpointError, a tokenizer that does not fit
        print(f"error: {e}", file=sys.stderr)
        return 2
    if warning:
        print(warning, file=sys.stderr)
    try:
        params = params_from_args(args)
    except ParamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    prompt = prompt_from_args(args)
    sampler = args.sampler  # None: the Triton kernel on CUDA, torch elsewhere
    try:
        if args.stream:
            for delta in stream(model, tok, prompt, params, sampler=sampler):
                print(delta.text, end="", flush=True)
            print()
            return 0
        out = generate(model, tok, prompt, params, sampler=sampler)
    except ParamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(_completion_json(out, warning), ensure_ascii=False, indent=2))
    else:
        for choice in out.choices:
            if len(out.choices) > 1:
                print(f"--- choice {choice.index} ---")
            print(choice.text)
        print(
            f"[finish: {out.finish_reason}; tokens: prompt {out.usage.prompt_tokens}, "
            f"completion {out.usage.completion_tokens}; seed {out.seed}]",
            file=sys.stderr,
        )
    if args.explain:
        _explain(model, tok, encode_prompt(tok, prompt), out, params, args.explain)
    return 0


def _completion_json(out: Any, warning: str | None) -> dict:
    import dataclasses

    data = {
        "choices": [dataclasses.asdict(c) for c in out.choices],
        "usage": {**dataclasses.asdict(out.usage), "total_tokens": out.usage.total_tokens},
        "seed": out.seed,
    }
    if warning:
        data["warning"] = warning
    return data


def _explain(model: Any, tok: Any, prompt_ids: list[int], out: Any, params: Any, steps: int) -> None:
    """Replay the first ``steps`` steps of choice 0 and print each stage's effect on the top tokens."""
    import torch

    from ..sampling.explain import explain

    ids = out.token_ids
    for step in range(min(steps, len(ids))):
        tokens = torch.tensor([prompt_ids + ids[:step]], device=model.tok_embeddings.weight.device)
        logits = model(tokens, last_only=True)[0, -1].double().cpu()
        print(f"\n=== step {step}: drew {ids[step]} {tok.token_str(ids[step])!r} ===")
        print(
            explain(
                logits,
                params,
                prompt_ids,
                ids[:step],
                step=step,
                choice=0,
                seed=out.seed,
                token_str=tok.token_str,
            )
        )
