"""The sampling kernel under Triton's interpreter against the pure-Python reference sampler.

Kept sets must be identical and probabilities agree to float32 accuracy. Cut-offs (top_p, min_p)
are placed half-way between two values the reference computes, so float32-vs-float64 rounding
cannot decide them; top_k ties are exact and placed at the cut on purpose.
"""

from __future__ import annotations

import math

import pytest
import torch
from nemo_ref.kernels import interpreted

from nemo_ref.sampling import SamplingError, SamplingParams, reference
from nemo_ref.sampling.metadata import SampleRow, build_metadata
from nemo_ref.sampling.rng import uniform
from nemo_ref.sampling.sampler import TritonSampler

S = interpreted("sampling")  # sets TRITON_INTERPRET=1 (reloads the module if imported compiled)

BLOCK_V = 256  # small chunks: every row spans several, so cross-chunk ties and argmax are exercised


def row(params: SamplingParams, prompt=(), output=(), allowed=None, seed=0, step=0) -> SampleRow:
    return SampleRow(params, seed, 0, step, list(prompt), list(output), allowed)


def kernel_probs(logits: torch.Tensor, rows: list[SampleRow], block_v: int = BLOCK_V, **kw) -> torch.Tensor:
    return S.probabilities(logits, **kernel_inputs(rows, logits.shape[1]), block_v=block_v, **kw)


def kernel_inputs(rows: list[SampleRow], vocab: int) -> dict:
    return TritonSampler.kernel_inputs(build_metadata(rows, vocab, "cpu"))


def expected_probs(logits: torch.Tensor, rows: list[SampleRow]) -> torch.Tensor:
    allowed = [None if r.allowed is None else r.allowed.tolist() for r in rows]
    return torch.tensor(
        [
            reference.distribution(logits[b], r.params, r.prompt_tokens, r.output_tokens, allowed[b])
            for b, r in enumerate(rows)
        ],
        dtype=torch.float64,
    )


def assert_same_distribution(got: torch.Tensor, want: torch.Tensor) -> None:
    """Same kept set (up to float32 underflow: p < 1e-30 may round to 0), same probabilities."""
    for b in range(want.shape[0]):
        dropped = (got[b] == 0) & (want[b] > 0)
        assert not (got[b] > 0)[want[b] == 0].any(), f"row {b}: keeps a token the reference drops"
        assert (want[b][dropped] < 1e-30).all(), f"row {b}: drops a token the reference keeps"
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)


def stage(logits, params: SamplingParams, name: str, r: SampleRow | None = None) -> list[float]:
    """The reference's logits after the named stage."""
    r = r or row(params)
    return dict(reference.pipeline(logits, params, r.prompt_tokens, r.output_tokens))[name]


def top_p_between(z: list[float], rank: int) -> float:
    """A top_p half-way between the masses before ranks ``rank`` and ``rank + 1``."""
    q = reference.softmax(z)
    order = reference.rank_order(z)
    before = sum(q[i] for i in order[:rank])
    return before + q[order[rank]] / 2


def min_p_between(z: list[float], rank: int) -> float:
    """A min_p whose cut ln(m) lies half-way between the values at ranks ``rank`` and ``rank + 1``."""
    values = sorted({x for x in z if x > -math.inf}, reverse=True)
    return math.exp((values[rank] + values[rank + 1]) / 2)


# ---- the spec's worked examples ------------------------------------------------------------------


@pytest.mark.parametrize(
    "logits, params, kept",
    [
        ([3, 2, 1], SamplingParams(top_p=0.8, temperature=0.5), [0]),
        ([3, 1, 0], SamplingParams(min_p=0.2, temperature=2), [0, 1, 2]),
        ([math.log(x) for x in (0.5, 0.3, 0.15, 0.05)], SamplingParams(top_p=0.82, min_p=0.2), [0, 1]),
        ([2, 1, 1, 0], SamplingParams(top_k=2), [0, 1]),
        ([2, -2, 0], SamplingParams(repetition_penalty=1.3), [0, 1, 2]),
        ([1, 5, 5, 2], SamplingParams(temperature=0), [1]),
        ([1, 5, 5, 2], SamplingParams(top_p=0.0), [1]),
    ],
)
def test_spec_examples(logits, params, kept):
    z = torch.tensor([logits], dtype=torch.float32)
    rows = [row(params, prompt=[0, 1])]
    got = kernel_probs(z, rows)
    assert (got[0] > 0).nonzero().flatten().tolist() == kept
    assert_same_distribution(got, expected_probs(z, rows))


