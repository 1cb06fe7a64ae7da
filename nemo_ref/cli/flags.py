"""The flags several commands share and the loader they drive: the model's (``--checkpoint``,
``--preset``, ``--dtype``, ``--device``, ``--attn-backend``...: generate, serve, compare), the prompt's
(``--chat``, ``--system``: generate, compare) and the sampler's (``--sampler``: generate, serve).

The subcommand modules import this one (probe, which runs no model, does not); none imports another
subcommand or the package's ``main``. Torch is the only heavy import here; checkpoints, tokenizers and
the tensor-parallel machinery load when a command runs.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch

from ..backends import default_attn_backend
from ..demo import DEFAULT_PRESET
from ..model import ATTN_BACKENDS

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Where the model comes from: a checkpoint directory, else the embedded random-weight default."""
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", metavar="DIR", help="a published checkpoint directory (either layout)")
    g.add_argument(
        "--preset",
        default=None,
        help=f"random-weight model of a preset's shape, e.g. mistral-7b-v0.3 (default: {DEFAULT_PRESET})",
    )
    g.add_argument("--weights-seed", type=int, default=0, help="seed of the embedded random weights")
    g.add_argument("--dtype", choices=DTYPES, default=None, help="default: bf16 on CUDA, else fp32")
    g.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    g.add_argument("--attn-backend", choices=ATTN_BACKENDS, default=None, help="default: triton on CUDA")


def add_prompt_args(p: argparse.ArgumentParser) -> None:
    """``--chat`` and ``--system``: the prompt positional goes in as a user message (prompt_from_args)."""
    p.add_argument("--chat", action="store_true", help="send the prompt as a user chat message")
    p.add_argument("--system", default=None, help="a system prompt (implies --chat)")


def prompt_from_args(args: argparse.Namespace) -> str | list[dict[str, str]]:
    """The prompt as ``encode_prompt`` takes it: the text, or chat messages under --chat/--system."""
    if not (args.chat or args.system):
        return args.prompt
    system = [{"role": "system", "content": args.system}] if args.system else []
    return [*system, {"role": "user", "content": args.prompt}]


def logit_bias_item(text: str) -> tuple[int, float]:
    """One ``--logit-bias`` item, ``ID=BIAS`` (e.g. ``42=-5``): (token id, bias); ValueError if it is
    not one. Each command words its own error (generate exits with it, compare through argparse)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"no '=' in {text!r}")
    return int(key), float(value)


def add_sampler_arg(p: argparse.ArgumentParser) -> None:
    """``--sampler``: None leaves the choice to the engine (backends.default_sampler)."""
    p.add_argument("--sampler", choices=("torch", "triton"), default=None, help="default: triton on CUDA")


def device_from_args(args: argparse.Namespace) -> str:
    """The device ``--device`` names (default: cuda if available, else cpu), checked before anything
    is built: ValueError naming the flag if torch cannot use that device here, or if ``--attn-backend
    triton`` / ``--sampler triton`` asks for the kernels off CUDA (there they run only in Triton's
    interpreter, TRITON_INTERPRET=1, as the tests run them)."""
    cuda = torch.cuda.is_available()
    device = args.device or ("cuda" if cuda else "cpu")
    try:
        where = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"--device {device!r} is not a device: {e}") from None
    if where.type == "cuda" and not cuda:
        raise ValueError(f"--device {device}: CUDA is not available here; use --device cpu")
    if where.type == "cuda" and where.index is not None and where.index >= torch.cuda.device_count():
        raise ValueError(
            f"--device {device}: the CUDA device index must be in [0, {torch.cuda.device_count()})"
        )
    if where.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        for flag in ("attn_backend", "sampler"):
            if getattr(args, flag, None) == "triton":
                raise ValueError(
                    f"--{flag.replace('_', '-')} triton needs a CUDA device; on {where.type} the kernels "
                    "run only in Triton's interpreter (set TRITON_INTERPRET=1)"
                )
    return device


def model_from_args(args: argparse.Namespace) -> tuple[Any, str | None]:
    """(model, random-weights notice or None); under torchrun, this rank's shard (tp.py). A bad
    device, preset or checkpoint raises ValueError (ConfigError, CheckpointError) naming it."""
    import torch.distributed as dist

    from ..demo import embedded_model, notice

    tp = dist.is_available() and dist.is_initialized()
    device = device_from_args(args)
    if tp and device == "cuda":
        device = f"cuda:{torch.cuda.current_device()}"  # init_from_env set LOCAL_RANK's device
    dtype = (
        DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    )
    backend = args.attn_backend or default_attn_backend(device)
    if args.checkpoint:
        if tp:
            from ..tp_load import load_model_tp as load_model
        else:
            from ..checkpoint import load_model

        model = load_model(args.checkpoint, dtype=dtype, device=device, attn_backend=backend)
        warning = None
        if model.random_weights:
            warning = f"NOTE: random weights (checkpoint {args.checkpoint} was made by make-checkpoint)."
        return model, warning
    preset = args.preset or DEFAULT_PRESET
    model = embedded_model(preset, args.weights_seed, dtype=dtype, device=device, attn_backend=backend)
    if tp:
        from ..tp import shard_model

        model = shard_model(model)
    return model, notice(preset, args.weights_seed)


def load_from_args(args: argparse.Namespace) -> tuple[Any, Any, str | None]:
    """(model, tokenizer, random-weights notice or None); under torchrun, rank 0's TPDriver. A bad
    preset, checkpoint or tokenizer raises ValueError (ConfigError, CheckpointError) naming it.

    The tokenizer is the checkpoint's own file, else the one mistral-common bundles for the model's
    vocabulary (Tekken for Nemo's 131072 ids, SentencePiece v3 for 32768, v1 for 32000).
    """
    from ..tokenizer import load_tokenizer

    model, warning = model_from_args(args)
    if args.checkpoint:
        tokenizer = load_tokenizer(args.checkpoint, vocab_size=model.args.vocab_size)
    else:
        tokenizer = load_tokenizer(vocab_size=model.args.vocab_size)
    if tokenizer.vocab_size != model.args.vocab_size:
        raise ValueError(
            f"the tokenizer ({tokenizer.describe()}, {tokenizer.path}) does not match the "
            f"model's vocabulary of {model.args.vocab_size} ids"
        )
    if getattr(model, "tp", None) is not None:  # the other ranks run each call too (tp_driver.py)
        from ..tp_driver import TPDriver, exit_on_failure

        model = TPDriver(model, on_failure=exit_on_failure)
    return model, tokenizer, warning
