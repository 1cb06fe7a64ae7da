"""Tensor names of the two layouts, and the q/k row permutation between them.

mistral names are the parameter names of :class:`nemo_ref.model.Transformer`; transformers' names
differ, and its q/k projections have their rows permuted within each head for its rotate-half
RoPE convention (docs/architecture.md "Checkpoint layouts and the q/k permutation").
"""

from __future__ import annotations

import re

import torch

from ..config import ModelArgs

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
