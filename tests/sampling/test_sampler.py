"""The sampler's one interface: one SamplingMetadata per step, read by both backends.

- the metadata's columns, checked against values written out by hand;
- the torch and Triton backends given the *same* metadata object agree (kept sets, probabilities,
  tokens, logprobs) and leave it untouched;
- the engine binds its backend once and builds the metadata exactly once per decode step.
"""

from __future__ import annotations

import math

import pytest
import torch
from nemo_ref.kernels import interpreted

from nemo_ref.demo import embedded_model
from nemo_ref.engine import Engine
from nemo_ref.generate import generate
from nemo_ref.sampling import SamplingError, SamplingParams, sampler
from nemo_ref.sampling.metadata import SampleRow, build_metadata
from nemo_ref.sampling.sampler import TorchSampler, TritonSampler, make_sampler
from nemo_ref.tokenizer import load_tokenizer

interpreted("sampling")  # the Triton backend runs in the interpreter on this CPU


def test_metadata_columns_by_hand():
    V = 10
    allowed = torch.tensor([True] * 5 + [False] * 5)
    rows = [
        SampleRow(SamplingParams(temperature=0.5, top_k=3, logit_bias={2: 1.5, 7: -3}), 1, 0, 4, [1, 2], [3]),
        SampleRow(SamplingParams(repetition_penalty=1.2, min_p=0.25), 1, 1, 4, [4, 4], [9], allowed),
        SampleRow(SamplingParams(temperature=0, frequency_penalty=0.5, top_p=0.5), 2, 0, 0, [0], [6, 6, 8]),
        SampleRow(
            SamplingParams(top_k=10, logprobs=True, top_logprobs=2), 3, 0, 0, [99], [-1]
        ),  # unread history
    ]
    meta = build_metadata(rows, V, "cpu")
    assert meta.batch == 4 and meta.vocab == V
    assert meta.temperature.tolist() == [0.5, 1.0, 0.0, 1.0]
    assert meta.top_k.tolist() == [3, 0, 0, 10] and meta.top_p.tolist() == [1.0, 1.0, 0.5, 1.0]
    assert meta.log_min_p.tolist() == [-math.inf, math.log(0.25), -math.inf, -math.inf]
    assert meta.repetition_penalty.tolist() == [1.0, 1.2, 1.0, 1.0]
    assert meta.frequency_penalty.tolist() == [0.0, 0.0, 0.5, 0.0]
    assert meta.bias_keys.tolist() == [2, 7] and meta.bias_values.tolist() == [1.5, -3.0]
    assert sorted(meta.repetition_keys.tolist()) == [10 + 4, 10 + 4, 10 + 9]  # row 1: P and G
    assert sorted(meta.output_keys.tolist()) == [20 + 6, 20 + 6, 20 + 8]  # row 2: G, repeats kept
    assert meta.allowed is not None and meta.allowed[1].tolist() == allowed.tolist()
    assert meta.allowed[[0, 2, 3]].all()
    assert meta.greedy == (False, False, True, False)
    assert meta.truncates == (True, True, True, False)  # top_k = V truncates nothing
    assert meta.logprobs == (None, None, None, "raw") and meta.top_logprobs == (0, 0, 0, 2)
    for backend in (TorchSampler(), TritonSampler()):  # logits of another shape than the rows'
        with pytest.raises(SamplingError, match=r"for 4 rows of 10 tokens"):
            backend.sample(torch.zeros(3, V), meta)
    with pytest.raises(SamplingError, match="history"):  # a history a penalty reads is checked
        build_metadata([SampleRow(SamplingParams(presence_penalty=1), 0, 0, 0, [], [V])], V, "cpu")
    with pytest.raises(SamplingError, match="allowed mask"):
        build_metadata([SampleRow(SamplingParams(), 0, 0, 0, [], [], allowed[:4])], V, "cpu")


