"""How the attention kernels are launched: tiles, stages, decode splits, and the checks before a launch.

Plain Python, no kernel: the launchers in ``attention.py`` ask this module how to size a launch
(``prefill_config``, ``decode_config``; the decode split rule ``decode_max_splits`` /
``decode_split_len``), check it against sm_90's shared memory before Triton would fail with an
opaque error, and check the caller's tensors (``check_inputs``). ``python -m
nemo_ref.kernels._compile`` and ``tests/kernels/test_compile.py`` hold these figures against the
compiled kernels.
"""

from __future__ import annotations

import torch
import triton

SM90_MAX_SHARED = 232_448  # bytes of shared memory one block may use on sm_90 (H100/H200)
HEAD_DIMS = (16, 32, 64, 128, 256)
NO_WINDOW = 2**30  # a window longer than any cache: plain causal attention

DECODE_BLOCK_N = 64
DECODE_NUM_WARPS = 4
DECODE_NUM_STAGES = 3
COMBINE_BLOCK_S = 16  # fixed, not sized to the launch: the combine's sums stay batch-invariant
# Decode split programs one SM holds at once (bf16, D 128, the defaults): shared memory allows
# 3 (71680 B each of sm_90's 233472 B per SM); registers would allow 5 (88 x 128 threads of
# 65536). tests/kernels/test_compile.py checks this against the compiled kernel.
DECODE_PROGRAMS_PER_SM = 3
# Keys per split at least: below this the partial outputs (GROUP x (D + 1) float32 per split)
# stop being negligible next to the split's K/V (256 keys x D x 2 x 2 B = 64x the partials at
# GROUP 4), and the combine's work grows for nothing.
MIN_SPLIT_LEN = 256


# ---- tiles and shared memory ------------------------------------------------------------------


def precision(fp32: bool) -> str:
    """``tl.dot`` input precision. float32 gets ``tf32x3`` (three tf32 products: float32
    accuracy on the tensor cores; exact IEEE products spill badly); 16-bit operands ignore it."""
    return "tf32x3" if fp32 else "tf32"


def prefill_shared_bytes(block_m: int, block_n: int, stages: int, head_dim: int, itemsize: int) -> int:
    """Shared memory of a prefill tile configuration: ``stages`` buffers of K and V tiles and the
    Q tile. Exact for 16-bit operands on sm_90 (the compile report's 131072 B at 128x64, D 128,
    3 stages), an upper bound for float32."""
    return (stages * 2 * block_n + block_m) * head_dim * itemsize


def decode_shared_bytes(block_n: int, stages: int, head_dim: int, itemsize: int) -> int:
    """Upper bound of the decode split kernel's shared memory (``stages`` K and V tiles and the
    16-row query tile; the compile report's 71680 B for bf16, D 128, 64-key tiles, 3 stages)."""
    return (stages * 2 * block_n + 16) * head_dim * itemsize


def prefill_config(fp32: bool, head_dim: int = 128) -> tuple[int, int, int, int]:
    """Default ``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` of the prefill kernel.

    16-bit, head_dim <= 128: 128 x 64 tiles, 8 warps, 3 stages (131072 B of shared memory at 128);
    head_dim 256 would need 262144 B there (sm_90 allows 232448), so it takes 64 x 64 and 2 stages
    (163840 B). float32 (a test and reference path): 32 x 32, 4 warps, 2 stages, and 16 x 32 at 256.
    """
    if fp32:
        return (32, 32, 4, 2) if head_dim <= 128 else (16, 32, 4, 2)
    return (128, 64, 8, 3) if head_dim <= 128 else (64, 64, 8, 2)


def decode_config(fp32: bool, head_dim: int = 128) -> tuple[int, int, int]:
    """Default ``(BLOCK_N, num_warps, num_stages)`` of the decode split kernel: 64-key tiles,
    4 warps, 3 stages, fewer stages and keys where that would not fit sm_90's shared memory."""
    itemsize = 4 if fp32 else 2
    for block_n, stages in ((DECODE_BLOCK_N, DECODE_NUM_STAGES), (32, 3), (32, 2), (16, 2)):
        if decode_shared_bytes(block_n, stages, head_dim, itemsize) <= SM90_MAX_SHARED:
            return block_n, DECODE_NUM_WARPS, stages
    raise AssertionError("unreachable: head_dim is at most 256")


def prefill_tiles(
    head_dim: int, itemsize: int, *, block_m: int | None, block_n: int | None,
    num_warps: int | None, num_stages: int | None,
) -> tuple[int, int, int, int]:  # fmt: skip
    """A prefill launch's ``(BLOCK_M, BLOCK_N, num_warps, num_stages)``: the caller's, else the
    defaults of ``prefill_config``; checked against ``tl.dot`` and sm_90's shared memory."""
    default_m, default_n, default_warps, default_stages = prefill_config(itemsize == 4, head_dim)
    block_m, block_n = block_m or default_m, block_n or default_n
    num_warps, num_stages = num_warps or default_warps, num_stages or default_stages
    check_tile("block_m", block_m)
    check_tile("block_n", block_n)
    check_shared(
        f"prefill {block_m}x{block_n}, head_dim {head_dim}, {num_stages} stages",
        prefill_shared_bytes(block_m, block_n, num_stages, head_dim, itemsize),
    )
    return block_m, block_n, num_warps, num_stages


