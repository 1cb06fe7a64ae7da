"""Rotary position embeddings (RoPE, Su et al. 2021) and their long-context scalings.

Each pair of features of a query/key head is rotated by an angle ``pos * inv_freq[i]``. nemo_ref
pairs features (2i, 2i+1) -- mistral's interleaved convention -- everywhere; HF checkpoints, which
pair (i, i + head_dim/2), are un-permuted at load (see checkpoint/names.py), so the attention scores are
the same.

The frequency schemes follow transformers' ``modeling_rope_utils`` (the reference for the formulas):
each returns ``(inv_freq, attention_factor)``; the attention factor multiplies cos and sin, i.e.
scales q.k by its square (YaRN's "mscale").
"""

from __future__ import annotations

import math

import torch

from .config import ModelArgs, RopeScaling


def default_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """``theta ** (-2i / d)`` for i in [0, d/2), in float64 then float32 (as transformers)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float32) / head_dim
    return 1.0 / (theta**exponents)


def _linear(inv: torch.Tensor, rs: RopeScaling, **_: object) -> tuple[torch.Tensor, float]:
    # Position interpolation (Chen et al. 2023): positions divided by `factor`.
    return inv / rs.factor, 1.0


def _dynamic(
    inv: torch.Tensor, rs: RopeScaling, head_dim: int, theta: float, seq_len: int, max_pos: int
) -> tuple[torch.Tensor, float]:
    # Dynamic NTK: grow the base once the sequence exceeds the trained length.
    orig = rs.original_max_position_embeddings or max_pos
    seq_len = max(seq_len, orig)
    base = theta * ((rs.factor * seq_len / orig) - (rs.factor - 1)) ** (head_dim / (head_dim - 2))
    return default_inv_freq(head_dim, base), 1.0


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn(
    inv: torch.Tensor, rs: RopeScaling, head_dim: int, theta: float, **_: object
) -> tuple[torch.Tensor, float]:
    # YaRN (Peng et al. 2023): interpolate low frequencies, keep high ones, blend linearly between
    # the dimensions that rotate beta_slow and beta_fast times over the original context.
    factor, orig = rs.factor, rs.original_max_position_embeddings
    if rs.attention_factor is not None:
        attn = rs.attention_factor
    elif rs.mscale and rs.mscale_all_dim:
        attn = _yarn_mscale(factor, rs.mscale) / _yarn_mscale(factor, rs.mscale_all_dim)
    else:
        attn = _yarn_mscale(factor)
    beta_fast = rs.beta_fast if rs.beta_fast is not None else 32.0
    beta_slow = rs.beta_slow if rs.beta_slow is not None else 1.0

    def correction_dim(rotations: float) -> float:
        return head_dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rs.truncate is None or rs.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # avoid a division by zero in the ramp
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp  # 1 where the dimension keeps its original frequency
    inv_freq = (inv / factor) * (1 - extrapolation) + inv * extrapolation
    return inv_freq, attn


def _llama3(inv: torch.Tensor, rs: RopeScaling, **_: object) -> tuple[torch.Tensor, float]:
    # Llama 3.1: wavelengths longer than orig/low_freq_factor are divided by `factor`, shorter than
    # orig/high_freq_factor kept, and the band between interpolated smoothly.
    factor, orig = rs.factor, rs.original_max_position_embeddings
    low_ff = rs.low_freq_factor if rs.low_freq_factor is not None else 1.0
    high_ff = rs.high_freq_factor if rs.high_freq_factor is not None else 4.0
    low_wavelen, high_wavelen = orig / low_ff, orig / high_ff
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (orig / wavelen - low_ff) / (high_ff - low_ff)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled), 1.0


_SCHEMES = {"linear": _linear, "dynamic": _dynamic, "yarn": _yarn, "llama3": _llama3}


def inv_frequencies(args: ModelArgs, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """The inverse frequencies [head_dim/2] (float32) and attention factor of ``args``' scheme.

    ``seq_len`` matters only for dynamic NTK, whose base grows once ``seq_len`` passes the original
    context. nemo_ref passes the context in use -- the KV cache's length, or the positions of a
    cache-less forward -- so every position of one sequence is rotated with the same frequencies
    and a cache-less forward over L positions equals transformers' (which instead recomputes the
    frequencies as a cached sequence grows, leaving earlier keys rotated with older ones).
    """
    inv = default_inv_freq(args.head_dim, args.rope_theta)
    rs = args.rope_scaling
    if rs.rope_type == "default":
        return inv, 1.0
    return _SCHEMES[rs.rope_type](
        inv,
        rs,
        head_dim=args.head_dim,
        theta=args.rope_theta,
        seq_len=seq_len or args.max_seq_len,
        max_pos=args.max_seq_len,
    )


def rope_table(args: ModelArgs, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, float32 [max_len, head_dim/2], attention factor folded in."""
    inv, attn = inv_frequencies(args, max_len)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv)
    return angles.cos() * attn, angles.sin() * attn


class RopeTables:
    """One model's cos/sin tables, built on first use and kept while they serve.

    ``context`` is the context in use: the KV cache's length, or without a cache the end of the
    call's positions. A table covers it, so a cache's table is built once, not per step. Dynamic
    NTK's frequencies depend on the context (as transformers', where a forward over L positions
    scales for L): its table is rebuilt whenever the context changes. Any other scheme's table
    holds the same values whatever its length and serves every call it reaches.
    """

    def __init__(self, args: ModelArgs):
        self.args = args
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None

    def at(self, pos: torch.Tensor, context: int, reach: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin at ``pos`` ([B, T] -> [B, T, head_dim/2], [B, T, 64] for Nemo), for a call
        whose positions end before ``reach`` in a context of ``context`` positions."""
        dynamic = self.args.rope_scaling.rope_type == "dynamic"
        t = self._table
        fits = (
            t is not None
            and t[0].device == pos.device
            and (t[0].shape[0] == context if dynamic else t[0].shape[0] >= reach)
        )
        if not fits:
            cos, sin = rope_table(self.args, context if dynamic else max(context, reach))
            self._table = t = (cos.to(pos.device), sin.to(pos.device))
        return t[0][pos], t[1][pos]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) of ``x`` [B, T, H, D] in float32.

    ``cos``/``sin`` are [B, T, D/2] (each row its own positions).
    """
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    c, s = cos.unsqueeze(2), sin.unsqueeze(2)
    out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return out.flatten(-2).type_as(x)


def llama4_q_scale(args: ModelArgs, positions: torch.Tensor) -> torch.Tensor | None:
    """Llama-4-style query scaling ``1 + beta * ln(1 + floor(pos / original_max))``, or None."""
    if args.llama4_beta is None:
        return None
    floor = torch.floor(positions.float() / args.llama4_original_max)
    return 1.0 + args.llama4_beta * torch.log1p(floor)