# ---- random rows against the reference -----------------------------------------------------------


def random_rows(V: int, seed: int) -> tuple[torch.Tensor, list[SampleRow]]:
    """A batch whose rows each exercise other stages; logits with and without forced ties."""
    g = torch.Generator().manual_seed(seed)
    smooth = torch.randn(V, generator=g) * 2.5
    tied = torch.round(torch.randn(V, generator=g) * 3) / 2  # ~20 distinct values: ties everywhere
    logits = torch.stack([smooth, tied, smooth, tied, smooth, tied, smooth, tied]).float()
    hist = torch.randint(0, V, (40,), generator=g).tolist()
    prompt, output = hist[:25], hist[25:] + hist[25:30]  # repeated ids: counts > 1
    allowed = torch.rand(V, generator=g) < 0.6
    bias = {int(i): float(b) for i, b in zip(hist[:6], (5.0, -3.0, 1.5, -100.0, 0.5, 2.0), strict=True)}

    def p(i: int, **kw) -> SamplingParams:
        """Params for row i; ``min_p`` and ``top_p`` given as the rank to cut after."""
        if "min_p" in kw:
            z = stage(logits[i], SamplingParams(temperature=kw["temperature"]), "temperature")
            kw["min_p"] = min_p_between(z, kw["min_p"])
        if "top_p" in kw:
            rank = kw.pop("top_p")
            before = SamplingParams(**kw)
            last = "top_k" if before.top_k > 0 else "min_p" if before.min_p > 0 else "temperature"
            kw["top_p"] = top_p_between(stage(logits[i], before, last), rank)
        return SamplingParams(**kw)

    rows = [
        row(p(0, temperature=0.7, top_k=40, top_p=12)),
        row(p(1, temperature=1.3, top_k=60)),  # top_k cuts through a run of ties
        row(p(2, temperature=0.9, min_p=30, top_p=5)),
        row(p(3, temperature=1.0, top_p=7)),  # the top_p cut falls inside a run of ties
        row(
            p(
                4,
                temperature=1.1,
                repetition_penalty=1.4,
                presence_penalty=0.5,
                frequency_penalty=0.3,
                logit_bias=bias,
            ),
            prompt,
            output,
        ),
        row(p(5, temperature=0.8, repetition_penalty=0.7, top_k=9), prompt, output, allowed=allowed),
        row(p(6, temperature=0, frequency_penalty=-1.0, logit_bias=bias), prompt, output),
        row(p(7, temperature=0, repetition_penalty=1.2), prompt, output),  # greedy over ties
    ]
    return logits, rows


@pytest.mark.parametrize(("seed", "candidates"), [(0, 4096), (1, 4096), (0, 16)])
def test_random_rows_match_reference(seed, candidates):
    # 4096 candidates hold every survivor of these 777-token rows: S7..S9 run on the compacted
    # buffer; 16 hold too few for most rows: the whole-row search (and the buffer for top_k 9).
    logits, rows = random_rows(777, seed)
    assert_same_distribution(kernel_probs(logits, rows, candidates=candidates), expected_probs(logits, rows))


def test_nemo_vocab():
    # Nemo's 131072-token vocabulary, top_k and top_p on (chunks of 16384: the interpreter's
    # cost is per operation, so the default 2048 would take ~8x longer here).
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(1, 131072, generator=g) * 3).float()
    z = stage(logits[0], SamplingParams(temperature=0.7, top_k=50), "top_k")
    rows = [row(SamplingParams(temperature=0.7, top_k=50, top_p=top_p_between(z, 20)))]
    got = kernel_probs(logits, rows, block_v=16384)
    assert_same_distribution(got, expected_probs(logits, rows))


