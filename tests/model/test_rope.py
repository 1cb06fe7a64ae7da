"""RoPE: frequencies and attention factors against transformers' ROPE_INIT_FUNCTIONS, the interleaved
rotation against HF's rotate_half after the checkpoint's q/k permutation, llama_4 q-scaling by hand."""

from __future__ import annotations

import math

import pytest
import torch

from nemo_ref.checkpoint import permute_for_hf, unpermute_from_hf
from nemo_ref.config import ModelArgs, RopeScaling
from nemo_ref.rope import apply_rotary, inv_frequencies, llama4_q_scale, rope_table

transformers = pytest.importorskip("transformers")
from transformers import MistralConfig  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.mistral.modeling_mistral import (  # noqa: E402
    MistralRotaryEmbedding,
    apply_rotary_pos_emb,
)

HEAD_DIM, THETA, MAX_POS = 128, 1e6, 4096

# (name, rope parameters in transformers' vocabulary, seq_len passed to the init function)
CASES = [
    ("default", {"rope_type": "default"}, None),
    ("linear", {"rope_type": "linear", "factor": 4.0}, None),
    ("dynamic-within", {"rope_type": "dynamic", "factor": 2.0}, 1000),
    ("dynamic-beyond", {"rope_type": "dynamic", "factor": 2.0}, 3 * MAX_POS + 17),
    ("yarn", {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 512}, None),
    (
        "yarn-betas",
        {
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 1024,
            "beta_fast": 16.0,
            "beta_slow": 2.0,
        },
        None,
    ),
    (
        "yarn-mscale",
        {
            "rope_type": "yarn",
            "factor": 16.0,
            "original_max_position_embeddings": 256,
            "mscale": 0.707,
            "mscale_all_dim": 1.3,
        },
        None,
    ),
    (
        "yarn-attention-factor",
        {
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 1024,
            "attention_factor": 1.0,
        },
        None,
    ),
    (
        "yarn-no-truncate",
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1000, "truncate": False},
        None,
    ),
    (
        "llama3",
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "original_max_position_embeddings": 1024,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
        },
        None,
    ),
]


def hf_config(rope: dict) -> MistralConfig:
    return MistralConfig(
        hidden_size=5120,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=HEAD_DIM,
        max_position_embeddings=MAX_POS,
        rope_parameters={**rope, "rope_theta": THETA},
        sliding_window=None,
    )


def nemo_args(rope: dict) -> ModelArgs:
    fields = {k: v for k, v in rope.items() if k != "rope_type"}
    return ModelArgs.preset("nemo-12b").replace(
        max_seq_len=MAX_POS, rope_theta=THETA, rope_scaling=RopeScaling(rope_type=rope["rope_type"], **fields)
    )


