"""``nemo-ref compare``: the command-line face of nemo_ref/compare.py (one position's logits, every engine).

The prompt goes through the model the shared CLI flags choose (``--checkpoint DIR`` or the embedded
random-weight default); ``--logits FILE`` replays a saved position without any model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..compare import (
    DEFAULT_TOP,
    REQUEST_FIELDS,
    Comparison,
    compare,
    load_logits,
    next_token_logits,
    save_logits,
)
from ..sampling import ParamError
from ..sampling import engines as registry
from .flags import add_model_args, add_prompt_args, load_from_args, logit_bias_item, prompt_from_args

HELP = "the next-token distribution under each engine's sampling rules, side by side"
DESCRIPTION = """\
Run one request on one position's logits under every engine's sampling rules (docs/engines.md) and
show the top tokens side by side. Unset request fields take each engine's own defaults."""


def _bias_item(text: str) -> tuple[int, float]:
    try:
        return logit_bias_item(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--logit-bias expects ID=BIAS (e.g. 42=-5); got {text!r}") from None


def _id_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated token ids; got {text!r}") from None


def add_commands(sub: Any) -> None:
    p = sub.add_parser("compare", help=HELP, description=DESCRIPTION)
    p.add_argument("prompt", nargs="?", help="prompt text (or a user message with --chat)")
    add_prompt_args(p)
    p.add_argument(
        "--generated",
        default=None,
        metavar="TEXT",
        help="text the model already generated: fed after the prompt, counted as output tokens",
    )
    p.add_argument(
        "--logits", metavar="FILE", help="a saved logits file (.npz, .npy [V] or .pt) instead of a prompt"
    )
    p.add_argument("--prompt-tokens", type=_id_list, default=None, metavar="IDS", help="history for --logits")
    p.add_argument("--output-tokens", type=_id_list, default=None, metavar="IDS", help="history for --logits")
    p.add_argument("--save-logits", metavar="FILE.npz", help="also save the logits and history to FILE.npz")
    p.add_argument("--engines", default=None, help=f"comma-separated, of: {', '.join(registry.names())}")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, metavar="N", help="tokens per engine to show")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    g = p.add_argument_group("request (as a client sends it; unset fields take each engine's default)")
    g.add_argument("--temperature", type=float, metavar="T")
    g.add_argument("--top-p", type=float, metavar="P")
    g.add_argument("--top-k", type=int, metavar="K")
    g.add_argument("--min-p", type=float, metavar="P")
    g.add_argument("--repetition-penalty", type=float, metavar="R")
    g.add_argument("--presence-penalty", type=float, metavar="P")
    g.add_argument("--frequency-penalty", type=float, metavar="F")
    g.add_argument("--logit-bias", type=_bias_item, action="append", metavar="ID=BIAS")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``nemo-ref compare``: 0 on success, 2 on bad input (with the reason on stderr)."""
    try:
        comparison = _from_args(args)
    except (ValueError, ParamError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        if comparison.notice:  # the table carries it as its first line
            print(comparison.notice, file=sys.stderr)
        print(json.dumps(comparison.to_json(args.top), ensure_ascii=False, indent=2))
    else:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")  # https://no-color.org
        print(comparison.table(args.top, color=color))
    return 0


def _from_args(args: argparse.Namespace) -> Comparison:
    if args.top < 1:
        raise ValueError(f"--top must be >= 1; got {args.top}")
    request: dict[str, Any] = {}
    for field in REQUEST_FIELDS:
        value = getattr(args, field)
        if value is not None:
            request[field] = dict(value) if field == "logit_bias" else value
    names = None if args.engines is None else [n.strip() for n in args.engines.split(",") if n.strip()]
    if args.logits:
        if args.prompt is not None or args.chat or args.system or args.generated is not None:
            raise ValueError("give either a prompt or --logits FILE, not both")
        saved = load_logits(args.logits)
        prompt_ids = saved.prompt_tokens if args.prompt_tokens is None else args.prompt_tokens
        output_ids = saved.output_tokens if args.output_tokens is None else args.output_tokens
        z, notice, token_str = saved.logits, saved.notice, None
        if args.checkpoint:  # its tokenizer names the tokens
            from ..tokenizer import load_tokenizer

            token_str = load_tokenizer(args.checkpoint).token_str
    else:
        if args.prompt is None:
            raise ValueError("give a prompt (text) or --logits FILE")
        if args.prompt_tokens is not None or args.output_tokens is not None:
            raise ValueError("--prompt-tokens and --output-tokens go with --logits; a prompt makes its own")
        from ..request import encode_prompt

        model, tok, notice = load_from_args(args)
        prompt_ids = encode_prompt(tok, prompt_from_args(args))
        output_ids = tok.encode(args.generated, bos=False) if args.generated else []
        z = next_token_logits(model, [*prompt_ids, *output_ids])
        token_str = tok.token_str
    if args.save_logits:
        save_logits(args.save_logits, z, prompt_ids, output_ids, notice)
    return compare(
        z,
        request,
        engines=names,
        prompt_tokens=prompt_ids,
        output_tokens=output_ids,
        token_str=token_str,
        notice=notice,
    )
