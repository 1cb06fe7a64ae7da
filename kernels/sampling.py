"""Sampling kernels: the S0..S9 pipeline of docs/sampling.md, one Triton program per row, no sort.

``sample(logits, temperature=..., top_p=..., top_k=..., min_p=..., u=...)`` returns one token id
per row; ``probabilities(...)`` the final distribution (for testing); ``raw_logprobs(...)`` the
S0 log-softmax and its ``top_n`` entries. Every per-row parameter is a tensor ``[B]`` (a Python
number is broadcast), so one launch serves a batch whose rows use different settings. The
engine's adapter (``nemo_ref.sampling.sampler.TritonSampler``) builds these arguments from the
step's ``SamplingMetadata``; this module knows nothing of rows or requests.

Truncation without sorting the vocabulary: S7 and S8 are binary searches over order-preserving
int32 keys of the values (``sampling_search.py`` states the algorithm). Their input is a small
buffer, not the row: a histogram pass over the row finds the top buckets of ``y`` that hold what
the stages keep (top_k's k tokens, or top_p's mass) within 4096 candidates, a compaction pass
copies them out in id order, and the searches and the draw run there (FlashInfer's and vLLM's
samplers compact candidates the same way). Only when the buffer cannot hold them (top_p alone on
a nearly flat row) do the searches run over the whole row (~16-22 passes for top_p alone).

Precision: values, exponentials and sums in float32 (the reference is float64); the targets
``p * Z`` and ``u * Z`` and their comparisons in float64, so a top_p like 0.3 is not rounded to
float32 first (that decides exact-tie cases such as 15 of 50 equal tokens at p = 0.3).
Distributions agree to ~1e-6, and kept sets agree except when a threshold falls within float32
rounding of a value, or exactly on a cumulative mass (20 tokens of mass 0.05 and top_p = 0.5:
exactly 10 precede the cut, but the reference's float64 running sum of ten 0.05 is
0.49999999999999994 and keeps an 11th); there the reference's own answer is rounding.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from nemo_ref.kernels.sampling_search import (
    ID_BIG,
    KEY_NEG_INF,
    KEY_OFF,
    _bucket,
    _chunk,
    _cut,
    _draw,
    _row_id,
    _weigh,
)

from nemo_ref.sampling.reference import SamplingError  # the spec's error: a row with nothing to sample

from .launch import Launch

TOKEN_NAN: tl.constexpr = tl.constexpr(-2)  # a row with a NaN or +inf logit (-1: nothing finite)
FLOAT_MAX = 3.4028234663852886e38  # min_p off: the floor -FLT_MAX drops only -inf

DEFAULT_BLOCK_V = 2048
DEFAULT_NUM_WARPS = 4
CANDIDATES = 4096  # the candidate buffer: S7..S9 run on it when it holds what they keep
N_BUCKETS = 256  # candidate histogram: 32 units of y below the maximum, 8 buckets per unit


@triton.jit
def _penalized_logits(
    logits_row, bias_row, prompt_row, counts_row, allowed_row, offs, V, rep, pres, freq,
    HAS_BIAS: tl.constexpr, HAS_PENALTIES: tl.constexpr, HAS_ALLOWED: tl.constexpr,
):  # fmt: skip
    """S0..S3 for one chunk: grammar mask, logit bias, repetition, presence and frequency.

    Also how many logits are NaN or +inf, before the mask or after S3: the spec's SamplingError.
    Counted explicitly because the GPU's min/max drop NaN where the interpreter propagates it.
    """
    in_vocab = offs < V
    z = tl.load(logits_row + offs, mask=in_vocab, other=float("-inf")).to(tl.float32)
    bad = (z != z) | (z == float("inf"))
    if HAS_ALLOWED:
        z = tl.where(tl.load(allowed_row + offs, mask=in_vocab, other=0) != 0, z, float("-inf"))
    if HAS_BIAS:
        z += tl.load(bias_row + offs, mask=in_vocab, other=0.0)
    if HAS_PENALTIES:
        count = tl.load(counts_row + offs, mask=in_vocab, other=0)
        seen = (tl.load(prompt_row + offs, mask=in_vocab, other=0) != 0) | (count > 0)
        z = tl.where(seen, tl.where(z > 0, z / rep, z * rep), z)
        z -= count.to(tl.float32) * freq + tl.where(count > 0, pres, 0.0)
    if HAS_BIAS or HAS_PENALTIES:
        bad |= z == float("inf")
    return z, tl.sum(bad.to(tl.int32))


@triton.jit(do_not_specialize=["V"])  # V % 16 == 0 specialised, the logits-only variant spills
def _sample_kernel(
    logits, bias, prompt_mask, counts, allowed,
    temperature, top_p, top_k, min_p_floor, u, rep_penalty, pres_penalty, freq_penalty,
    z_buf, probs, tokens, cand_z, cand_id, passes, V,
    stride_logits, stride_bias, stride_prompt, stride_counts, stride_allowed, stride_z, stride_p,
    HAS_BIAS: tl.constexpr, HAS_PENALTIES: tl.constexpr, HAS_ALLOWED: tl.constexpr,
    WRITE_PROBS: tl.constexpr, BLOCK_V: tl.constexpr, CAP: tl.constexpr, N_BUCKETS: tl.constexpr,
):  # fmt: skip
    """One row: S0..S3 into a float32 scratch row, then S4 or S5..S9, then the draw.

    Grid ``(B,)``. Passes over the row (``V`` = 131072: 512 KiB of float32 each):
      1. read logits (+ bias, prompt mask, counts, allowed), write z, keep max and argmax (S4);
      2. the candidate histogram of ``y`` (S5, S6 on the fly), the survivors' count and mass;
      3. compaction of the candidates into a buffer of ``CAP`` (ids ascending), when it holds
         what S7..S9 keep;
    then phase 4: top_k, top_p (search + tie pass each, sampling_search.py) and the draw (mass
    + prefix) on the buffer, ``CAP`` entries at most, from L1/L2; when the buffer cannot hold
    them, over the row: 1 + <= 32 + 1 passes per stage, 2 for the draw. With
    ``WRITE_PROBS``, one more row pass writes the distribution. ``passes[b]`` records the row and
    buffer passes made (instrumentation for the tests). Memory traffic: the inputs once from HBM
    (4 B/token of logits, 4 of bias, 1 of prompt mask, 4 of counts, 1 of mask, each only if
    present), 4 B/token of z written, then 4 B/token per further row pass, mostly from L2:
    latency-bound at batch 1 (one SM works), throughput-bound once the batch fills the SMs.
    Token -1 marks a row where every logit is -inf after S3, -2 one with a NaN or +inf logit
    (before the mask or after S3): errors, the launcher raises ``SamplingError``.
    """
    b = tl.program_id(0).to(tl.int64)  # b * V exceeds 2**31 past batch 16383
    z_row = z_buf + b * stride_z
    rep = tl.load(rep_penalty + b) if HAS_PENALTIES else 1.0
    pres = tl.load(pres_penalty + b) if HAS_PENALTIES else 0.0
    freq = tl.load(freq_penalty + b) if HAS_PENALTIES else 0.0

    zmax = float("-inf")
    argmax = -1
    n_bad = 0
    for start in range(0, V, BLOCK_V):
        # -- pass 1 (the row, from HBM): S0..S3 into z, kept for the later passes; max, argmax --
        offs = start + tl.arange(0, BLOCK_V)
        z, chunk_bad = _penalized_logits(
            logits + b * stride_logits, bias + b * stride_bias, prompt_mask + b * stride_prompt,
            counts + b * stride_counts, allowed + b * stride_allowed, offs, V, rep, pres, freq,
            HAS_BIAS, HAS_PENALTIES, HAS_ALLOWED,
        )  # fmt: skip
        n_bad += chunk_bad
        tl.store(z_row + offs, z, mask=offs < V)
        chunk_max = tl.max(z)
        chunk_arg = tl.min(tl.where(z == chunk_max, offs, ID_BIG))
        argmax = tl.where(chunk_max > zmax, chunk_arg, argmax)  # strict: ties to the lower id
        zmax = tl.maximum(zmax, chunk_max)

    temp = tl.load(temperature + b)
    token = argmax  # S4 (T == 0), or -1 when nothing is finite
    row_passes = 1
    buffer_passes = 0
    if (temp > 0) & (zmax > float("-inf")) & (n_bad == 0):
        floor = tl.load(min_p_floor + b)
        k = tl.load(top_k + b)
        p = tl.load(top_p + b)
        hist = tl.zeros([N_BUCKETS], tl.int32)
        n = 0
        total = 0.0
        for start in range(0, V, BLOCK_V):
            # -- pass 2 (z): S5 and S6 on the fly; the survivors per bucket of y (width
            # 1 / BUCKETS_PER_UNIT, the top first), their count and total mass --
            offs = start + tl.arange(0, BLOCK_V)
            z = tl.load(z_row + offs, mask=offs < V, other=float("-inf"))
            y = tl.math.div_rn(z - zmax, temp)
            alive = (offs < V) & (y >= floor)
            hist += tl.histogram(_bucket(y, N_BUCKETS), N_BUCKETS, mask=alive)
            n += tl.sum(alive.to(tl.int32))
            total += tl.sum(tl.where(alive, tl.exp(y), 0.0))
        row_passes += 1
        k_on = (k > 0) & (k < n)
        p_on = p < 1.0
        # The most top buckets whose tokens fit the candidate buffer. It must hold every token
        # top_k keeps (k of them), or every survivor when nothing truncates; for top_p alone, the
        # compaction pass checks that it holds the mass top_p keeps.
        cum = tl.cumsum(hist, 0)
        fits = cum <= CAP
        n_fit = tl.sum(fits.to(tl.int32))
        n_cand = tl.max(tl.where(fits, cum, 0))
        use_buffer = tl.where(k_on, n_cand >= k, tl.where(p_on, n_cand > 0, n_fit == N_BUCKETS))
        mass_c = 0.0
        if use_buffer:
            run = 0
            for start in range(0, V, BLOCK_V):
                # -- pass 3 (z): compact the candidates (ids ascending) into the buffer --
                offs = start + tl.arange(0, BLOCK_V)
                z = tl.load(z_row + offs, mask=offs < V, other=float("-inf"))
                y = tl.math.div_rn(z - zmax, temp)
                keep = (offs < V) & (y >= floor) & (_bucket(y, N_BUCKETS) < n_fit)
                slot = run + tl.cumsum(keep.to(tl.int32), 0) - 1
                tl.store(cand_z + b * CAP + slot, z, mask=keep)
                tl.store(cand_id + b * CAP + slot, offs, mask=keep)
                run += tl.sum(keep.to(tl.int32))
                mass_c += tl.sum(tl.where(keep, tl.exp(y), 0.0))
            row_passes += 1
            if p_on & ~k_on:  # top_p alone: the buffer must hold the mass it keeps
                use_buffer = mass_c.to(tl.float64) >= p * total.to(tl.float64)
        # -- phase 4: S7..S9 on the buffer (positions ascend with ids, so ties still go to the
        # lower id) or, when it cannot hold what they keep, on the whole row: the same searches --
        src = tl.where(use_buffer, cand_z + b * CAP, z_row)
        n_src = tl.where(use_buffer, n_cand, V)
        k_key, k_id, p_key, p_id = KEY_OFF, 0, KEY_OFF, 0
        n_pass = 0
        if k_on:  # S7
            _n, lo, _unused = _weigh(
                src, n_src, KEY_NEG_INF, False, zmax, temp, floor, k_key, k_id, p_key, p_id, BLOCK_V
            )  # fmt: skip
            k_key, k_id, n_cut = _cut(
                src, n_src, k.to(tl.float64), False, lo, zmax, temp, floor,
                k_key, k_id, p_key, p_id, BLOCK_V,
            )  # fmt: skip
            n_pass += 1 + n_cut
        if p_on:  # S8 on the survivors of S7 (p == 0 keeps the top token: a top-1 count cut)
            use_mass = p > 0.0
            z_k, lo, _unused = _weigh(
                src, n_src, KEY_NEG_INF, use_mass, zmax, temp, floor, k_key, k_id, p_key, p_id,
                BLOCK_V,
            )  # fmt: skip
            # Top_p alone on the buffer: its mass is the row's (the buffer holds a prefix only).
            z_k = tl.where(use_buffer & ~k_on & use_mass, total, z_k)
            target = tl.where(use_mass, p * z_k.to(tl.float64), 1.0)
            p_key, p_id, n_cut = _cut(
                src, n_src, target, use_mass, lo, zmax, temp, floor, k_key, k_id, p_key, p_id,
                BLOCK_V,
            )  # fmt: skip
            n_pass += 1 + n_cut
        token, mass, n_draw = _draw(
            src, n_src, tl.load(u + b), zmax, temp, floor, k_key, k_id, p_key, p_id, BLOCK_V
        )  # fmt: skip
        n_pass += n_draw
        if use_buffer:
            buffer_passes += n_pass
            token = tl.load(cand_id + b * CAP + token)
            # The cuts in row ids (for the probabilities): the buffer position of the last tie
            # kept becomes its id; -1 keeps no tie, ID_BIG - 1 every tie.
            k_id = _row_id(cand_id + b * CAP, k_id, n_cand)
            p_id = _row_id(cand_id + b * CAP, p_id, n_cand)
        else:
            row_passes += n_pass
        if WRITE_PROBS:
            for start in range(0, V, BLOCK_V):
                # -- last pass (z): the final distribution, q / sum(q) on the survivors --
                offs, y, _key, keep = _chunk(
                    z_row, start, V, zmax, temp, floor, k_key, k_id, p_key, p_id, BLOCK_V
                )  # fmt: skip
                tl.store(probs + b * stride_p + offs, tl.where(keep, tl.exp(y), 0.0) / mass, mask=offs < V)
            row_passes += 1
    elif WRITE_PROBS:
        for start in range(0, V, BLOCK_V):
            # -- last pass: greedy's one-hot; NaN where nothing is finite or a logit is NaN/+inf --
            offs = start + tl.arange(0, BLOCK_V)
            one_hot = tl.where(offs == argmax, 1.0, 0.0)
            one_hot = tl.where((argmax >= 0) & (n_bad == 0), one_hot, float("nan"))
            tl.store(probs + b * stride_p + offs, one_hot, mask=offs < V)
    tl.store(passes + b * 2, row_passes)
    tl.store(passes + b * 2 + 1, buffer_passes)
    token = tl.where(n_bad > 0, TOKEN_NAN, token)
    tl.store(tokens + b, token.to(tl.int64))


def _per_row(x: float | int | torch.Tensor, B: int, dtype: torch.dtype, device) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=dtype, device=device)  # a Python float straight to float64
    return t.expand(B).contiguous() if t.dim() == 0 else t.contiguous()


def sampler_launch(
    logits: torch.Tensor, u: torch.Tensor | float, write_probs: bool, *, temperature, top_p, top_k,
    min_p, repetition_penalty=None, presence_penalty=None, frequency_penalty=None, logit_bias=None,
    prompt_mask=None, output_counts=None, allowed=None, block_v: int = DEFAULT_BLOCK_V,
    num_warps: int = DEFAULT_NUM_WARPS, candidates: int = CANDIDATES,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, Launch]:  # fmt: skip
    """The outputs (tokens, probabilities or None, logits after S3, passes ``[B, 2]``: passes
    over the row and over the candidate buffer) and the launch of ``_sample_kernel``, checked and
    not run (``_compile`` compiles exactly this launch)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got {tuple(logits.shape)}")
    B, V = logits.shape
    dev = logits.device
    logits = logits if logits.stride(-1) == 1 else logits.contiguous()
    f32 = torch.float32
    min_p = _per_row(min_p, B, torch.float64, dev)
    floor = torch.where(min_p > 0, min_p.log(), torch.full_like(min_p, -FLOAT_MAX)).to(f32)
    has_pen = any(x is not None for x in (repetition_penalty, presence_penalty, frequency_penalty))
    if has_pen:
        prompt_mask = torch.zeros_like(logits, dtype=torch.uint8) if prompt_mask is None else prompt_mask
        output_counts = (
            torch.zeros_like(logits, dtype=torch.int32) if output_counts is None else output_counts
        )
    pen = [_per_row(1.0 if x is None else x, B, f32, dev) for x in (repetition_penalty,)] + [
        _per_row(0.0 if x is None else x, B, f32, dev) for x in (presence_penalty, frequency_penalty)
    ]  # fmt: skip

    def matrix(x: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        if x is None:
            return logits  # never read: its HAS_ flag is off
        if x.shape != (B, V):
            raise ValueError(f"per-token inputs must be [B={B}, V={V}], got {tuple(x.shape)}")
        x = x.view(torch.uint8) if x.dtype == torch.bool else x.to(dtype)
        return x.contiguous()

    bias_t = matrix(logit_bias, f32)
    prompt_t = matrix(prompt_mask if has_pen else None, torch.uint8)
    counts_t = matrix(output_counts if has_pen else None, torch.int32)
    allowed_t = matrix(allowed, torch.uint8)
    z_buf = torch.empty((B, V), device=dev, dtype=f32)
    probs = torch.empty((B, V), device=dev, dtype=f32) if write_probs else z_buf
    tokens = torch.empty(B, device=dev, dtype=torch.int64)
    cand_z = torch.empty((B, candidates), device=dev, dtype=f32)
    cand_id = torch.empty((B, candidates), device=dev, dtype=torch.int32)
    passes = torch.empty((B, 2), device=dev, dtype=torch.int32)
    launch = Launch(
        _sample_kernel,
        (B,),
        (
            logits, bias_t, prompt_t, counts_t, allowed_t,
            _per_row(temperature, B, f32, dev), _per_row(top_p, B, torch.float64, dev),
            _per_row(top_k, B, torch.int32, dev), floor, _per_row(u, B, torch.float64, dev), *pen,
            z_buf, probs, tokens, cand_z, cand_id, passes, V,
            logits.stride(0), bias_t.stride(0), prompt_t.stride(0), counts_t.stride(0),
            allowed_t.stride(0), z_buf.stride(0), probs.stride(0),
        ),
        dict(HAS_BIAS=logit_bias is not None, HAS_PENALTIES=has_pen, HAS_ALLOWED=allowed is not None,
             WRITE_PROBS=write_probs, BLOCK_V=block_v, CAP=candidates, N_BUCKETS=N_BUCKETS,
             num_warps=num_warps),
    )  # fmt: skip
    return tokens, (probs if write_probs else None), z_buf, passes, launch


def run_sampler(
    logits: torch.Tensor, u: torch.Tensor | float, write_probs: bool, *, check: bool = True, **kwargs
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Launch ``_sample_kernel``: (tokens, probabilities or None, logits after S3)."""
    tokens, probs, z_buf, _passes, launch = sampler_launch(logits, u, write_probs, **kwargs)
    launch()
    if check and bool((tokens < 0).any()):
        nan = (tokens == -2).nonzero().flatten().tolist()
        if nan:
            raise SamplingError(f"rows {nan}: logits contain NaN or +inf (or a penalty overflowed to +inf)")
        dead = (tokens == -1).nonzero().flatten().tolist()
        raise SamplingError(f"rows {dead}: every token is -inf after masks and penalties")
    return tokens, probs, z_buf


def sample(
    logits: torch.Tensor, *, temperature, top_p, top_k, min_p, u, repetition_penalty=None,
    presence_penalty=None, frequency_penalty=None, logit_bias=None, prompt_mask=None,
    output_counts=None, allowed=None, block_v: int = DEFAULT_BLOCK_V,
    num_warps: int = DEFAULT_NUM_WARPS, check: bool = True, candidates: int = CANDIDATES,
) -> torch.Tensor:  # fmt: skip
    """One token per row (``LongTensor[B]``) following S0..S9.

    ``logits`` ``[B, V]`` float32; ``temperature``, ``top_p``, ``top_k`` (0 or -1: off),
    ``min_p``, the penalties and ``u`` (the S9 draw in [0, 1)) are per-row tensors ``[B]`` or
    numbers; ``logit_bias`` dense ``[B, V]``; ``prompt_mask`` ``[B, V]`` bool/uint8 (token in the
    prompt) and ``output_counts`` ``[B, V]`` int32 (counts in the generated output) feed the
    penalties; ``allowed`` ``[B, V]`` bool is the S0 mask. Raises ``SamplingError`` (a
    ``ValueError``) if a row has no finite logit after S3; this reads the result back (one
    device sync): ``check=False`` skips it and such rows return -1.
    """
    tokens, _, _ = run_sampler(
        logits, u, False, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
        repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty, logit_bias=logit_bias, prompt_mask=prompt_mask,
        output_counts=output_counts, allowed=allowed, block_v=block_v, num_warps=num_warps,
        check=check, candidates=candidates,
    )  # fmt: skip
    return tokens


def probabilities(
    logits: torch.Tensor, *, temperature, top_p, top_k, min_p, repetition_penalty=None,
    presence_penalty=None, frequency_penalty=None, logit_bias=None, prompt_mask=None,
    output_counts=None, allowed=None, block_v: int = DEFAULT_BLOCK_V,
    num_warps: int = DEFAULT_NUM_WARPS, candidates: int = CANDIDATES,
) -> torch.Tensor:  # fmt: skip
    """The final distribution ``[B, V]`` float32 that ``sample`` draws from (one-hot at T = 0)."""
    _, probs, _ = run_sampler(
        logits, 0.0, True, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
        repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty, logit_bias=logit_bias, prompt_mask=prompt_mask,
        output_counts=output_counts, allowed=allowed, block_v=block_v, num_warps=num_warps,
        candidates=candidates,
    )  # fmt: skip
    assert probs is not None
    return probs


@triton.jit(do_not_specialize=["top_n"])  # a launch with top_n == 1 would make it a constexpr
def _raw_logprobs_kernel(
    logits, allowed, logprobs, top_ids, top_values, V, top_n,
    stride_logits, stride_allowed, stride_lp, stride_top,
    HAS_ALLOWED: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    """One row: ``log_softmax`` after the S0 mask, and its ``top_n`` entries in id order.

    Grid ``(B,)``. Pass 1: online max and sum of exp; pass 2: write ``z - logsumexp``; then, if
    ``top_n > 0``, the same count cut as top_k (ties to the lower id, -inf entries included so
    exactly ``top_n`` come back) and a compaction pass that writes the survivors' ids and values
    in ascending id order (the launcher orders them by value). Memory traffic: logits (and mask)
    read twice, logprobs written once, then ~20 reads of the logprobs row for the cut.

    A row with no allowed token, or with a NaN or +inf logit, is written as NaN and gets no top
    entries (the launcher's -1 / -inf stay): decided by explicit tests, never by how min/max
    treat NaN (the GPU drops it, the interpreter propagates it).
    """
    b = tl.program_id(0).to(tl.int64)
    m = float("-inf")
    s = 0.0
    n_bad = 0
    for start in range(0, V, BLOCK_V):
        # -- pass 1 (logits): S0, online log-sum-exp --
        offs = start + tl.arange(0, BLOCK_V)
        z, chunk_bad = _penalized_logits(
            logits + b * stride_logits, logits, logits, logits, allowed + b * stride_allowed,
            offs, V, 1.0, 0.0, 0.0, False, False, HAS_ALLOWED,
        )  # fmt: skip
        n_bad += chunk_bad
        m_new = tl.maximum(m, tl.max(z))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new))
        m = m_new
    defined = (m > float("-inf")) & (n_bad == 0)
    lse = m + tl.log(s)
    lp_row = logprobs + b * stride_lp
    for start in range(0, V, BLOCK_V):
        # -- pass 2 (logits again): the logprobs, written once --
        offs = start + tl.arange(0, BLOCK_V)
        z, _unused = _penalized_logits(
            logits + b * stride_logits, logits, logits, logits, allowed + b * stride_allowed,
            offs, V, 1.0, 0.0, 0.0, False, False, HAS_ALLOWED,
        )  # fmt: skip
        lp = z - lse
        lp = tl.where(lp > 0.0, 0.0, lp)  # rounding; not tl.minimum, which drops NaN on a GPU
        tl.store(lp_row + offs, tl.where(defined, lp, float("nan")), mask=offs < V)
    if (top_n > 0) & defined:
        floor = float("-inf")  # keep -inf entries: the cut is over the whole vocabulary
        lo = tl.full((), KEY_NEG_INF, tl.int32)
        t, cut, _unused = _cut(
            lp_row, V, top_n.to(tl.float64), False, lo, 0.0, 1.0, floor,
            KEY_OFF, 0, KEY_OFF, 0, BLOCK_V,
        )  # fmt: skip
        run = 0
        for start in range(0, V, BLOCK_V):
            # -- last pass (logprobs): compact the top_n, in id order --
            offs, y, _key, keep = _chunk(lp_row, start, V, 0.0, 1.0, floor, t, cut, KEY_OFF, 0, BLOCK_V)
            slot = run + tl.cumsum(keep.to(tl.int32), 0) - 1
            tl.store(top_ids + b * stride_top + slot, offs.to(tl.int64), mask=keep)
            tl.store(top_values + b * stride_top + slot, y, mask=keep)
            run += tl.sum(keep.to(tl.int32))


def raw_logprobs(
    logits: torch.Tensor, allowed: torch.Tensor | None = None, top_n: int = 0, *,
    block_v: int = DEFAULT_BLOCK_V, num_warps: int = DEFAULT_NUM_WARPS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The spec's ``raw`` logprobs: ``log_softmax`` of the logits after the S0 mask.

    Returns ``(logprobs, top_ids, top_logprobs)``: ``logprobs`` ``[B, V]`` float32 (-inf where
    ``allowed`` is False; NaN on a row with no allowed token); ``top_ids`` ``[B, top_n]`` int64
    and ``top_logprobs`` ``[B, top_n]`` float32: the ``top_n`` highest entries sorted by logprob
    descending, ties by lower id (``reference.top_entries``). -inf entries are never listed: when
    fewer than ``top_n`` tokens are allowed, the row ends with id -1 and value -inf. A row with a
    NaN or +inf logit is NaN too, with no entries (``sample`` raises ``SamplingError`` there).
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got {tuple(logits.shape)}")
    B, V = logits.shape
    top_n = min(int(top_n), V)
    if top_n < 0:
        raise ValueError(f"top_n must be >= 0, got {top_n}")
    logits = logits if logits.stride(-1) == 1 else logits.contiguous()
    if allowed is not None:
        if allowed.shape != (B, V):
            raise ValueError(f"allowed must be [B={B}, V={V}], got {tuple(allowed.shape)}")
        allowed = (allowed.view(torch.uint8) if allowed.dtype == torch.bool else allowed).contiguous()
    logprobs, ids, values, launch = raw_logprobs_launch(
        logits, allowed, top_n, block_v=block_v, num_warps=num_warps
    )
    launch()
    ids, values = ids[:, :top_n], values[:, :top_n]
    # The kernel wrote the top_n in id order; a stable sort by value keeps ties in id order.
    values, order = torch.sort(values, dim=1, descending=True, stable=True)
    ids = torch.where(values > float("-inf"), ids.gather(1, order), -1)
    return logprobs, ids, values


def raw_logprobs_launch(
    logits: torch.Tensor,
    allowed: torch.Tensor | None,
    top_n: int,
    *,
    block_v: int = DEFAULT_BLOCK_V,
    num_warps: int = DEFAULT_NUM_WARPS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Launch]:
    """The outputs and the launch of ``_raw_logprobs_kernel`` (inputs already checked)."""
    B, V = logits.shape
    dev = logits.device
    allowed_t = logits if allowed is None else allowed
    logprobs = torch.empty((B, V), device=dev, dtype=torch.float32)
    ids = torch.full((B, max(top_n, 1)), -1, device=dev, dtype=torch.int64)
    values = torch.full((B, max(top_n, 1)), float("-inf"), device=dev, dtype=torch.float32)
    launch = Launch(
        _raw_logprobs_kernel,
        (B,),
        (
            logits, allowed_t, logprobs, ids, values, V, top_n,
            logits.stride(0), allowed_t.stride(0), logprobs.stride(0), ids.stride(0),
        ),
        dict(HAS_ALLOWED=allowed is not None, BLOCK_V=block_v, num_warps=num_warps),
    )  # fmt: skip
    return logprobs, ids, values, launch