def _mixed_rows(V: int) -> tuple[torch.Tensor, list[SampleRow]]:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, V, generator=g) * 3
    allowed = torch.rand(V, generator=g) > 0.3
    hist = torch.randint(0, V, (6, 12), generator=g)
    settings = [
        dict(temperature=0.7, top_k=20, top_p=0.9, logprobs=True, top_logprobs=3),
        dict(min_p=0.05, repetition_penalty=1.3, logit_bias={5: 4.0, 17: -2.0}),
        dict(temperature=1.3, top_p=0.6, presence_penalty=0.5, frequency_penalty=0.3, logprobs=True),
        dict(temperature=0, repetition_penalty=1.1, logprobs=True, top_logprobs=2, logprobs_mode="processed"),
        dict(top_k=5, logprobs=True, top_logprobs=4, logprobs_mode="processed"),
        dict(),
    ]
    rows = [
        SampleRow(SamplingParams(**s), 7, b, 3, hist[b, :6], hist[b, 6:], allowed if b in (1, 4) else None)
        for b, s in enumerate(settings)
    ]
    return logits, rows


def test_both_backends_read_the_same_metadata_and_agree():
    V = 256
    logits, rows = _mixed_rows(V)
    meta = build_metadata(rows, V, "cpu")
    before = {k: v.clone() for k, v in vars(meta).items() if isinstance(v, torch.Tensor)}
    torch_backend, triton_backend = TorchSampler(), TritonSampler()
    want = torch_backend.distribution(logits, meta)
    got = triton_backend.distribution(logits, meta)
    assert torch.equal(got > 0, want > 0), "kept sets differ"
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)
    by_torch = torch_backend.sample(logits, meta)
    by_triton = triton_backend.sample(logits, meta)
    assert [r.token for r in by_triton] == [r.token for r in by_torch]
    for b, (t, k) in enumerate(zip(by_torch, by_triton, strict=True)):
        if meta.logprobs[b] is None:
            assert math.isnan(t.logprob) and math.isnan(k.logprob) and t.top == k.top == []
            continue
        assert k.logprob == pytest.approx(t.logprob, rel=1e-4, abs=1e-5), f"row {b}"
        assert [i for i, _ in k.top] == [i for i, _ in t.top], f"row {b}"
    for name, tensor in before.items():  # neither backend edits the shared columns in place
        assert torch.equal(getattr(meta, name), tensor), name
    # the rows call: the metadata built from the rows, then the same result
    assert [r.token for r in torch_backend(logits, rows)] == [r.token for r in by_torch]


def test_make_sampler_chooses_once():
    assert isinstance(make_sampler("torch"), TorchSampler)
    assert isinstance(make_sampler("triton"), TritonSampler)
    assert isinstance(make_sampler(None, "cpu"), TorchSampler)  # backends.py: torch off CUDA

    def mine(logits, rows):
        return []

    assert make_sampler(mine) is mine
    with pytest.raises(ValueError, match="sampler must be 'torch', 'triton' or a callable"):
        make_sampler("cuda")


def test_the_engine_builds_the_metadata_once_per_step(monkeypatch):
    model, tok = embedded_model("nemo-tiny", seed=0), load_tokenizer()
    builds: list[int] = []  # the batch of each build
    steps: list[int] = []  # the rows sampled at each engine step

    def counting_build(rows, vocab, device):
        builds.append(len(rows))
        return build_metadata(rows, vocab, device)

    real_sample = Engine._sample

    def counting_sample(self, logits_by_slot):
        steps.append(len(logits_by_slot))
        return real_sample(self, logits_by_slot)

    monkeypatch.setattr(sampler, "build_metadata", counting_build)
    monkeypatch.setattr(Engine, "_sample", counting_sample)
    params = SamplingParams(n=3, max_tokens=4, seed=4, temperature=0.9, top_p=0.9, repetition_penalty=1.1)
    out = generate(model, tok, "Count the steps", params, sampler="torch")
    assert 2 <= len(steps) <= 4 and steps[0] == 3  # several decode steps, all three choices at first
    assert builds == steps  # one build per step, of every row sampled in it
    assert sum(steps) == out.usage.completion_tokens  # every sampled token came from those builds