def decode_tiles(
    head_dim: int, itemsize: int, *, block_n: int | None, num_warps: int | None, num_stages: int | None
) -> tuple[int, int, int]:
    """A decode split launch's ``(BLOCK_N, num_warps, num_stages)``, as ``prefill_tiles``."""
    default_n, default_warps, default_stages = decode_config(itemsize == 4, head_dim)
    block_n, num_warps, num_stages = (
        block_n or default_n,
        num_warps or default_warps,
        num_stages or default_stages,
    )
    check_tile("block_n", block_n)
    check_shared(
        f"decode {block_n}-key tiles, head_dim {head_dim}, {num_stages} stages",
        decode_shared_bytes(block_n, num_stages, head_dim, itemsize),
    )
    return block_n, num_warps, num_stages


# ---- decode splits --------------------------------------------------------------------------------


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device``; 1 in the interpreter (programs run one after
    another there, so fewer is faster)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def decode_max_splits(Hkv: int, num_sms: int) -> int:
    """Splits per row: a single row alone fills every SM with ``DECODE_PROGRAMS_PER_SM`` programs.

    Independent of the batch (a batch only adds programs), so a row is cut the same way whatever
    shares its step: batch-1 Nemo (8 KV heads) on a 132-SM H100: 50 splits, 400 programs.
    """
    return max(1, triton.cdiv(DECODE_PROGRAMS_PER_SM * num_sms, Hkv))


def decode_split_len(
    length: int, max_splits: int, min_split: int = MIN_SPLIT_LEN, block_n: int = DECODE_BLOCK_N
) -> int:
    """Keys per split of a row of ``length`` keys (the kernel's own rule, for tests and reports)."""
    split = max(triton.cdiv(length, max_splits), min_split)
    return triton.cdiv(split, block_n) * block_n


def decode_splits(
    S: int, Hkv: int, device: torch.device, *, max_len: int | None, window: int | None,
    split_len: int | None, min_split: int, max_splits: int | None,
) -> tuple[int, int, int]:  # fmt: skip
    """``(min_split, max_splits, num_splits)`` of a decode launch over a cache of ``S`` positions.

    ``max_len`` (host-side, default ``S``) bounds every row's length: with the window it sizes
    the grid (``num_splits``), never a row's splits, which follow the kernel's rule from
    ``min_split`` and ``max_splits`` (default ``decode_max_splits`` for ``device``).
    ``split_len`` fixes every row's split length instead.
    """
    max_len = min(S if max_len is None else max_len, S)
    span = max_len if window is None else min(max_len, window)  # keys one row may attend
    if split_len is not None:
        min_split, max_splits = split_len, triton.cdiv(span, split_len)
    max_splits = max_splits or decode_max_splits(Hkv, sm_count(device))
    if min_split < 1 or max_splits < 1:
        raise ValueError(f"min_split and max_splits must be >= 1, got {min_split}, {max_splits}")
    return min_split, max_splits, max(1, min(max_splits, triton.cdiv(span, min_split)))


# ---- checks and arguments -------------------------------------------------------------------------


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start_pos: torch.Tensor, rows) -> None:
    """Shapes, devices and dtypes of one attention call (``attention.py``'s module docstring)."""
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"expected q [B,H,T,D], k = v [N,Hkv,S,D]; got {q.shape}, {k.shape}, {v.shape}")
    B, H, _, D = q.shape
    if k.shape[3] != D or H % k.shape[1]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} do not match (GQA needs H % Hkv == 0)")
    if rows is None and k.shape[0] < B:
        raise ValueError(f"k has {k.shape[0]} rows for a batch of {B}; pass rows=")
    if rows is not None and (rows.shape != (B,) or rows.device != q.device):
        raise ValueError(f"rows must be a tensor [B={B}] on {q.device}, got {tuple(rows.shape)}")
    if D not in HEAD_DIMS:
        raise ValueError(f"head_dim must be one of {HEAD_DIMS}, got {D}")
    if start_pos.shape != (B,) or start_pos.device != q.device:
        raise ValueError(f"start_pos must be a tensor [B={B}] on {q.device}, got {start_pos.shape}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")


def check_tile(name: str, value: int) -> None:
    # tl.dot needs every dimension >= 16: smaller tiles run in the interpreter but do not compile.
    if value < 16 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= 16 (tl.dot's smallest tile), got {value}")


def check_shared(what: str, need: int) -> None:
    if need > SM90_MAX_SHARED:
        raise ValueError(
            f"{what} needs {need} B of shared memory; sm_90 allows {SM90_MAX_SHARED} B per block: "
            "use smaller tiles or fewer stages"
        )


def last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def row_index(rows: torch.Tensor | None, B: int, device) -> torch.Tensor:
    """The cache row of each query row: ``rows``, or 0..B-1."""
    return torch.arange(B, device=device) if rows is None else rows


def kernel_window(window: int | None) -> int:
    """The kernels' window argument: ``window``, or no window as one longer than any cache."""
    if window is not None and window < 1:
        raise ValueError(f"sliding_window must be >= 1 or None, got {window}")
    return NO_WINDOW if window is None else min(window, NO_WINDOW)
