"""Loading: a meta-device skeleton, then the tensors one at a time, each converted as it is read.

Peak host memory is the model plus at most one tensor (see the package docstring for the two read
paths, pread and mmap).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from ..backends import default_attn_backend
from ..model import AttnBackend, Transformer
from .files import _ST_FLOAT, CheckpointError, TensorInfo, _dtype_name
from .names import _heads_to_permute, unpermute_from_hf
from .plan import Layout, _listing, _meta_model, _plan

# ---- loading ---------------------------------------------------------------------------------


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load_model(
    path: str | Path,
    dtype: torch.dtype | None = torch.bfloat16,
    device: torch.device | str = "cpu",
    attn_backend: AttnBackend | None = None,
    *,
    layout: Layout | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Transformer:
    """Load a checkpoint directory in either published layout into a :class:`Transformer`.

    ``dtype``: the parameters' dtype (None: as stored, which must then be a single dtype).
    ``attn_backend``: "sdpa", "eager" or "triton" (default: triton on CUDA, sdpa elsewhere).
    ``layout``: force "mistral" or "hf" (default: :func:`detect_layout`).
    ``progress``: a tqdm bar on stderr, then one summary line (layout, parameters, dtype, seconds,
    GB/s) on stderr. ``log``: a callable that receives the summary line instead (given a ``log``,
    the line is emitted even with ``progress=False``).

    Raises :class:`CheckpointError` (a ValueError) naming the file or tensor when the checkpoint is
    incomplete, corrupt or disagrees with its config; this is decided before any data is read.
    """
    t0 = time.perf_counter()
    plan = _plan(path, layout)
    if dtype is None:
        if len(plan.dtypes) != 1:
            raise CheckpointError(
                f"{plan.path}: tensors are stored in several dtypes {dict(plan.dtypes)}; pass dtype="
            )
        dtype = _ST_FLOAT[next(iter(plan.dtypes))]
    if not dtype.is_floating_point:
        raise CheckpointError(f"dtype must be a floating-point dtype, got {dtype}")
    device = torch.device(device)
    args = plan.args

    if attn_backend is None:
        attn_backend = default_attn_backend(device)
    model = _meta_model(args, attn_backend=attn_backend, dtype=dtype)
    # In file order: sequential reads.
    order = sorted(plan.tensors.items(), key=lambda kv: (str(kv[1].file), kv[1].begin))
    bar = _progress_bar(plan.nbytes, f"loading {plan.layout}", progress)
    try:
        for name, info in order:
            tensor = _read_tensor(info, dtype, device)
            heads = _heads_to_permute(name, args) if plan.layout == "hf" else None
            if heads is not None:
                tensor = unpermute_from_hf(tensor, heads).contiguous()
            _set_parameter(model, name, tensor)
            bar.update(info.nbytes)
    finally:
        bar.close()
    if args.tied_embeddings:
        model.output.weight = model.tok_embeddings.weight
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:  # cannot happen after _plan; a guard against a model/planner mismatch
        raise CheckpointError(f"{plan.path}: parameters left unloaded: {_listing(leftover)}")
    model.eval()
    # Marked by make-checkpoint: the CLI and the server label everything made with these weights.
    model.random_weights = plan.metadata.get("nemo_ref.random_weights") == "true"

    seconds = time.perf_counter() - t0
    line = (
        f"loaded {plan.path} ({plan.layout} layout): {model.num_parameters():,} parameters, "
        f"{_dtype_name(dtype)} on {device}, {seconds:.2f} s, {plan.nbytes / 1e9 / max(seconds, 1e-9):.2f} GB/s"
    )
    if log is not None:
        log(line)
    elif progress:
        _stderr(line)
    return model


_PREAD: bool | None = None  # whether this safetensors has the pread backend (decided on first use)


def _read_tensor(info: TensorInfo, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """One tensor from its file as a tensor of its own (never a view of a file mapping)."""
    global _PREAD
    handle = None
    if _PREAD is not False:
        try:
            handle = safe_open(str(info.file), framework="pt", device="cpu", backend="pread")
            _PREAD = True
        except TypeError:  # safetensors < 0.8: no `backend` argument
            _PREAD = False
    if handle is None:
        handle = safe_open(str(info.file), framework="pt", device="cpu")
    with handle as f:
        # pread: fresh memory, copied only to convert or move. mmap: a view of the mapping, so
        # copied out before the mapping closes.
        return f.get_tensor(info.key).to(device=device, dtype=dtype, copy=not _PREAD)


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    setattr(module, leaf, nn.Parameter(tensor, requires_grad=False))


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr, leave=False)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass
