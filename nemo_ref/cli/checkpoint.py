"""``nemo-ref make-checkpoint``, ``convert``, ``inspect``: the checkpoint tools.

Each handler takes the parsed ``argparse.Namespace`` and returns the exit status (0 on success, 1
with one ``nemo-ref COMMAND: error:`` line on stderr for a bad checkpoint or config). The file
formats themselves are nemo_ref/checkpoint/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..checkpoint import (
    DEFAULT_MAX_SHARD_BYTES,
    LAYOUTS,
    CheckpointError,
    convert_checkpoint,
    inspect_checkpoint,
    save_checkpoint,
)
from ..config import PRESETS, ConfigError, ModelArgs, RopeScaling
from ..family import bundled_tokenizer_for_vocab, describe, identify
from .flags import DTYPES as MODEL_DTYPES

DTYPES = {name: MODEL_DTYPES[name] for name in ("bf16", "fp32")}  # how a checkpoint may store weights
RANDOM_README = """\
RANDOM WEIGHTS -- this is not a trained model.

This checkpoint was written by `nemo-ref make-checkpoint --preset {preset} --seed {seed} --dtype {dtype}`:
the architecture of preset {preset!r} ({params:,} parameters) with weights drawn at random
(Transformer.init_random(seed={seed}): normal(0, 0.02), norms 1). Its text is noise. It exists to
test loaders, converters and kernels on the published file layout ({layout}).
The safetensors metadata carries the same mark: "nemo_ref.random_weights": "true".
"""


def add_commands(subparsers: Any) -> None:
    """Add ``make-checkpoint``, ``convert`` and ``inspect`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "make-checkpoint",
        help="write a RANDOM-weight checkpoint of a preset in a published layout",
        description="Write a checkpoint with random weights (clearly marked as such) for a preset, in "
        "the mistral (params.json + consolidated.safetensors) or HF (config.json + shards) layout.",
    )
    p.add_argument("--preset", required=True, choices=list(PRESETS), help="model shape")
    p.add_argument("--layout", choices=LAYOUTS, default="mistral", help="default: mistral")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.add_argument("--dtype", choices=DTYPES, default="bf16", help="stored dtype (default bf16)")
    _add_write_args(p)
    p.set_defaults(func=cmd_make_checkpoint)

    p = subparsers.add_parser(
        "convert",
        help="convert a checkpoint between the mistral and HF layouts (lossless)",
        description="Re-write a checkpoint in the other published layout. The weights are copied "
        "exactly (the q/k permutation is a pure reordering); the tokenizer file, README.txt and the "
        "random-weights mark come along.",
    )
    p.add_argument("src", type=Path, metavar="DIR", help="checkpoint directory (either layout)")
    p.add_argument("--to", required=True, choices=LAYOUTS, dest="layout", help="target layout")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    p.add_argument(
        "--dtype", choices=("keep", *DTYPES), default="keep", help="stored dtype (default: keep the source's)"
    )
    _add_write_args(p, tokenizer=False)
    p.set_defaults(func=cmd_convert)

    p = subparsers.add_parser(
        "inspect",
        help="describe and validate a checkpoint without loading it",
        description="Layout, config, parameter count, dtypes and bytes of a checkpoint directory. "
        "Runs the loader's validation (headers, names, shapes, dtypes) without reading tensor data.",
    )
    p.add_argument("path", type=Path, metavar="DIR", help="checkpoint directory (either layout)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_inspect)


def _add_write_args(p: argparse.ArgumentParser, tokenizer: bool = True) -> None:
    p.add_argument(
        "--max-shard-bytes",
        type=int,
        default=DEFAULT_MAX_SHARD_BYTES,
        metavar="N",
        help=f"HF layout: bound on each shard's size (default {DEFAULT_MAX_SHARD_BYTES:,})",
    )
    if tokenizer:
        p.add_argument(
            "--tokenizer",
            type=Path,
            metavar="FILE",
            help="a tokenizer file to copy alongside (tekken*.json -> tekken.json, *.model.vN -> "
            "tokenizer.model.vN), or 'bundled': the one mistral-common ships for the preset's vocabulary",
        )
    p.add_argument("--force", action="store_true", help="write into a non-empty output directory")


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise CheckpointError(f"--out {out} is not empty (pass --force to write into it)")


def _fail(command: str, e: Exception) -> int:
    print(f"nemo-ref {command}: error: {e}", file=sys.stderr)
    return 1


def cmd_make_checkpoint(args: argparse.Namespace) -> int:
    try:
        _check_out(args.out, args.force)
        model_args = ModelArgs.preset(args.preset)
        dtype = DTYPES[args.dtype]
        from ..model import Transformer

        model = Transformer(model_args, dtype=dtype).init_random(args.seed)
        metadata = {
            "nemo_ref.random_weights": "true",
            "nemo_ref.preset": args.preset,
            "nemo_ref.seed": str(args.seed),
        }
        save_checkpoint(
            model,
            args.out,
            args.layout,
            dtype=dtype,
            max_shard_bytes=args.max_shard_bytes,
            tokenizer=_tokenizer_file(args.tokenizer, model_args.vocab_size),
            metadata=metadata,
        )
        readme = RANDOM_README.format(
            preset=args.preset,
            seed=args.seed,
            dtype=args.dtype,
            params=model.num_parameters(),
            layout=args.layout,
        )
        (args.out / "README.txt").write_text(readme)
    except (CheckpointError, ConfigError) as e:
        return _fail("make-checkpoint", e)
    print(
        f"wrote {args.out} ({args.layout} layout, {args.dtype}): preset {args.preset}, "
        f"{model.num_parameters():,} parameters, RANDOM weights (seed {args.seed}) -- not a trained model"
    )
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    try:
        if args.out.resolve() != args.src.resolve():
            _check_out(args.out, args.force)
        elif not args.force:
            raise CheckpointError(
                f"--out is the source directory {args.src} (pass --force to add the layout there)"
            )
        dtype = None if args.dtype == "keep" else DTYPES[args.dtype]
        convert_checkpoint(args.src, args.out, args.layout, dtype=dtype, max_shard_bytes=args.max_shard_bytes)
        info = inspect_checkpoint(args.out, layout=args.layout)
    except (CheckpointError, ConfigError) as e:
        return _fail("convert", e)
    random = " (RANDOM weights)" if info["random_weights"] else ""
    print(
        f"wrote {args.out} ({args.layout} layout): {info['parameters']:,} parameters, "
        f"{_dtypes(info)}, {info['bytes'] / 1e9:.3f} GB in {len(info['files'])} file(s){random}"
    )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        info = inspect_checkpoint(args.path)
    except (CheckpointError, ConfigError) as e:
        return _fail("inspect", e)
    model_args = _model_args(info["config"])
    info["family"] = identify(model_args)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    c = info["config"]
    rope = c["rope_scaling"]
    rope_desc = rope["rope_type"] + "".join(
        f" {k}={v}" for k, v in rope.items() if k != "rope_type" and v is not None
    )
    if c["llama4_beta"] is not None:
        rope_desc += f", llama_4 q-scaling beta={c['llama4_beta']} original={c['llama4_original_max']}"
    meta = info["metadata"]
    rows = [
        ("path", info["path"]),
        ("layout", f"{info['layout']} ({info['config_file']})"),
        (
            "weights",
            f"RANDOM (make-checkpoint --preset {meta.get('nemo_ref.preset', '?')} "
            f"--seed {meta.get('nemo_ref.seed', '?')}): not a trained model"
            if info["random_weights"]
            else "from the checkpoint",
        ),
        ("family", describe(model_args)),
        ("parameters", f"{info['parameters']:,} in {info['tensors']} tensors"),
        ("dtype", _dtypes(info)),
        (
            "bytes",
            f"{info['bytes']:,} of tensor data ({info['bytes'] / 1e9:.3f} GB) in {len(info['files'])} "
            f"file(s), {info['file_bytes']:,} on disk",
        ),
        (
            "model",
            f"dim {c['dim']}, {c['n_layers']} layers, {c['n_heads']} heads of {c['head_dim']} over "
            f"{c['n_kv_heads']} KV heads, hidden {c['hidden_dim']}, vocab {c['vocab_size']}",
        ),
        (
            "",
            f"norm_eps {c['norm_eps']}, rope_theta {c['rope_theta']:g}, max_seq_len {c['max_seq_len']}, "
            f"rope {rope_desc}, tied embeddings {c['tied_embeddings']}"
            + (f", sliding window {c['sliding_window']}" if c["sliding_window"] else ""),
        ),
        (
            "tokenizer",
            info["tokenizer_file"] or _bundled_note(c["vocab_size"]),
        ),
    ]
    for key, value in rows:
        print(f"{key:<11} {value}")
    return 0


def _tokenizer_file(arg: Path | None, vocab_size: int) -> Path | None:
    """--tokenizer FILE, or "bundled": the file mistral-common ships for this vocabulary."""
    if arg is None or str(arg) != "bundled":
        return arg
    name = bundled_tokenizer_for_vocab(vocab_size)
    if name is None:
        raise CheckpointError(
            f"--tokenizer bundled: mistral-common bundles no tokenizer with {vocab_size} ids"
        )
    from ..tokenizer import bundled_path

    return bundled_path(name)


def _bundled_note(vocab_size: int) -> str:
    name = bundled_tokenizer_for_vocab(vocab_size)
    if name is None:
        return f"none here, and mistral-common bundles none with {vocab_size} ids"
    return f"none here (the bundled {name} is used)"


def _model_args(config: dict[str, Any]) -> ModelArgs:
    """The ModelArgs back from inspect's JSON-ready ``config`` dict."""
    return ModelArgs(**{**config, "rope_scaling": RopeScaling(**config["rope_scaling"])})


def _dtypes(info: dict[str, Any]) -> str:
    return ", ".join(f"{d} x{n}" if len(info["dtypes"]) > 1 else d for d, n in info["dtypes"].items())