@pytest.mark.parametrize(("rope", "seq_len"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_inv_frequencies_and_attention_factor_equal_transformers(rope, seq_len):
    config = hf_config(rope)
    if rope["rope_type"] == "default":
        expected, expected_attn = MistralRotaryEmbedding.compute_default_rope_parameters(config)
    else:
        expected, expected_attn = ROPE_INIT_FUNCTIONS[rope["rope_type"]](config, None, seq_len=seq_len)
    inv, attn = inv_frequencies(nemo_args(rope), seq_len)
    assert inv.dtype == torch.float32 and inv.shape == (HEAD_DIM // 2,)
    torch.testing.assert_close(inv, expected.float(), rtol=1e-6, atol=0)
    assert attn == pytest.approx(expected_attn, rel=1e-12)


def test_the_cases_are_distinguishable():
    """Each scaling changes the frequencies (or the factor): the comparisons above have teeth."""
    results = {name: inv_frequencies(nemo_args(rope), seq_len) for name, rope, seq_len in CASES}
    default = results["default"][0]
    for name, (inv, attn) in results.items():
        if name not in ("default", "dynamic-within"):
            assert not torch.allclose(inv, default, rtol=1e-6) or attn != 1.0, name
    assert torch.equal(results["dynamic-within"][0], default)  # within the trained length: unchanged
    assert results["yarn-attention-factor"][1] == 1.0
    assert results["yarn"][1] == pytest.approx(0.1 * math.log(8.0) + 1.0)


def test_rope_table_folds_the_attention_factor_into_cos_and_sin():
    args = nemo_args({"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 512})
    cos, sin = rope_table(args, 64)
    inv, attn = inv_frequencies(args, 64)
    angles = torch.arange(64, dtype=torch.float32)[:, None] * inv
    torch.testing.assert_close(cos, angles.cos() * attn)
    torch.testing.assert_close(sin, angles.sin() * attn)
    assert attn > 1


def test_interleaved_rotation_equals_rotate_half_after_the_qk_permutation():
    """Same scores with mistral's pairs (2i, 2i+1) on the original weights and HF's (i, i + d/2) on the
    permuted weights: what makes un-permuting HF checkpoints at load correct."""
    torch.manual_seed(0)
    n_heads, n_kv, hd, dim, T = 4, 2, 32, 48, 11
    args = ModelArgs(
        dim=dim,
        n_layers=1,
        head_dim=hd,
        hidden_dim=64,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        vocab_size=10,
        rope_theta=1e4,
        max_seq_len=64,
    )
    wq, wk = torch.randn(n_heads * hd, dim), torch.randn(n_kv * hd, dim)
    x = torch.randn(1, T, dim)
    pos = torch.arange(T)[None]

    # mistral: interleaved pairs
    cos, sin = rope_table(args, T)
    q = apply_rotary((x @ wq.T).view(1, T, n_heads, hd), cos[pos], sin[pos]).transpose(1, 2)
    k = apply_rotary((x @ wk.T).view(1, T, n_kv, hd), cos[pos], sin[pos]).transpose(1, 2)

    # HF: rotate_half on the permuted weights, with transformers' own cos/sin
    config = MistralConfig(
        hidden_size=dim,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        head_dim=hd,
        rope_parameters={"rope_type": "default", "rope_theta": 1e4},
        sliding_window=None,
    )
    hcos, hsin = MistralRotaryEmbedding(config)(x, pos)
    qh = (x @ permute_for_hf(wq, n_heads).T).view(1, T, n_heads, hd).transpose(1, 2)
    kh = (x @ permute_for_hf(wk, n_kv).T).view(1, T, n_kv, hd).transpose(1, 2)
    qh, kh = apply_rotary_pos_emb(qh, kh, hcos, hsin)

    rep = n_heads // n_kv
    scores = q @ k.repeat_interleave(rep, dim=1).transpose(-1, -2)
    scores_hf = qh @ kh.repeat_interleave(rep, dim=1).transpose(-1, -2)
    torch.testing.assert_close(scores, scores_hf, rtol=1e-5, atol=1e-4)
    # Feature by feature: HF feature j is mistral feature 2j (j < d/2) or 2(j - d/2) + 1.
    perm = torch.cat([torch.arange(0, hd, 2), torch.arange(1, hd, 2)])
    torch.testing.assert_close(q[..., perm], qh, rtol=1e-5, atol=1e-5)
    # And without the permutation the scores differ: the permutation matters.
    qn = (x @ wq.T).view(1, T, n_heads, hd).transpose(1, 2)
    kn = (x @ wk.T).view(1, T, n_kv, hd).transpose(1, 2)
    qn, kn = apply_rotary_pos_emb(qn, kn, hcos, hsin)
    wrong = qn @ kn.repeat_interleave(rep, dim=1).transpose(-1, -2)
    assert (wrong - scores).abs().max() > 1.0


def test_permutation_round_trip_and_layout():
    w = torch.arange(2 * 8 * 3).reshape(16, 3)  # 2 heads of head_dim 8
    p = permute_for_hf(w, 2)
    assert torch.equal(unpermute_from_hf(p, 2), w)
    # Within head 0, HF row j holds mistral row 2j (first half) or 2(j-4)+1 (second half).
    assert p[:8, 0].tolist() == [w[r, 0].item() for r in (0, 2, 4, 6, 1, 3, 5, 7)]
    assert p[8:, 0].tolist() == [w[8 + r, 0].item() for r in (0, 2, 4, 6, 1, 3, 5, 7)]


def test_llama4_q_scale_by_hand():
    args = ModelArgs.preset("nemo-tiny").replace(llama4_beta=0.1, llama4_original_max=8192)
    pos = torch.tensor([[0, 1, 8191, 8192, 16383, 16384, 3 * 8192, 100_000]])
    expected = [
        1.0,
        1.0,
        1.0,
        1 + 0.1 * math.log(2),
        1 + 0.1 * math.log(2),
        1 + 0.1 * math.log(3),
        1 + 0.1 * math.log(4),
        1 + 0.1 * math.log(1 + 12),
    ]
    got = llama4_q_scale(args, pos)
    assert got.shape == pos.shape
    assert got[0].tolist() == pytest.approx(expected, rel=1e-6)
    assert llama4_q_scale(ModelArgs.preset("nemo-tiny"), pos) is None


def test_apply_rotary_is_a_rotation():
    """Norms of each pair are preserved, and position 0 is the identity."""
    x = torch.randn(2, 5, 3, 16)
    args = ModelArgs.preset("nemo-tiny").replace(head_dim=16)
    cos, sin = rope_table(args, 5)
    pos = torch.arange(5).expand(2, 5)
    y = apply_rotary(x, cos[pos], sin[pos])
    pair_norm = lambda t: t.unflatten(-1, (-1, 2)).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(pair_norm(y), pair_norm(x))
    torch.testing.assert_close(y[:, 0], x[:, 0])
