"""Load and save the two published checkpoint layouts of Mistral Nemo, with clear errors.

Two layouts ship in the same Hugging Face repository (docs/architecture.md
"Checkpoint layouts and the q/k permutation"):

* **mistral**: ``params.json`` + one ``consolidated.safetensors``; tensor names are exactly the
  parameter names of :class:`nemo_ref.model.Transformer` (``layers.3.attention.wq.weight``...).
* **hf**: ``config.json`` + ``model-0000N-of-0000M.safetensors`` shards listed by
  ``model.safetensors.index.json`` (or a single ``model.safetensors``); transformers' names
  (``model.layers.3.self_attn.q_proj.weight``...), and the rows of ``q_proj``/``k_proj`` permuted
  within each head for transformers' rotate-half RoPE convention.

Loading is done in two phases so that a bad checkpoint never yields a half-loaded model:

1. **Plan** (:func:`_plan`): parse the config, read and validate every safetensors *header* (sizes
   checked against the file length before any data is read or memory-mapped: touching a mapping
   past the end of a truncated file is a bus error, not an exception), map names, and check that
   the set of tensors, their shapes and dtypes are exactly what the config implies. Any problem
   raises :class:`CheckpointError` naming the file or tensor.
2. **Load**: build the model on the ``meta`` device (no memory), then read the tensors one at a time
   with safetensors' ``safe_open``, convert each to the target dtype and device (un-permuting HF
   q/k rows), and assign it as the parameter. Peak host memory is the model plus at most one
   tensor. safetensors >= 0.8 reads with ``pread`` straight into the tensor's own memory (no copy
   when the dtype matches); older versions memory-map the file, and then the tensor is copied out
   and the mapping closed before the next one -- a mapping kept open would leave every page it
   touched resident, doubling peak memory (measured: 2x with one open mapping, 1.3x with one per
   tensor on a small model whose embedding is a third of the weights, 1.0x with ``pread``).

Saving streams tensors one at a time into safetensors files written by a small writer below (the
format is 8 bytes of header length, a JSON header, then the raw little-endian bytes), so saving a
model in another dtype never materialises a second full copy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from torch import nn

from .backends import default_attn_backend
from .config import ConfigError, ModelArgs
from .model import AttnBackend, Transformer

__all__ = [
    "CheckpointError",
    "convert_checkpoint",
    "detect_layout",
    "hf_to_mistral_name",
    "inspect_checkpoint",
    "load_model",
    "mistral_to_hf_name",
    "permute_for_hf",
    "read_safetensors_header",
    "save_checkpoint",
    "unpermute_from_hf",
]

Layout = Literal["mistral", "hf"]
LAYOUTS = ("mistral", "hf")

MISTRAL_WEIGHTS = "consolidated.safetensors"
MISTRAL_CONFIG = "params.json"
HF_CONFIG = "config.json"
HF_INDEX = "model.safetensors.index.json"
HF_SINGLE = "model.safetensors"
HF_SHARD_RE = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors")
TOKENIZER_FILE = "tekken.json"
DEFAULT_MAX_SHARD_BYTES = 5_000_000_000  # transformers' default "5GB"


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


# ---- names and the q/k permutation -----------------------------------------------------------

# mistral name (inside layers.{i}.) -> HF name (inside model.layers.{i}.)
_HF_LAYER_NAMES = {
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_HF_TOP_NAMES = {"tok_embeddings": "model.embed_tokens", "norm": "model.norm", "output": "lm_head"}
_MISTRAL_LAYER_NAMES = {v: k for k, v in _HF_LAYER_NAMES.items()}
_MISTRAL_TOP_NAMES = {v: k for k, v in _HF_TOP_NAMES.items()}
_LAYER_RE = re.compile(r"layers\.(\d+)\.(.+)\.weight")
_HF_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)\.weight")


def mistral_to_hf_name(name: str) -> str:
    """``layers.0.attention.wq.weight`` -> ``model.layers.0.self_attn.q_proj.weight``."""
    if m := _LAYER_RE.fullmatch(name):
        i, rest = m.groups()
        if rest in _HF_LAYER_NAMES:
            return f"model.layers.{i}.{_HF_LAYER_NAMES[rest]}.weight"
    elif name.endswith(".weight") and name[: -len(".weight")] in _HF_TOP_NAMES:
        return f"{_HF_TOP_NAMES[name[: -len('.weight')]]}.weight"
    raise KeyError(f"{name!r} is not a mistral-layout tensor name")


def hf_to_mistral_name(name: str) -> str | None:
    """The inverse of :func:`mistral_to_hf_name`; None for a name with no mistral equivalent."""
    if m := _HF_LAYER_RE.fullmatch(name):
        i, rest = m.groups()
        return f"layers.{i}.{_MISTRAL_LAYER_NAMES[rest]}.weight" if rest in _MISTRAL_LAYER_NAMES else None
    if name.endswith(".weight") and name[: -len(".weight")] in _MISTRAL_TOP_NAMES:
        return f"{_MISTRAL_TOP_NAMES[name[: -len('.weight')]]}.weight"
    return None


def _heads_to_permute(name: str, args: ModelArgs) -> int | None:
    """Query/key projections are permuted (n_heads for wq, n_kv_heads for wk); nothing else is."""
    if name.endswith(".attention.wq.weight"):
        return args.n_heads
    if name.endswith(".attention.wk.weight"):
        return args.n_kv_heads
    return None


def permute_for_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """mistral -> HF rows of a q/k projection [n_heads * head_dim, in].

    Within each head, mistral's rotary pairs are rows (2i, 2i+1); HF's are (i, i + head_dim/2).
    View [heads, head_dim/2, 2, in], swap the middle axes, reshape.
    """
    out_dim, in_dim = w.shape
    return w.reshape(n_heads, out_dim // n_heads // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def unpermute_from_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """HF -> mistral, the inverse of :func:`permute_for_hf`: view [heads, 2, head_dim/2, in], swap."""
    out_dim, in_dim = w.shape
    return w.reshape(n_heads, 2, out_dim // n_heads // 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


# ---- layout detection ------------------------------------------------------------------------


def detect_layout(path: str | Path) -> Layout:
    """``"mistral"`` or ``"hf"``: which published layout the directory holds.

    A directory holding both (as the published repository does) is read as mistral: one file, the
    model's native names and no permutation.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"{str(path)!r} is not a directory; pass the checkpoint's directory")
    has = {p.name for p in path.iterdir()}
    if MISTRAL_CONFIG in has and MISTRAL_WEIGHTS in has:
        return "mistral"
    hf_weights = HF_INDEX in has or HF_SINGLE in has
    if HF_CONFIG in has and hf_weights:
        return "hf"
    # Say precisely what is missing.
    if MISTRAL_CONFIG in has:
        pickles = sorted(n for n in has if n.startswith("consolidated") and n.endswith(".pth"))
        hint = f" ({', '.join(pickles)} are pickle files, not supported: convert them)" if pickles else ""
        raise CheckpointError(
            f"{path}: mistral layout: params.json found but {MISTRAL_WEIGHTS} is missing{hint}"
        )
    if HF_CONFIG in has:
        hint = (
            " (pytorch_model*.bin pickle files are not supported)"
            if any(n.startswith("pytorch_model") for n in has)
            else ""
        )
        raise CheckpointError(
            f"{path}: HF layout: config.json found but neither {HF_INDEX} nor {HF_SINGLE}{hint}"
        )
    if MISTRAL_WEIGHTS in has or hf_weights:
        raise CheckpointError(f"{path}: weights found but no params.json (mistral) or config.json (HF)")
    raise CheckpointError(
        f"{path}: unknown checkpoint layout: expected params.json + {MISTRAL_WEIGHTS} (mistral) or "
        f"config.json + {HF_INDEX} / {HF_SINGLE} (HF); found {sorted(has)[:20]}"
    )


