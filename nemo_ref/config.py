"""Model hyper-parameters: ``ModelArgs``, its presets, and parsing of the two published config files.

The presets cover Nemo and the dense Mistral family it belongs to (7B v0.1/v0.3, Mathstral,
Small 2409, Codestral 22B, Large 2407): one architecture, different shapes, vocabularies, RoPE
bases and (7B v0.1 only) a sliding attention window.

Mistral ships ``params.json`` (mistral-inference's names); Hugging Face ships ``config.json``
(transformers' names). Both parse into the same ``ModelArgs``. ``head_dim`` is always an explicit
field: Nemo has ``n_heads * head_dim = 4096 != dim = 5120``, and deriving it as ``dim // n_heads``
is the most common bug of other ports.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file or preset that cannot describe a valid model."""


@dataclass(frozen=True)
class RopeScaling:
    """Long-context RoPE scaling, in transformers' vocabulary (``rope_type`` and its fields).

    ``rope_type`` is one of default, linear, dynamic, yarn, llama3. Fields a scheme does not use
    stay ``None``.
    """

    rope_type: str = "default"
    factor: float | None = None
    original_max_position_embeddings: int | None = None
    # yarn
    beta_fast: float | None = None
    beta_slow: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool | None = None
    # llama3
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None


ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")


