"""Long-context RoPE scalings that actually scale: logits past the original context equal transformers'.

A model with linear, dynamic-NTK, YaRN or llama3 scaling may run past its original context (up to
``ModelArgs.max_positions``). The oracle is transformers' MistralForCausalLM on the same weights
(written by its own ``save_pretrained``), at positions up to three times the original maximum;
tiny models with a 32-position original context keep this fast.
"""

from __future__ import annotations

import pytest
import torch

from nemo_ref.checkpoint import load_model

transformers = pytest.importorskip("transformers")
from transformers import MistralConfig, MistralForCausalLM  # noqa: E402

from tests.support import rel_err  # noqa: E402

ORIGINAL = 32  # the trained context of these tiny models
FACTOR = 4.0
T = 3 * ORIGINAL  # every test runs to three times the original context
TOL = 1e-4

# rope parameters and max_position_embeddings as a published config would state them: linear and
# dynamic scale max_position_embeddings itself; YaRN and llama3 configs give the extended length
# there and the trained one in original_max_position_embeddings.
SCALINGS = {
    "linear": ({"rope_type": "linear", "factor": FACTOR}, ORIGINAL),
    "dynamic": ({"rope_type": "dynamic", "factor": FACTOR}, ORIGINAL),
    "yarn": (
        {"rope_type": "yarn", "factor": FACTOR, "original_max_position_embeddings": ORIGINAL},
        int(FACTOR * ORIGINAL),
    ),
    "llama3": (
        {
            "rope_type": "llama3",
            "factor": FACTOR,
            "original_max_position_embeddings": ORIGINAL,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
        },
        int(FACTOR * ORIGINAL),
    ),
}


def hf_model(rope: dict, max_pos: int, seed: int = 0) -> MistralForCausalLM:
    # rope_theta 100 puts several frequencies' wavelengths inside the short original context, so
    # that every scheme's interpolated and kept bands both matter here.
    config = MistralConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=max_pos,
        rms_norm_eps=1e-5,
        rope_parameters={**rope, "rope_theta": 100.0},
        sliding_window=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = MistralForCausalLM(config).eval()
    with torch.no_grad():  # weights large enough that attention is far from uniform
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p)) if "norm" in name else p.normal_(0, 0.15)
    return model


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """{scaling: (nemo_ref model, transformers model)} on the same weights."""
    out = {}
    for name, (rope, max_pos) in SCALINGS.items():
        theirs = hf_model(rope, max_pos)
        path = tmp_path_factory.mktemp(name)
        theirs.save_pretrained(path)
        out[name] = (load_model(path, dtype=torch.float32, progress=False), theirs)
    return out


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (1, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("scaling", list(SCALINGS))
def test_logits_beyond_the_original_context_equal_transformers(pairs, scaling):
    ours, theirs = pairs[scaling]
    assert ours.args.rope_scaling.rope_type == scaling
    assert ours.args.max_positions == FACTOR * ORIGINAL >= T > ORIGINAL
    toks = tokens()
    with torch.no_grad():
        expected = theirs(toks).logits.float()
    got = ours(toks)  # no cache: positions 0..T-1 in one forward
    assert rel_err(got, expected) <= TOL, scaling

    # With a KV cache of exactly T positions (so dynamic NTK scales for T, as transformers does for
    # a T-token forward), prefill in two chunks: the second chunk lies wholly past the original.
    kv = ours.new_cache(1, T)
    first = ours(toks[:, :40], cache=kv)
    second = ours(toks[:, 40:], start_pos=40, cache=kv)
    assert rel_err(torch.cat([first, second], 1), expected) <= TOL, scaling


def test_the_oracle_sees_the_scaling(pairs):
    """Negative control: the same weights without the scaling disagree past the original context
    (and agree within it, where linear is the only scheme that changes anything)."""
    ours, _ = pairs["dynamic"]
    toks = tokens(1)
    plain = ours.args.replace(rope_scaling=type(ours.args.rope_scaling)(), max_seq_len=T)
    unscaled = type(ours)(plain, dtype=torch.float32)
    unscaled.load_state_dict(ours.state_dict())
    assert rel_err(ours(toks), unscaled(toks)) > 100 * TOL  # dynamic NTK takes effect past 32
    within = toks[:, :ORIGINAL]
    assert rel_err(ours(within), unscaled(within)) <= 1e-6  # and not before


def test_dynamic_ntk_grows_with_the_context_in_use(pairs):
    """Dynamic NTK's frequencies follow the context length: the cache's, or the call's without one."""
    ours, _ = pairs["dynamic"]
    # A fresh transformers model: one that ran 96 positions keeps their frequencies for any later
    # forward longer than the original context (its dynamic update only grows, or resets below 32).
    theirs = hf_model(*SCALINGS["dynamic"])
    toks = tokens(2)[:, :50]
    with torch.no_grad():
        expected = theirs(toks).logits.float()  # scaled for 50 positions
    assert rel_err(ours(toks), expected) <= TOL
    assert rel_err(ours(toks, cache=ours.new_cache(1, 50)), expected) <= TOL


def test_positions_past_max_positions_are_refused(pairs):
    ours, _ = pairs["linear"]
    limit = ours.args.max_positions
    with pytest.raises(ValueError, match=rf"max_len must be in \[1, {limit}\]"):
        ours.new_cache(1, limit + 1)
    with pytest.raises(
        ValueError, match=rf"positions must lie in \[0, {limit}\); this call reaches {limit + 1}"
    ):
        ours(torch.zeros(1, 1, dtype=torch.long), start_pos=limit)
