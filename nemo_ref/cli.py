"""The ``nemo-ref`` command: generate, serve, compare, and checkpoint tools (make-checkpoint, convert, inspect)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from .cli_model import add_model_args, load_from_args, model_from_args


def _logit_bias(items: list[str]) -> dict[int, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--logit-bias expects ID=VALUE, got {item!r}")
        out[int(key)] = float(value)
    return out


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


def params_from_args(args: argparse.Namespace):
    from .sampling.params import SamplingParams

    return SamplingParams(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        presence_penalty=args.presence_penalty,
        frequency_penalty=args.frequency_penalty,
        logit_bias=_logit_bias(args.logit_bias),
        logprobs=args.logprobs or args.top_logprobs > 0,
        top_logprobs=args.top_logprobs,
        logprobs_mode=args.logprobs_mode,
        seed=args.seed,
        stop=tuple(args.stop),
        max_tokens=args.max_tokens,
        n=args.n,
    )


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate, stream
    from .request import encode_prompt
    from .sampling.params import ParamError

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
    if args.chat or args.system:
        messages = [{"role": "system", "content": args.system}] if args.system else []
        prompt: Any = [*messages, {"role": "user", "content": args.prompt}]
    else:
        prompt = args.prompt
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
    from .sampling.explain import explain

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nemo-ref", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate text (embedded random-weight model unless --checkpoint)")
    g.add_argument("prompt")
    g.add_argument("--chat", action="store_true", help="send the prompt as a user chat message")
    g.add_argument("--system", default=None, help="a system prompt (implies --chat)")
    g.add_argument("--stream", action="store_true", help="print text as it is generated")
    g.add_argument("--json", action="store_true", help="print the whole completion as JSON")
    g.add_argument("--explain", type=int, default=0, metavar="N", help="explain the first N steps")
    g.add_argument("--sampler", choices=("torch", "triton"), default=None, help="default: triton on CUDA")
    add_model_args(g)
    add_sampling_args(g)
    g.set_defaults(func=cmd_generate)

    from .cli_checkpoint import add_checkpoint_commands
    from .cli_compare import add_compare_command
    from .probe.cli import add_probe_command  # imports httpx only when run
    from .server.cli_serve import add_serve_command  # imports no server dependency until run

    add_checkpoint_commands(sub)
    add_serve_command(sub)
    add_compare_command(sub, add_model_args, load_from_args)
    add_probe_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .tp import env_world_size

    if env_world_size() > 1:  # started by torchrun: tensor-parallel over its ranks
        from .tp_driver import run_torchrun

        return run_torchrun(args, model_from_args)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
