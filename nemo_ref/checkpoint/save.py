"""Saving in either layout, and converting between them, streaming one tensor at a time.

The writer below produces the safetensors format itself (header length, JSON header, raw bytes), so
saving a model in another dtype never materialises a second full copy.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import ModelArgs
from ..model import Transformer
from .files import _ST_ITEMSIZE, _TORCH_TO_ST, CheckpointError, _dtype_name
from .load import load_model
from .names import _heads_to_permute, mistral_to_hf_name, permute_for_hf
from .plan import (
    HF_CONFIG,
    HF_INDEX,
    HF_SHARD_RE,
    HF_SINGLE,
    LAYOUTS,
    MISTRAL_CONFIG,
    MISTRAL_WEIGHTS,
    Layout,
    _plan,
)

DEFAULT_MAX_SHARD_BYTES = 5_000_000_000  # transformers' default "5GB"


# ---- saving ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """A tensor to write: its name in the file, and the heads to permute its rows by (HF q/k)."""

    key: str
    tensor: torch.Tensor
    permute_heads: int | None = None

    def prepared(self, dtype: torch.dtype | None) -> torch.Tensor:
        t = self.tensor.detach().to(device="cpu", dtype=dtype or self.tensor.dtype)
        if self.permute_heads is not None:
            t = permute_for_hf(t, self.permute_heads)
        return t.contiguous()


def _write_safetensors(
    path: Path, entries: list[_Entry], dtype: torch.dtype | None, metadata: dict[str, str]
) -> int:
    """Stream ``entries`` into a safetensors file, converting each only as it is written.

    Written to ``path.tmp`` and renamed at the end, so an interrupted save leaves no file under the
    final name. Returns the bytes of tensor data written.
    """
    if sys.byteorder != "little":  # safetensors is little-endian; tensors are written as in memory
        raise CheckpointError("saving is only supported on little-endian machines")
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for e in entries:
        st_dtype = _TORCH_TO_ST[dtype or e.tensor.dtype]
        nbytes = e.tensor.numel() * _ST_ITEMSIZE[st_dtype]
        header[e.key] = {
            "dtype": st_dtype,
            "shape": list(e.tensor.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to a multiple of 8 with spaces
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for e in entries:
            f.write(e.prepared(dtype).reshape(-1).view(torch.uint8).numpy().data)
    os.replace(tmp, path)
    return offset


def _shards(entries: list[_Entry], dtype: torch.dtype | None, max_bytes: int) -> list[list[_Entry]]:
    """Consecutive groups of at most ``max_bytes`` (a larger tensor gets a shard of its own)."""
    shards: list[list[_Entry]] = [[]]
    size = 0
    for e in entries:
        nbytes = e.tensor.numel() * (dtype or e.tensor.dtype).itemsize
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += nbytes
    return shards


def save_checkpoint(
    model: Transformer,
    out_dir: str | Path,
    layout: Layout = "mistral",
    dtype: torch.dtype | None = torch.bfloat16,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    tokenizer: str | Path | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` as a checkpoint directory in a published layout; returns ``out_dir``.

    * ``"mistral"``: ``params.json`` + ``consolidated.safetensors`` (the model's own names).
    * ``"hf"``: ``config.json``, ``generation_config.json``, ``model-0000N-of-0000M.safetensors``
      shards of at most ``max_shard_bytes`` each (one tensor larger than that gets a shard alone)
      and ``model.safetensors.index.json`` (``metadata.total_size``, ``weight_map``); HF names, q/k
      rows permuted to the rotate-half convention. Stale shards of an earlier save are removed.

    ``dtype``: the stored dtype (None: the model's). ``tokenizer``: a tokenizer file to copy alongside
    (as ``tekken.json``, or ``tokenizer.model.vN`` for SentencePiece). ``metadata``: extra string pairs for every safetensors header, next to
    ``{"format": "pt"}``.
    """
    if layout not in LAYOUTS:
        raise CheckpointError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if dtype is not None and dtype not in _TORCH_TO_ST:
        raise CheckpointError(f"dtype must be one of {list(_TORCH_TO_ST)}, got {dtype}")
    if max_shard_bytes < 1:
        raise CheckpointError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    # The model's unique parameters, in mistral names (a tied output is the embedding: not stored).
    items = [(name, p.detach()) for name, p in model.named_parameters()]
    if any(t.is_meta for _, t in items):
        raise CheckpointError(
            "the model is on the meta device (no weights to save); load or initialise it first"
        )
    bad = {str(t.dtype) for _, t in items if t.dtype not in _TORCH_TO_ST}
    if dtype is None and bad:
        raise CheckpointError(f"cannot store parameters of dtype {sorted(bad)}; pass dtype=")
    meta = {"format": "pt"}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise CheckpointError(f"metadata must map strings to strings, got {k!r}: {v!r}")
        meta[k] = v
    if tokenizer is not None and not Path(tokenizer).is_file():
        raise CheckpointError(f"tokenizer file {str(tokenizer)!r} not found")

    args: ModelArgs = model.args
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stored = dtype or items[0][1].dtype
    if layout == "mistral":
        _write_safetensors(out / MISTRAL_WEIGHTS, [_Entry(n, t) for n, t in items], dtype, meta)
        (out / MISTRAL_CONFIG).write_text(json.dumps(args.to_params_json(), indent=2) + "\n")
    else:
        entries = [_Entry(mistral_to_hf_name(n), t, _heads_to_permute(n, args)) for n, t in items]
        shards = _shards(entries, dtype, max_shard_bytes)
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        for stale in out.iterdir():
            if (HF_SHARD_RE.fullmatch(stale.name) and stale.name not in names) or stale.name == HF_SINGLE:
                stale.unlink()
        weight_map, total = {}, 0
        for fname, shard in zip(names, shards, strict=True):
            total += _write_safetensors(out / fname, shard, dtype, meta)
            weight_map.update({e.key: fname for e in shard})
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / HF_INDEX).write_text(json.dumps(index, indent=2) + "\n")
        config = args.to_hf_config(torch_dtype=_dtype_name(stored))
        (out / HF_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        generation = {"bos_token_id": 1, "eos_token_id": 2}
        (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    if tokenizer is not None:
        from ..tokenizer import checkpoint_tokenizer_name

        dest = out / checkpoint_tokenizer_name(tokenizer)
        if Path(tokenizer).resolve() != dest.resolve():
            shutil.copyfile(tokenizer, dest)
    return out


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    layout: Layout,
    dtype: torch.dtype | None = None,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Re-write the checkpoint ``src`` in ``layout`` under ``dst`` (lossless with ``dtype=None``).

    Carries along the tokenizer file, ``README.txt`` and the safetensors metadata (e.g. the
    random-weights mark), except ``format``.
    """
    src, dst = Path(src), Path(dst)
    metadata = {k: v for k, v in _plan(src).metadata.items() if k != "format"}
    model = load_model(src, dtype=dtype, progress=progress, log=log)
    from ..tokenizer import find_tokenizer_file

    tok = find_tokenizer_file(src)
    out = save_checkpoint(
        model,
        dst,
        layout,
        dtype=None,
        max_shard_bytes=max_shard_bytes,
        tokenizer=tok,
        metadata=metadata,
    )
    readme = src / "README.txt"
    if readme.is_file() and readme.resolve() != (dst / "README.txt").resolve():
        shutil.copyfile(readme, dst / "README.txt")
    return out
