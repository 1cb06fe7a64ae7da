"""``nemo-ref serve``: the OpenAI-compatible server (docs/serving.md).

fastapi and uvicorn are imported only when the command runs, so ``nemo-ref --help`` and the other
commands work without the [server] extra.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_MAX_MODEL_LEN = 8192  # KV cache rows x this many positions are allocated up front


def add_serve_command(subparsers) -> None:
    from ..cli import add_model_args

    p = subparsers.add_parser(
        "serve",
        help="OpenAI-compatible HTTP server (embedded random-weight model unless --checkpoint)",
        description="Serve /v1/chat/completions, /v1/completions, /v1/models, /health, /tokenize and "
        "/detokenize with continuous batching. Without --checkpoint the model has random weights: "
        "every response says so (header x-nemo-ref-weights: random).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=8, help="KV-cache rows: sequences decoded together")
    p.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help=f"context per sequence, prompt + completion (default: the model's, at most {DEFAULT_MAX_MODEL_LEN})",
    )
    p.add_argument(
        "--model-name",
        default=None,
        help="the name clients pass as `model` (default: the checkpoint directory's name, else the preset)",
    )
    p.add_argument("--sampler", choices=("torch", "triton"), default=None, help="default: triton on CUDA")
    p.add_argument(
        "--semantics",
        default="nemo_ref",
        metavar="ENGINE",
        help="sample as this engine does: nemo_ref (default), vllm, hf, llama.cpp, ollama, sglang, tgi, "
        "mistral-inference, openai (its order, defaults, validation and logprobs; docs/probe.md)",
    )
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    add_model_args(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .app import create_app
    except ImportError as e:
        print(f"error: the server needs its extra: pip install 'nemo_ref[server]' ({e})", file=sys.stderr)
        return 2
    from ..cli import load_from_args
    from ..demo import DEFAULT_PRESET

    if args.max_batch < 1:
        print("error: --max-batch must be >= 1", file=sys.stderr)
        return 2
    if args.max_model_len is not None and args.max_model_len < 2:
        print("error: --max-model-len must be >= 2", file=sys.stderr)
        return 2
    if args.semantics != "nemo_ref":
        from .semantics import semantics_names

        if args.semantics not in semantics_names():
            print(f"error: --semantics must be one of {', '.join(semantics_names())}", file=sys.stderr)
            return 2
    name = args.model_name
    if name is None:
        name = Path(args.checkpoint).resolve().name if args.checkpoint else (args.preset or DEFAULT_PRESET)

    def loader():
        model, tokenizer, notice = load_from_args(args)
        if notice:
            print(notice, file=sys.stderr)
        return model, tokenizer, notice

    max_len = args.max_model_len if args.max_model_len is not None else DEFAULT_MAX_MODEL_LEN
    app = create_app(
        loader=loader,
        model_name=name,
        max_batch=args.max_batch,
        max_model_len=max_len,
        sampler=args.sampler,
        semantics=args.semantics,
    )
    print(
        f"nemo-ref serve: model {name!r} on http://{args.host}:{args.port}/v1 "
        f"(loading; /health answers 503 until ready)",
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