# ---- planning: everything that can be checked without reading tensor data ---------------------


@dataclass
class _Plan:
    path: Path
    layout: Layout
    args: ModelArgs
    config_file: str
    files: list[Path]
    tensors: dict[str, TensorInfo]  # mistral name -> where it is
    metadata: dict[str, str]  # __metadata__ of the first weight file

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def dtypes(self) -> Counter[str]:
        return Counter(t.dtype for t in self.tensors.values())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def _parse_config(path: Path, layout: Layout) -> tuple[ModelArgs, str]:
    name = MISTRAL_CONFIG if layout == "mistral" else HF_CONFIG
    data = _read_json(path / name)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path / name}: must hold a JSON object")
    try:
        args = ModelArgs.from_params_json(data) if layout == "mistral" else ModelArgs.from_hf_config(data)
    except ConfigError as e:
        raise CheckpointError(f"{path / name}: {e}") from e
    return args, name


def _weight_files(path: Path, layout: Layout) -> list[Path]:
    if layout == "mistral":
        return [path / MISTRAL_WEIGHTS]
    if not (path / HF_INDEX).is_file():
        return [path / HF_SINGLE]
    index = _read_json(path / HF_INDEX)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{path / HF_INDEX}: needs a non-empty 'weight_map' object")
    files: list[Path] = []
    for name in dict.fromkeys(weight_map.values()):
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise CheckpointError(
                f"{path / HF_INDEX}: weight_map names a file {name!r} outside the directory"
            )
        if not (path / name).is_file():
            missing = sorted(k for k, v in weight_map.items() if v == name)
            raise CheckpointError(
                f"{path / HF_INDEX}: shard {name} is missing (it should hold {len(missing)} tensor(s), "
                f"e.g. {missing[0]})"
            )
        files.append(path / name)
    return files


