"""The embedded model's next-token distributions are shaped like a trained model's (nemo_ref/demo.py).

The probe, the server's --semantics proof and the sampling demos rely on it: with the near-uniform
logits of a plain random init no sampling knob visibly does anything. Bounds, not exact figures:
docs/architecture.md records the measured values.
"""

from __future__ import annotations

import pytest
import torch

from nemo_ref.demo import embedded_model, next_token_shape


@pytest.fixture(scope="module")
def tiny():
    return embedded_model("nemo-tiny", seed=0)


def test_next_token_distributions_look_trained(tiny):
    s = next_token_shape(tiny, n_prompts=100, seed=0)
    assert 0.3 <= s["top1_median"] <= 0.85, s  # a top token, not a certainty
    assert s["top1_p10"] >= 0.1 and s["top1_p90"] <= 0.995, s
    assert 0.5 <= s["entropy_median"] <= 3.0, s  # nats; uniform over 131072 would be 11.8
    assert s["plausible_median"] >= 3, s  # a few alternatives with p >= 0.02
    assert s["top20_mass_median"] >= 0.9 and s["top5_mass_median"] < 0.99, s  # a thin tail
    assert s["distinct_top_tokens"] >= 20, s  # the context decides, not one global favourite


def test_plain_random_init_is_flat_for_contrast():
    """What the shaping fixes: the same preset without it is near-uniform (top-1 ~ 1e-5)."""
    from nemo_ref.config import ModelArgs
    from nemo_ref.model import Transformer

    flat = Transformer(ModelArgs.preset("nemo-tiny")).init_random(0).eval()
    s = next_token_shape(flat, n_prompts=8, seed=0)
    assert s["top1_median"] < 1e-3 and s["entropy_median"] > 11.0, s


def test_control_tokens_practically_never_sampled(tiny):
    """EOS and the other control tokens sit far below the tail, so completions run to max_tokens as
    they did with the flat model (tests rely on that); a logit_bias can still make them win."""
    ids = torch.randint(1000, 131072, (16, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        p = torch.softmax(tiny(ids, last_only=True)[:, -1].double(), -1)
    assert float(p[:, :1000].sum(-1).max()) < 1e-6


def test_deterministic_and_labelled():
    a, b = embedded_model("nemo-tiny", seed=0), embedded_model("nemo-tiny", seed=0)
    assert a.random_weights is True
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    c = embedded_model("nemo-tiny", seed=1)
    assert not torch.equal(a.output.weight, c.output.weight)
