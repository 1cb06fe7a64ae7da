"""Which layout a directory holds, and the load plan: everything checked before any data is read.

:func:`_plan` parses the config, reads and validates every safetensors header, maps the names, and
checks that the set of tensors, their shapes and dtypes are exactly what the config implies.
:func:`inspect_checkpoint` reports the plan.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from ..config import ConfigError, ModelArgs
from ..model import Transformer
from .files import _ST_FLOAT, CheckpointError, TensorInfo, read_safetensors_header
from .names import _LAYER_RE, hf_to_mistral_name, mistral_to_hf_name

Layout = Literal["mistral", "hf"]
LAYOUTS = ("mistral", "hf")

MISTRAL_WEIGHTS = "consolidated.safetensors"
MISTRAL_CONFIG = "params.json"
HF_CONFIG = "config.json"
HF_INDEX = "model.safetensors.index.json"
HF_SINGLE = "model.safetensors"
HF_SHARD_RE = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors")
TOKENIZER_FILE = "tekken.json"


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
    from ..tokenizer import find_tokenizer_file  # file names only: no mistral-common needed

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
