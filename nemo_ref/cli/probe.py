"""``nemo-ref probe``: the command over nemo_ref/probe/ (docs/probe.md); httpx is imported when it runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..probe import TESTS

HELP = "find out what an OpenAI-compatible endpoint does with each sampling field"
DESCRIPTION = """\
Probe an endpoint's sampling semantics from requests alone and rank the known engines (nemo_ref,
vLLM, transformers, llama.cpp, Ollama, SGLang, TGI, ...) by how well they explain its answers. Every
request counts against --budget; the probe never exceeds it."""


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("probe", help=HELP, description=DESCRIPTION)
    p.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", required=True, help="the model name the endpoint expects")
    p.add_argument("--budget", type=int, default=300, help="maximum HTTP requests, retries included")
    p.add_argument(
        "--api-key-env", default=None, metavar="VAR", help="environment variable holding the API key"
    )
    p.add_argument(
        "--extra-body",
        default=None,
        metavar="JSON",
        help="fields added to every request (e.g. a provider pin)",
    )
    p.add_argument(
        "--only", default=None, metavar="TESTS", help=f"comma-separated subset of: {','.join(TESTS)}"
    )
    p.add_argument("--json", default=None, metavar="FILE", help="write the report as JSON")
    p.add_argument(
        "--chat", action="store_true", help="use /v1/chat/completions even if /v1/completions exists"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _progress_bar():
    state = {"last": ""}

    def show(what: str, done: int, total: int) -> None:
        width = 30
        filled = min(width, int(width * done / max(total, 1)))
        line = f"\r[{'#' * filled}{'.' * (width - filled)}] {what} {done}/{total}"
        if line != state["last"]:
            sys.stderr.write(line)
            sys.stderr.flush()
            state["last"] = line

    return show


def run(args: argparse.Namespace) -> int:
    try:
        import httpx  # noqa: F401
    except ImportError:
        print("error: the probe needs httpx: pip install 'nemo_ref[probe]'", file=sys.stderr)
        return 2
    from ..probe import probe
    from ..probe.report import print_table

    if args.budget < 10:
        print("error: --budget must be >= 10 requests", file=sys.stderr)
        return 2
    extra = {}
    if args.extra_body:
        try:
            extra = json.loads(args.extra_body)
        except ValueError as e:
            print(f"error: --extra-body is not valid JSON: {e}", file=sys.stderr)
            return 2
        if not isinstance(extra, dict):
            print("error: --extra-body must be a JSON object", file=sys.stderr)
            return 2
    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            print(f"error: the environment variable {args.api_key_env} is not set", file=sys.stderr)
            return 2
    only = TESTS
    if args.only:
        only = tuple(t.strip() for t in args.only.split(",") if t.strip())
        bad = [t for t in only if t not in TESTS]
        if bad:
            print(f"error: unknown tests {bad}; valid: {', '.join(TESTS)}", file=sys.stderr)
            return 2
    data = probe(
        args.base_url,
        args.model,
        budget=args.budget,
        api_key=key,
        extra_body=extra,
        only=only,
        force_chat=args.chat,
        progress=None if args.quiet else _progress_bar(),
    )
    if not args.quiet:
        sys.stderr.write("\n")
    print_table(data)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1, default=str)
    return 0
