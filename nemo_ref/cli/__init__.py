"""The ``nemo-ref`` command: ``main()`` parses the command line and dispatches to a subcommand.

One module a subcommand (or a family of them), each with ``add_commands(subparsers)`` (its flags)
and the handler those flags lead to; a handler imports what it runs (the model, the server, httpx)
when it runs, so ``nemo-ref --help`` costs little more than ``import nemo_ref`` (torch)::

    flags.py       the flags several commands share (--checkpoint, --preset, --dtype, --device,
                   --attn-backend, --chat, --sampler...) and the loader that turns them into a
                   model and a tokenizer
    generate.py    nemo-ref generate
    checkpoint.py  nemo-ref make-checkpoint, convert, inspect
    serve.py       nemo-ref serve         (the server itself: nemo_ref/server/)
    compare.py     nemo-ref compare       (the comparison itself: nemo_ref/compare.py)
    probe.py       nemo-ref probe         (the probe itself: nemo_ref/probe/)

The same command is ``python -m nemo_ref.cli`` and ``python -m nemo_ref``; torchrun starts the
latter on every rank (tensor parallelism, nemo_ref/tp_driver.py).
"""

from __future__ import annotations

import argparse

from . import checkpoint, compare, generate, probe, serve

DESCRIPTION = (
    "The nemo-ref command: generate, serve, compare, probe, and the checkpoint tools (make-checkpoint, "
    "convert, inspect)."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nemo-ref", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (generate, checkpoint, serve, compare, probe):  # the order of `nemo-ref --help`
        command.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` (default: sys.argv) describes; returns its exit status."""
    args = build_parser().parse_args(argv)
    from ..tp import env_world_size

    if env_world_size() > 1:  # started by torchrun: tensor-parallel over its ranks
        from ..tp_driver import run_torchrun
        from .flags import model_from_args

        return run_torchrun(args, model_from_args)
    return int(args.func(args) or 0)
