"""``nemo-ref serve``: the OpenAI-compatible server of nemo_ref/server/ (docs/serving.md).

fastapi and uvicorn are imported only when the command runs, so ``nemo-ref --help`` and the other
commands work without the [server] extra.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..engine import PREFILL_CHUNK
from ..sampling.engines import registry
from .flags import add_model_args, add_sampler_arg, device_from_args, load_from_args

DEFAULT_MAX_MODEL_LEN = 8192  # KV cache rows x this many positions are allocated up front
API_KEY_ENV = "NEMO_REF_API_KEY"

HELP = "OpenAI-compatible HTTP server (embedded random-weight model unless --checkpoint)"
DESCRIPTION = """\
Serve /v1/chat/completions, /v1/completions, /v1/models, /health, /tokenize and /detokenize with
continuous batching. Without --checkpoint the model has random weights: every response says so
(header x-nemo-ref-weights: random)."""


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help=HELP, description=DESCRIPTION)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=8, help="KV-cache rows: sequences decoded together")
    p.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help="positions per sequence, prompt + completion (default: the model's max_positions, its trained "
        f"context or longer under a RoPE scaling, at most {DEFAULT_MAX_MODEL_LEN})",
    )
    p.add_argument(
        "--model-name",
        default=None,
        help="the name clients pass as `model` (default: the checkpoint directory's name, else the preset)",
    )
    add_sampler_arg(p)
    p.add_argument(
        "--prefill-chunk",
        type=int,
        default=None,
        help=f"prompt tokens prefilled per engine step, between decode steps (default: {PREFILL_CHUNK})",
    )
    p.add_argument(
        "--semantics",
        default="nemo_ref",
        metavar="ENGINE",
        help=f"sample as this engine does, one of: {', '.join(registry.names())} (default: nemo_ref); its "
        "order, defaults, validation and logprobs (docs/probe.md)",
    )
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    _add_limit_args(p)
    add_model_args(p)
    p.set_defaults(func=run)


def _add_limit_args(p: argparse.ArgumentParser) -> None:
    from ..server.limits import (
        DEFAULT_LIMIT_CONCURRENCY,
        DEFAULT_MAX_CONNECTIONS,
        DEFAULT_MAX_QUEUE,
        DEFAULT_MAX_REQUEST_BYTES,
        DEFAULT_MAX_REQUEST_TOKENS,
        HEADER_TIMEOUT_S,
    )

    g = p.add_argument_group("exposure and limits (docs/serving.md)")
    g.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' on every route but /health (default: ${API_KEY_ENV}, else none)",
    )
    g.add_argument(
        "--allowed-hosts",
        default=None,
        help="comma-separated Host names the server answers to (against DNS rebinding; default: any)",
    )
    g.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES, help="413 beyond")
    g.add_argument(
        "--max-queue", type=int, default=DEFAULT_MAX_QUEUE, help="requests waiting for rows; 429 beyond"
    )
    g.add_argument(
        "--max-request-tokens",
        type=int,
        default=DEFAULT_MAX_REQUEST_TOKENS,
        help="n x max_tokens of one request",
    )
    g.add_argument("--limit-concurrency", type=int, default=DEFAULT_LIMIT_CONCURRENCY, help="503 beyond")
    g.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, help="closed beyond")
    g.add_argument(
        "--header-timeout", type=float, default=HEADER_TIMEOUT_S, help="seconds to send a request's headers"
    )


def _check(args: argparse.Namespace) -> None:
    """ValueError naming the flag and its range, for a flag the server would trip over later."""
    for flag, value, least in (
        ("--max-batch", args.max_batch, 1),
        ("--prefill-chunk", args.prefill_chunk, 1),
        ("--max-model-len", args.max_model_len, 2),
    ):
        if value is not None and value < least:
            raise ValueError(f"{flag} must be >= {least}")
    if not 0 <= args.port <= 65535:
        raise ValueError("--port must be in [0, 65535]")
    device_from_args(args)  # the model loads in the background: a bad device is refused here


# Limits' own fields, by flag name; the connection caps beside them go to uvicorn (connections.py).
LIMIT_FLAGS = ("max_request_bytes", "max_queue", "max_request_tokens")
CONNECTION_FLAGS = ("limit_concurrency", "max_connections")


def _limits(args: argparse.Namespace) -> Any:
    """The server's Limits from the flags; ValueError naming the flag and its range if one is bad."""
    from ..server.limits import Limits

    for name in (*LIMIT_FLAGS, *CONNECTION_FLAGS):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.header_timeout <= 0:
        raise ValueError("--header-timeout must be > 0")
    key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    hosts = (
        tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip()) if args.allowed_hosts else None
    )
    return Limits(**{name: getattr(args, name) for name in LIMIT_FLAGS}, api_key=key, allowed_hosts=hosts)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..server.app import create_app
        from ..server.connections import uvicorn_config
    except ImportError as e:
        print(f"error: the server needs its extra: pip install 'nemo_ref[server]' ({e})", file=sys.stderr)
        return 2
    from ..demo import DEFAULT_PRESET

    try:
        _check(args)
        limits = _limits(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.semantics != "nemo_ref":
        from ..server.semantics import semantics_names

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

    failed: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_load_error(e: BaseException) -> None:  # the loader's thread: stop the server, exit 1
        failed.append(e)
        print(f"error: the model failed to load: {type(e).__name__}: {e}", file=sys.stderr)
        if server is not None:
            server.should_exit = True

    max_len = args.max_model_len if args.max_model_len is not None else DEFAULT_MAX_MODEL_LEN
    app = create_app(
        loader=loader,
        on_load_error=on_load_error,
        model_name=name,
        max_batch=args.max_batch,
        max_model_len=max_len,
        sampler=args.sampler,
        limits=limits,
        prefill_chunk=args.prefill_chunk,
        semantics=args.semantics,
    )
    auth = "API key required" if limits.api_key else "no API key: anyone who can connect may use it"
    print(
        f"nemo-ref serve: model {name!r} on http://{args.host}:{args.port}/v1 "
        f"(loading; /health answers 503 until ready; {auth})",
        file=sys.stderr,
    )
    config = uvicorn_config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        header_timeout_s=args.header_timeout,
        max_connections=args.max_connections,
        limit_concurrency=args.limit_concurrency,
    )
    server = uvicorn.Server(config)
    server.run()
    return 1 if failed else 0