def _plan(path: str | Path, layout: Layout | None = None) -> _Plan:
    path = Path(path)
    if layout is None:
        layout = detect_layout(path)
    elif layout not in LAYOUTS:
        raise CheckpointError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    else:
        detect_layout(path)  # the directory exists and holds some checkpoint
    args, config_file = _parse_config(path, layout)
    files = _weight_files(path, layout)

    # Every header, validated against its file's size.
    found: dict[str, TensorInfo] = {}  # name in the checkpoint -> info
    metadata: dict[str, str] = {}
    for i, file in enumerate(files):
        if not file.is_file():
            raise CheckpointError(f"{file}: file not found")
        header, meta = read_safetensors_header(file)
        if i == 0:
            metadata = meta
        for key, info in header.items():
            if key in found:
                raise CheckpointError(f"tensor {key!r} is in both {found[key].file.name} and {file.name}")
            found[key] = info
    if layout == "hf" and (path / HF_INDEX).is_file():
        weight_map = _read_json(path / HF_INDEX)["weight_map"]
        for key, fname in weight_map.items():
            if key not in found or found[key].file.name != fname:
                raise CheckpointError(
                    f"{path / HF_INDEX}: says {key!r} is in {fname}, but {fname} does not hold it"
                )

    # Names: map to the model's (mistral) names.
    tensors: dict[str, TensorInfo] = {}
    unexpected: list[str] = []
    for key, info in found.items():
        if layout == "hf" and key.endswith("rotary_emb.inv_freq"):
            continue  # a buffer old transformers versions saved; recomputed from the config
        name = key if layout == "mistral" else hf_to_mistral_name(key)
        if name is None:
            unexpected.append(key)
        else:
            tensors[name] = info

    expected = _expected_shapes(args)
    unexpected += [tensors[n].key for n in tensors if n not in expected]
    missing = [n for n in expected if n not in tensors]
    where = f"{path} ({layout} layout)"
    if missing or unexpected:
        layers_found = sorted({int(m.group(1)) for n in tensors if (m := _LAYER_RE.fullmatch(n))})
        msg = [f"{where}: the tensors do not match {config_file}"]
        if layers_found and layers_found[-1] + 1 != args.n_layers:
            msg.append(
                f"{config_file} says n_layers={args.n_layers} but the weights have layers "
                f"0..{layers_found[-1]}: config and weights disagree"
            )
        if missing:
            shown = missing if layout == "mistral" else [mistral_to_hf_name(n) for n in missing]
            msg.append(f"missing {len(missing)} tensor(s): {_listing(shown)}")
        if unexpected:
            msg.append(f"unexpected {len(unexpected)} tensor(s): {_listing(sorted(unexpected))}")
        raise CheckpointError("; ".join(msg))

    mismatches = []
    for name, shape in expected.items():
        info = tensors[name]
        if info.shape != shape:
            label = name if layout == "mistral" else f"{info.key} (= {name})"
            mismatches.append(
                f"{label} in {info.file.name}: expected {list(shape)} ({_shape_reason(name, args)}), "
                f"found {list(info.shape)}"
            )
    if mismatches:
        raise CheckpointError(
            f"{where}: shape mismatch between {config_file} and the weights (config and weights "
            f"disagree): {'; '.join(mismatches[:10])}"
            + (f"; and {len(mismatches) - 10} more" if len(mismatches) > 10 else "")
        )
    for info in tensors.values():
        if info.dtype not in _ST_FLOAT:
            kind = (
                "FP8 (quantized weights are not supported)"
                if info.dtype.startswith("F8")
                else "not floating point"
            )
            raise CheckpointError(f"{info.file}: tensor {info.key!r} has dtype {info.dtype}: {kind}")
    return _Plan(path, layout, args, config_file, files, tensors, metadata)