@dataclass(frozen=True)
class ModelArgs:
    """Everything that fixes the architecture and shapes of a Nemo-family transformer."""

    dim: int
    n_layers: int
    head_dim: int
    hidden_dim: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    norm_eps: float = 1e-5
    rope_theta: float = 1e6
    max_seq_len: int = 131072
    tied_embeddings: bool = False
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    # llama_4 query scaling: q *= 1 + beta * ln(1 + floor(pos / original_max)); None = off.
    llama4_beta: float | None = None
    llama4_original_max: int | None = None
    # Sliding-window attention (Mistral 7B v0.1): a query at p sees keys p - window < j <= p.
    sliding_window: int | None = None

    def __post_init__(self) -> None:
        positive = ("dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads")
        for name in (*positive, "vocab_size", "max_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.sliding_window is not None and (
            isinstance(self.sliding_window, bool)
            or not isinstance(self.sliding_window, int)
            or self.sliding_window < 1
        ):
            raise ConfigError(
                f"sliding_window must be a positive integer or None, got {self.sliding_window!r}"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )
        if not (self.norm_eps > 0 and math.isfinite(self.norm_eps)):
            raise ConfigError(f"norm_eps must be a positive finite float, got {self.norm_eps!r}")
        if not (self.rope_theta > 1 and math.isfinite(self.rope_theta)):
            raise ConfigError(f"rope_theta must be a finite float > 1, got {self.rope_theta!r}")
        if self.rope_scaling.rope_type not in ROPE_TYPES:
            raise ConfigError(
                f"rope type {self.rope_scaling.rope_type!r} is not supported; valid: {', '.join(ROPE_TYPES)}"
            )

    @property
    def n_rep(self) -> int:
        """Query heads per KV head (GQA group size)."""
        return self.n_heads // self.n_kv_heads

    @property
    def max_positions(self) -> int:
        """The longest sequence this model may run (KV cache length included).

        ``max_seq_len`` for plain RoPE. A RoPE scaling exists to run past the trained context, so
        with one the limit is ``factor`` times the original context (``original_max_position_embeddings``,
        else ``max_seq_len``, which is what linear and dynamic-NTK configs scale), or ``max_seq_len``
        if larger (YaRN and llama3 configs usually state the extended length there already).
        """
        rs = self.rope_scaling
        if rs.rope_type == "default":
            return self.max_seq_len
        original = rs.original_max_position_embeddings or self.max_seq_len
        return max(self.max_seq_len, int(rs.factor * original))

    def replace(self, **changes: Any) -> ModelArgs:
        return dataclasses.replace(self, **changes)

    # ---- presets ---------------------------------------------------------------------------

    @classmethod
    def preset(cls, name: str) -> ModelArgs:
        """A named preset: ``nemo-12b`` (the published model) or a small Nemo-shaped one."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
        return PRESETS[name]

    # ---- config files ----------------------------------------------------------------------

    @classmethod
    def from_dir(cls, path: str | Path) -> ModelArgs:
        """Parse ``params.json`` (mistral layout) or ``config.json`` (HF layout) in ``path``."""
        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"checkpoint directory {str(path)!r} does not exist")
        if (path / "params.json").is_file():
            return cls.from_params_json(_read_json(path / "params.json"))
        if (path / "config.json").is_file():
            return cls.from_hf_config(_read_json(path / "config.json"))
        raise ConfigError(f"{str(path)!r} has neither params.json (mistral) nor config.json (HF)")

    @classmethod
    def from_params_json(cls, p: dict[str, Any]) -> ModelArgs:
        """mistral-inference's ``params.json``."""
        p = dict(p)
        _check_keys("params.json", p, _PARAMS_KEYS)
        rope = RopeScaling()
        if "yarn" in p and "rope_scaling" in p:
            raise ConfigError("params.json has both 'yarn' and 'rope_scaling'; keep one")
        if y := p.pop("yarn", None):
            _check_keys("params.json 'yarn'", y, _YARN_KEYS)
            _require("params.json 'yarn'", y, ("factor", "original_max_position_embeddings"))
            rope = RopeScaling(
                rope_type="yarn",
                factor=float(y["factor"]),
                original_max_position_embeddings=int(y["original_max_position_embeddings"]),
                beta_fast=float(y.get("beta", 32.0)),
                beta_slow=float(y.get("alpha", 1.0)),
                attention_factor=None if y.get("apply_scale", True) else 1.0,
            )
        if r := p.pop("rope_scaling", None):
            rope = _rope_from_hf(r)
        beta = orig = None
        if l4 := p.pop("llama_4_scaling", None):
            _check_keys("params.json 'llama_4_scaling'", l4, {"beta", "original_max_position_embeddings"})
            _require("params.json 'llama_4_scaling'", l4, ("beta", "original_max_position_embeddings"))
            beta, orig = float(l4["beta"]), int(l4["original_max_position_embeddings"])
        window = p.pop("sliding_window", None)
        if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
            raise ConfigError(f"params.json: sliding_window must be an integer or null, got {window!r}")
        if p.pop("moe", None) is not None:
            raise ConfigError("params.json: mixture-of-experts models are not supported")
        for key in ("dim", "n_layers", "hidden_dim", "n_heads", "n_kv_heads", "vocab_size"):
            if key not in p:
                raise ConfigError(f"params.json is missing required field {key!r}")
        _check_numbers("params.json", p, _PARAMS_NUMBERS)
        if {"max_seq_len", "max_position_embeddings"} <= set(p) and int(p["max_seq_len"]) != int(
            p["max_position_embeddings"]
        ):
            raise ConfigError(
                f"params.json: max_seq_len ({p['max_seq_len']}) and max_position_embeddings "
                f"({p['max_position_embeddings']}) disagree; keep one"
            )
        n_heads, dim = int(p["n_heads"]), int(p["dim"])
        return cls(
            dim=dim,
            n_layers=int(p["n_layers"]),
            head_dim=int(p.get("head_dim", dim // n_heads)),
            hidden_dim=int(p["hidden_dim"]),
            n_heads=n_heads,
            n_kv_heads=int(p["n_kv_heads"]),
            vocab_size=int(p["vocab_size"]),
            norm_eps=float(p.get("norm_eps", 1e-5)),
            rope_theta=float(p.get("rope_theta", 1e4)),
            max_seq_len=int(p.get("max_seq_len", p.get("max_position_embeddings", 131072))),
            tied_embeddings=bool(p.get("tied_embeddings", False)),
            rope_scaling=rope,
            llama4_beta=beta,
            llama4_original_max=orig,
            sliding_window=window,
        )

    @classmethod
    def from_hf_config(cls, c: dict[str, Any]) -> ModelArgs:
        """transformers' ``config.json`` for MistralForCausalLM."""
        c = dict(c)
        arch = c.get("architectures") or ["MistralForCausalLM"]
        if c.get("model_type", "mistral") != "mistral" or arch != ["MistralForCausalLM"]:
            raise ConfigError(
                f"config.json describes model_type={c.get('model_type')!r}, "
                f"architectures={arch!r}; only MistralForCausalLM is supported"
            )
        window = c.get("sliding_window")
        if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
            raise ConfigError(f"config.json: sliding_window must be an integer or null, got {window!r}")
        if c.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"config.json: hidden_act must be 'silu', got {c['hidden_act']!r}")
        for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads"):
            if key not in c:
                raise ConfigError(f"config.json is missing required field {key!r}")
        _check_numbers("config.json", c, _HF_NUMBERS)
        n_heads, dim = int(c["num_attention_heads"]), int(c["hidden_size"])
        rope_params = c.get("rope_parameters") or {}
        rope_scaling = c.get("rope_scaling")
        theta = c.get("rope_theta", rope_params.get("rope_theta", 1e4))
        if "rope_theta" in c and "rope_theta" in rope_params and c["rope_theta"] != rope_params["rope_theta"]:
            raise ConfigError(
                f"config.json: rope_theta ({c['rope_theta']}) and rope_parameters.rope_theta "
                f"({rope_params['rope_theta']}) disagree; keep one"
            )
        if c.get("partial_rotary_factor", 1.0) not in (None, 1.0):
            raise ConfigError(
                f"config.json: partial_rotary_factor={c['partial_rotary_factor']} is not supported "
                "(Mistral models rotate the whole head)"
            )
        if rope_scaling and rope_params.get("rope_type", "default") != "default":
            raise ConfigError("config.json has both rope_scaling and rope_parameters; keep one")
        rope = _rope_from_hf(rope_scaling or rope_params)
        max_pos = int(c.get("max_position_embeddings", 131072))
        return cls(
            dim=dim,
            n_layers=int(c["num_hidden_layers"]),
            head_dim=int(c.get("head_dim") or dim // n_heads),
            hidden_dim=int(c["intermediate_size"]),
            n_heads=n_heads,
            n_kv_heads=int(c.get("num_key_value_heads") or n_heads),
            vocab_size=int(c.get("vocab_size", 32000)),
            norm_eps=float(c.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            # Nemo's published config says 1024000, a placeholder: the model supports 128k.
            max_seq_len=min(max_pos, 131072) if max_pos == 1024000 else max_pos,
            tied_embeddings=bool(c.get("tie_word_embeddings", False)),
            rope_scaling=rope,
            sliding_window=window,
        )

    def to_params_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dim": self.dim,
            "n_layers": self.n_layers,
            "head_dim": self.head_dim,
            "hidden_dim": self.hidden_dim,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "norm_eps": self.norm_eps,
            "vocab_size": self.vocab_size,
            "rope_theta": self.rope_theta,
        }
        if self.max_seq_len != 131072:
            out["max_seq_len"] = self.max_seq_len
        if self.tied_embeddings:
            out["tied_embeddings"] = True
        if self.sliding_window is not None:
            out["sliding_window"] = self.sliding_window
        rs = self.rope_scaling
        if rs.rope_type != "default":
            out["rope_scaling"] = _rope_to_hf(rs)
        if self.llama4_beta is not None:
            out["llama_4_scaling"] = {
                "beta": self.llama4_beta,
                "original_max_position_embeddings": self.llama4_original_max,
            }
        return out

    def to_hf_config(self, torch_dtype: str = "bfloat16") -> dict[str, Any]:
        if self.llama4_beta is not None:
            raise ConfigError("llama_4 query scaling has no MistralForCausalLM config equivalent")
        out: dict[str, Any] = {
            "architectures": ["MistralForCausalLM"],
            "model_type": "mistral",
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layers,
            "head_dim": self.head_dim,
            "intermediate_size": self.hidden_dim,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_seq_len,
            "hidden_act": "silu",
            "sliding_window": self.sliding_window,
            "tie_word_embeddings": self.tied_embeddings,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "use_cache": True,
            "torch_dtype": torch_dtype,
        }
        if self.rope_scaling.rope_type != "default":
            out["rope_scaling"] = _rope_to_hf(self.rope_scaling)
        return out


# Every key a params.json may carry. Unknown keys are an error: silently ignoring a field
# (a new scaling scheme, say) would yield a model that loads and is quietly wrong.
_PARAMS_KEYS = {
    "dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads", "norm_eps",
    "vocab_size", "rope_theta", "max_seq_len", "max_position_embeddings", "tied_embeddings",
    "yarn", "rope_scaling", "llama_4_scaling", "sliding_window", "moe", "model_type",
    "max_batch_size", "quantization", "lora", "torch_dtype",
}  # fmt: skip
_YARN_KEYS = {"factor", "original_max_position_embeddings", "beta", "alpha", "apply_scale"}
_HF_ROPE_FIELDS = {f.name for f in dataclasses.fields(RopeScaling)}


_PARAMS_NUMBERS = {
    "dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads", "norm_eps", "vocab_size",
    "rope_theta", "max_seq_len", "max_position_embeddings",
}  # fmt: skip
_HF_NUMBERS = {
    "hidden_size", "num_hidden_layers", "head_dim", "intermediate_size", "num_attention_heads",
    "num_key_value_heads", "vocab_size", "rms_norm_eps", "rope_theta", "max_position_embeddings",
}  # fmt: skip


def _check_numbers(where: str, d: dict[str, Any], keys: set[str]) -> None:
    """Numeric fields must be numbers (JSON null, strings and booleans are errors naming the field).

    ``head_dim`` and ``num_key_value_heads`` may be null in HF configs (then derived, as transformers does).
    """
    nullable = {"head_dim", "num_key_value_heads"} if where == "config.json" else set()
    for key in sorted(keys & set(d)):
        value = d[key]
        if value is None and key in nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}")


def _check_keys(where: str, d: dict[str, Any], allowed: set[str]) -> None:
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ConfigError(f"{where} has unknown field(s) {unknown}; known: {sorted(allowed)}")


def _require(where: str, d: dict[str, Any], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if d.get(k) is None]
    if missing:
        raise ConfigError(f"{where} is missing required field(s) {missing}")


def _rope_from_hf(r: dict[str, Any] | None) -> RopeScaling:
    if not r:
        return RopeScaling()
    r = dict(r)
    rope_type = r.pop("rope_type", None) or r.pop("type", None) or "default"
    r.pop("rope_theta", None)  # transformers >= 5 keeps theta inside rope_parameters
    if rope_type == "default":
        return RopeScaling()
    if rope_type not in ROPE_TYPES:
        raise ConfigError(f"rope type {rope_type!r} is not supported; valid: {', '.join(ROPE_TYPES)}")
    unknown = sorted(set(r) - _HF_ROPE_FIELDS)
    if unknown:
        raise ConfigError(f"rope scaling ({rope_type}) has unknown field(s) {unknown}")
    if r.get("factor") is None and rope_type != "default":
        raise ConfigError(f"rope scaling ({rope_type}) needs a 'factor'")
    if rope_type in ("yarn", "llama3") and r.get("original_max_position_embeddings") is None:
        raise ConfigError(f"rope scaling ({rope_type}) needs 'original_max_position_embeddings'")
    return RopeScaling(rope_type=rope_type, **r)


def _rope_to_hf(rs: RopeScaling) -> dict[str, Any]:
    out = {k: v for k, v in dataclasses.asdict(rs).items() if v is not None}
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def _nemo_small(**kw: Any) -> ModelArgs:
    # Small Nemo-shaped models: the real vocab (131072), GQA ratio 4, and n_heads * head_dim != dim
    # exactly like the real one, so the head_dim bug cannot hide in tests.
    return ModelArgs(vocab_size=131072, norm_eps=1e-5, rope_theta=1e6, max_seq_len=4096, **kw)


def _dense(dim: int, n_layers: int, n_heads: int, hidden_dim: int, vocab_size: int, **kw: Any) -> ModelArgs:
    # The dense Mistral family shares head_dim 128, 8 KV heads and norm_eps 1e-5.
    return ModelArgs(
        dim=dim, n_layers=n_layers, head_dim=128, hidden_dim=hidden_dim, n_heads=n_heads, n_kv_heads=8,
        vocab_size=vocab_size, norm_eps=1e-5, **kw,
    )  # fmt: skip


PRESETS: dict[str, ModelArgs] = {
    "nemo-12b": ModelArgs(
        dim=5120, n_layers=40, head_dim=128, hidden_dim=14336, n_heads=32, n_kv_heads=8,
        vocab_size=131072, norm_eps=1e-5, rope_theta=1e6, max_seq_len=131072,
    ),
    # Unit tests: 2 layers, 4 query heads of 32 over 1 KV head; 4 * 32 = 128 != dim 96.
    "nemo-tiny": _nemo_small(dim=96, n_layers=2, head_dim=32, hidden_dim=256, n_heads=4, n_kv_heads=1),
    # The embedded demo model: 8 heads of 64 over 2 KV heads; 512 != dim 256.
    "nemo-small": _nemo_small(dim=256, n_layers=4, head_dim=64, hidden_dim=768, n_heads=8, n_kv_heads=2),
    # Benchmarks: the real head geometry (32 x 128 over 8 KV heads), fewer layers, smaller dim.
    "nemo-mid": _nemo_small(dim=1024, n_layers=4, head_dim=128, hidden_dim=3584, n_heads=32, n_kv_heads=8),
    # The dense Mistral family (nemo_ref/family.py: tokenizers, published sizes; docs/architecture.md).
    "mistral-7b-v0.1": _dense(4096, 32, 32, 14336, 32000, rope_theta=1e4, max_seq_len=32768, sliding_window=4096),
    "mistral-7b-v0.3": _dense(4096, 32, 32, 14336, 32768, rope_theta=1e6, max_seq_len=32768),
    "mathstral-7b": _dense(4096, 32, 32, 14336, 32768, rope_theta=1e6, max_seq_len=32768),
    "mistral-small-2409": _dense(6144, 56, 48, 16384, 32768, rope_theta=1e6, max_seq_len=32768),
    "codestral-22b": _dense(6144, 56, 48, 16384, 32768, rope_theta=1e6, max_seq_len=32768),
    "mistral-large-2407": _dense(12288, 88, 96, 28672, 32768, rope_theta=1e6, max_seq_len=131072),
    # Unit tests of the SentencePiece members: their vocabularies and RoPE, a tiny body.
    "mistral-tiny-v0.1": ModelArgs(
        dim=64, n_layers=2, head_dim=16, hidden_dim=128, n_heads=4, n_kv_heads=2, vocab_size=32000,
        rope_theta=1e4, max_seq_len=4096, sliding_window=4096,
    ),
    "mistral-tiny-v0.3": ModelArgs(
        dim=64, n_layers=2, head_dim=16, hidden_dim=128, n_heads=4, n_kv_heads=2, vocab_size=32768,
        rope_theta=1e6, max_seq_len=4096,
    ),
}  # fmt: skip