def test_top_k_and_top_p_take_three_passes_over_the_row():
    # Instrumented, not timed: the kernel counts its passes over the 131072-wide row. S0..S3, the
    # candidate histogram and the compaction read the row; top_k's and top_p's searches and the
    # draw run on the buffer of candidates (a few thousand entries at most). Before: ~26 row passes.
    g = torch.Generator().manual_seed(4)
    logits = (torch.randn(1, 131072, generator=g) * 3).float()
    u = torch.tensor([0.3], dtype=torch.float64)
    kw = dict(temperature=0.8, top_k=50, top_p=0.9, min_p=0.0, block_v=16384)
    tokens, _, _, passes, launch = S.sampler_launch(logits, u, False, **kw)
    launch()
    assert passes[:, 0].tolist() == [3]
    assert (passes[:, 1] <= 40).all()
    # The same rows through the whole-row search (a buffer too small to hold the top 50).
    tokens_row, _, _, passes_row, launch = S.sampler_launch(logits, u, False, candidates=16, **kw)
    launch()
    assert (passes_row[:, 0] >= 15).all() and (passes_row[:, 1] == 0).all()
    assert torch.equal(tokens, tokens_row)
    want = reference.distribution(logits[0], SamplingParams(temperature=0.8, top_k=50, top_p=0.9), [], [])
    assert want[tokens[0]] > 0
    # Plain sampling (nothing truncates, the survivors do not fit): S0..S3, histogram, mass, draw.
    _, _, _, passes, launch = S.sampler_launch(logits, u, False, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
                                               block_v=16384)  # fmt: skip
    launch()
    assert passes[:, 0].tolist() == [4]


def test_parameters_as_numbers():
    logits = torch.tensor([[0.0, 2.0, 1.0, 2.0]])
    got = S.probabilities(logits, temperature=1.0, top_p=1.0, top_k=2, min_p=0.0)
    assert (got[0] > 0).tolist() == [False, True, False, True]


# ---- the draw ------------------------------------------------------------------------------------