def _listing(names: list[str], limit: int = 12) -> str:
    more = f", ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


_INIT_LOCK = threading.Lock()


def _meta_model(args: ModelArgs, **kw: Any) -> Transformer:
    """The model's skeleton on the meta device, without running parameter initialisers.

    Their results would be thrown away, and the first ``normal_`` on a meta tensor (the embedding's
    default init) imports torch's Python reference ops: measured 2 s and 130 MB of resident memory,
    more than loading a small checkpoint takes. The same trick as transformers' ``no_init_weights``.
    """
    names = ("normal_", "uniform_", "kaiming_uniform_")
    with _INIT_LOCK:
        saved = {n: getattr(nn.init, n) for n in names}
        try:
            for n in names:
                setattr(nn.init, n, lambda tensor, *a, **k: tensor)
            return Transformer(args, device="meta", **kw)
        finally:
            for n, f in saved.items():
                setattr(nn.init, n, f)


def _expected_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """The model's unique parameters (a tied output is the embedding) and their shapes."""
    model = _meta_model(args)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def _shape_reason(name: str, a: ModelArgs) -> str:
    """Which config fields fix a tensor's shape, for error messages."""
    q, kv = f"n_heads*head_dim={a.n_heads * a.head_dim}", f"n_kv_heads*head_dim={a.n_kv_heads * a.head_dim}"
    for suffix, why in (
        ("tok_embeddings.weight", f"vocab_size={a.vocab_size}, dim={a.dim}"),
        ("output.weight", f"vocab_size={a.vocab_size}, dim={a.dim}"),
        ("attention.wq.weight", f"{q}, dim={a.dim}"),
        ("attention.wk.weight", f"{kv}, dim={a.dim}"),
        ("attention.wv.weight", f"{kv}, dim={a.dim}"),
        ("attention.wo.weight", f"dim={a.dim}, {q}"),
        ("feed_forward.w1.weight", f"hidden_dim={a.hidden_dim}, dim={a.dim}"),
        ("feed_forward.w3.weight", f"hidden_dim={a.hidden_dim}, dim={a.dim}"),
        ("feed_forward.w2.weight", f"dim={a.dim}, hidden_dim={a.hidden_dim}"),
    ):
        if name.endswith(suffix):
            return why
    return f"dim={a.dim}"


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


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---- inspection ------------------------------------------------------------------------------


def inspect_checkpoint(path: str | Path, layout: Layout | None = None) -> dict[str, Any]:
    """Describe a checkpoint without reading its tensor data.

    Runs the same validation as :func:`load_model` (so a checkpoint that inspects cleanly loads), and
    returns a JSON-serialisable dict: ``layout``, ``config_file``, ``config`` (ModelArgs fields),
    ``parameters``, ``tensors``, ``dtypes`` ({safetensors dtype: tensor count}), ``bytes`` (tensor
    data), ``file_bytes`` (weight files on disk), ``files``, ``metadata`` (the first weight file's
    safetensors metadata), ``random_weights`` (True if marked as random by ``make-checkpoint``) and
    ``tokenizer`` / ``tokenizer_file`` (whether a tokenizer file -- tekken.json or tokenizer.model.vN --
    sits alongside, and its name).
    """
    from .tokenizer import find_tokenizer_file  # file names only: no mistral-common needed

    plan = _plan(path, layout)
    tokenizer = find_tokenizer_file(plan.path)
    return {
        "path": str(plan.path),
        "layout": plan.layout,
        "config_file": plan.config_file,
        "config": dataclasses.asdict(plan.args),
        "parameters": sum(t.numel for t in plan.tensors.values()),
        "tensors": len(plan.tensors),
        "dtypes": dict(plan.dtypes),
        "bytes": plan.nbytes,
        "file_bytes": sum(f.stat().st_size for f in plan.files),
        "files": [f.name for f in plan.files],
        "metadata": plan.metadata,
        "random_weights": plan.metadata.get("nemo_ref.random_weights") == "true",
        "tokenizer": tokenizer is not None,
        "tokenizer_file": tokenizer.name if tokenizer is not None else None,
    }


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
        from .tokenizer import checkpoint_tokenizer_name

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
    from .tokenizer import find_tokenizer_file

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
