"""The safetensors file format, read side: headers parsed and validated before any data is touched.

A safetensors file is 8 bytes of little-endian header length, a JSON header (``{name: {dtype,
shape, data_offsets}}`` plus an optional ``__metadata__``), then the raw little-endian bytes.
Every size is checked against the file length here, so a truncated file is an error naming it,
never a bus error from touching a mapping past its end. (The writer is in ``save.py``.)
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be loaded as the model it claims to be."""


# ---- safetensors headers ---------------------------------------------------------------------

# Bytes per element of every dtype the safetensors format defines (independent of torch).
_ST_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
# The floating dtypes a weight may be stored in (FP8 needs scales this loader does not handle).
_ST_FLOAT = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
_TORCH_TO_ST = {v: k for k, v in _ST_FLOAT.items()}
_MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as described by a safetensors header (nothing read yet)."""

    file: Path
    key: str  # the name in the file
    dtype: str  # safetensors dtype code, e.g. "BF16"
    shape: tuple[int, ...]
    begin: int  # byte offsets relative to the start of the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_safetensors_header(path: str | Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate a safetensors header: ``({name: TensorInfo}, metadata)``.

    Reads only the header. Every size is checked against the file length, so a truncated or corrupt
    file raises :class:`CheckpointError` here, before anything maps or reads its data.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    if size < 8:
        raise CheckpointError(f"{path}: {size} bytes is too short for a safetensors file (truncated?)")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8 or n > _MAX_HEADER_BYTES:
            raise CheckpointError(
                f"{path}: the header claims {n} bytes but the file has only {size - 8} after the "
                "length field: truncated, or not a safetensors file"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"{path}: the safetensors header is not valid JSON ({e}): corrupt file"
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object: corrupt file")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: __metadata__ must be a JSON object")
    data_size = size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for key, entry in header.items():
        tensors[key] = _tensor_info(path, key, entry, data_size)
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def _tensor_info(path: Path, key: str, entry: Any, data_size: int) -> TensorInfo:
    where = f"{path}: tensor {key!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise CheckpointError(f"{where}: header entry needs dtype, shape and data_offsets, got {entry!r}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _ST_ITEMSIZE:
        raise CheckpointError(f"{where}: unknown safetensors dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise CheckpointError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise CheckpointError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end")
    begin, end = offsets
    need = math.prod(shape) * _ST_ITEMSIZE[dtype]
    if end - begin != need:
        raise CheckpointError(
            f"{where}: data_offsets {offsets} span {end - begin} bytes but {dtype} {shape} needs {need}: "
            "corrupt header"
        )
    if end > data_size:
        raise CheckpointError(
            f"{where}: its data ends at byte {end} of the data section, but the file holds only "
            f"{data_size} bytes of data: the file is truncated"
        )
    return TensorInfo(file=path, key=key, dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