def test_draw_picks_the_token_whose_cdf_interval_holds_u():
    logits, rows = random_rows(777, 0)
    want = expected_probs(logits, rows)
    for target in ("first", "middle", "last"):
        u, expected = [], []
        for b in range(len(rows)):
            kept = (want[b] > 0).nonzero().flatten().tolist()
            token = {"first": kept[0], "middle": kept[len(kept) // 2], "last": kept[-1]}[target]
            cdf = want[b].cumsum(0)
            lo = float(cdf[token - 1]) if token > 0 else 0.0
            u.append((lo + float(cdf[token])) / 2)  # the middle of the token's interval
            expected.append(token)
        got = S.sample(logits, **kernel_inputs(rows, 777), u=torch.tensor(u), block_v=1024)
        assert got.tolist() == expected


def test_triton_sampler_matches_reference_sample():
    logits, rows = random_rows(777, 1)
    for b, r in enumerate(rows):  # seeds with a draw away from a CDF boundary; logprobs on
        params = SamplingParams(**{**vars(r.params), "logprobs": True, "top_logprobs": 5})
        if b % 2:
            params = SamplingParams(**{**vars(params), "logprobs_mode": "processed"})
        r.params, r.seed = params, 100 + b
        cdf = expected_probs(logits[b : b + 1], [r])[0].cumsum(0)
        while (cdf - uniform(r.seed, 0, 0)).abs().min() < 1e-4:
            r.seed += 1000
    got = TritonSampler()(logits, rows)
    for b, r in enumerate(rows):
        allowed = None if r.allowed is None else r.allowed.tolist()
        want = reference.sample(
            logits[b], r.params, r.prompt_tokens, r.output_tokens, seed=r.seed, allowed=allowed
        )
        assert got[b].token == want.token, f"row {b}"
        assert got[b].logprob == pytest.approx(want.logprob, rel=1e-4, abs=1e-5)
        assert [i for i, _ in got[b].top] == [i for i, _ in want.top]
        assert [v for _, v in got[b].top] == pytest.approx([v for _, v in want.top], rel=1e-4, abs=1e-5)


def test_all_tokens_removed_is_an_error():
    logits = torch.zeros(2, 300)
    allowed = torch.ones(2, 300, dtype=torch.bool)
    allowed[1] = False
    with pytest.raises(SamplingError, match=r"rows \[1\]"):
        S.sample(logits, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, u=0.5, allowed=allowed)


# ---- raw logprobs --------------------------------------------------------------------------------


def test_raw_logprobs_and_top_entries():
    g = torch.Generator().manual_seed(5)
    logits = torch.round(torch.randn(3, 600, generator=g) * 4) / 4  # ties among the top entries
    allowed = torch.ones(3, 600, dtype=torch.bool)
    allowed[1] = torch.rand(600, generator=g) < 0.5
    allowed[2] = False
    allowed[2, [7, 300, 599]] = True  # fewer allowed tokens than top_n
    lp, ids, values = S.raw_logprobs(logits, allowed, top_n=8, block_v=BLOCK_V)
    for b in range(3):
        want = reference.raw_logprobs(logits[b], allowed[b].tolist())
        torch.testing.assert_close(
            lp[b].double(), torch.tensor(want, dtype=torch.float64), rtol=1e-5, atol=1e-5
        )
        top = reference.top_entries(want, 8)
        n = len(top)
        assert ids[b, :n].tolist() == [i for i, _ in top]
        assert values[b, :n].tolist() == pytest.approx([v for _, v in top], abs=1e-5)
        assert ids[b, n:].tolist() == [-1] * (8 - n)
    assert S.raw_logprobs(logits, top_n=0)[1].shape == (3, 0)


@pytest.mark.parametrize(
    ("value", "where", "temperature"),
    [(math.nan, 250, 1.0), (math.inf, 9, 0.0), (math.nan, 3, 0.0)],  # 3: masked out by the grammar
)
def test_nan_or_plus_inf_logits_are_a_sampling_error(value, where, temperature):
    # docs/sampling.md: NaN or +inf logits are a SamplingError, greedy (T = 0) included, even
    # where the grammar masks the token out (the spec checks the raw logits); never a token.
    logits = torch.randn(3, 300, generator=torch.Generator().manual_seed(1))
    logits[1, where] = value
    allowed = torch.ones(3, 300, dtype=torch.bool)
    allowed[1, 3] = False
    with pytest.raises(SamplingError, match=r"rows \[1\]: logits contain NaN or \+inf"):
        S.sample(logits, temperature=temperature, top_p=0.9, top_k=20, min_p=0.0, u=0.5, allowed=allowed,
                 block_v=BLOCK_V)  # fmt: skip
    with pytest.raises(SamplingError):  # the reference agrees
        reference.sample(
            logits[1].tolist(),
            SamplingParams(temperature=temperature),
            [],
            [],
            seed=0,
            allowed=allowed[1].tolist(),
        )
    # check=False: the row is marked -2, the others are sampled.
    tokens = S.sample(logits, temperature=temperature, top_p=0.9, top_k=20, min_p=0.0, u=0.5, check=False,
                      block_v=BLOCK_V)  # fmt: skip
    assert tokens[1] == -2 and (tokens[[0, 2]] >= 0).all()


def test_raw_logprobs_rows_with_nothing_allowed_or_nan_are_nan_without_entries():
    # Defined by explicit tests in the kernel, not by min/max's NaN rules (which differ between
    # the interpreter and the GPU): NaN row, ids -1, values -inf. top_n = 1 is the launch that
    # Triton specialises (an int equal to 1); it must work.
    logits = torch.randn(3, 500, generator=torch.Generator().manual_seed(2))
    logits[2, 17] = math.nan
    allowed = torch.ones(3, 500, dtype=torch.bool)
    allowed[1] = False
    lp, ids, values = S.raw_logprobs(logits, allowed, top_n=1, block_v=BLOCK_V)
    assert torch.isnan(lp[1:]).all() and not torch.isnan(lp[0]).any()
    assert ids[:, 0].tolist() == [int(logits[0].argmax()), -1, -1]
    assert values[1:, 0].tolist() == [-math.inf, -math.inf]
    assert values[0, 0].item() == pytest.approx(logits[0].log_softmax(0).max().item(), abs=1e-5)
