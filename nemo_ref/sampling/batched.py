"""The batched torch sampler: the reference's pipeline (reference.py) for a whole decode step at once.

This is the generation loop's default sampler. Rows have their own parameters, histories, masks and
draws; every step is vectorised over the rows that use it and skipped when no row does. The math is
the reference's, in float64 (on CPU and CUDA alike), op for op where it matters (S1..S7 and the S9
comparison are the same float operations), so distributions agree to ~1e-15 and tokens agree unless
a draw lands within an ulp of a boundary.

Cost at vocab 131072 (see benchmarks/sampler-cpu.md): a handful of elementwise passes, one cumsum
for the draw, no sort of the vocabulary:
- penalties touch only the history's ids (gather/scatter), never a dense [B, V] count table;
- top_k: torch.topk finds the k-th value, then an exact tie rule (lower ids win) on a mask;
- top_p: sorts only candidates, i.e. the top_k survivors, or else the tokens at or above the
  1024th (then 8192nd, ...) value until the kept prefix is complete: one full sort only when the
  distribution is so flat that a 65536-token prefix does not reach p.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .params import SamplingParams
from .reference import SampleResult, SamplingError
from .rng import uniform

__all__ = ["SampleResult", "SampleRow", "distribution_batch", "sample_batch"]

NEG_INF = -math.inf
DTYPE = torch.float64
TOP_P_FIRST_CANDIDATES = 1024  # top_p's first guess at how many ranks it needs; grows x8


@dataclass
class SampleRow:
    """One row of a decode step: whose parameters, which draw, what history, which tokens allowed."""

    params: SamplingParams
    seed: int
    choice: int
    step: int
    prompt_tokens: Sequence[int]  # a LongTensor avoids a list -> tensor conversion per step
    output_tokens: Sequence[int]
    allowed: torch.Tensor | None = None  # bool [V], S0 mask (structured outputs, tools)


@dataclass
class _Processed:
    raw: torch.Tensor  # [B, V] after S0: raw logprobs come from here
    penalised: torch.Tensor  # [B, V] after S3: greedy rows' final logits
    final: torch.Tensor  # [B, V] after S8 (rows that sample); greedy rows: unspecified
    greedy: list[bool]


def _select(rows: Sequence[SampleRow], want) -> list[int]:
    return [b for b, row in enumerate(rows) if want(row.params)]


def _column(rows: Sequence[SampleRow], idx: list[int], get, device) -> torch.Tensor:
    return torch.tensor([get(rows[b].params) for b in idx], dtype=DTYPE, device=device)


def _history(rows, idx, vocab, device, with_prompt: bool) -> torch.Tensor:
    """Flat ids b * V + token of the rows' histories (output, and prompt if asked)."""
    parts, owners, lengths = [], [], []
    for b in idx:
        for tokens in (rows[b].output_tokens, rows[b].prompt_tokens if with_prompt else ()):
            t = torch.as_tensor(tokens, dtype=torch.long, device=device)
            parts.append(t if t.dim() == 1 else t.reshape(-1))
            owners.append(b)
            lengths.append(parts[-1].numel())
    flat = torch.cat(parts)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= vocab):
        raise SamplingError(f"history token ids outside [0, {vocab})")
    owner = torch.repeat_interleave(torch.tensor(owners, device=device), torch.tensor(lengths, device=device))
    return flat + owner * vocab


# ---- S0..S3: per-token edits of the logits ------------------------------------------------------


def _constrain(z: torch.Tensor, rows: Sequence[SampleRow]) -> None:  # S0
    for b, row in enumerate(rows):
        if row.allowed is not None:
            mask = row.allowed.to(device=z.device, dtype=torch.bool).reshape(-1)
            if mask.numel() != z.shape[1]:
                raise SamplingError(f"row {b}: allowed mask has {mask.numel()} entries")
            z[b].masked_fill_(~mask, NEG_INF)


def _bias(z: torch.Tensor, rows: Sequence[SampleRow]) -> None:  # S1
    vocab = z.shape[1]
    keys, values = [], []
    for b, row in enumerate(rows):
        row.params.check_vocab(vocab)
        keys += [b * vocab + i for i in row.params.logit_bias]
        values += list(row.params.logit_bias.values())
    if keys:  # ids are distinct within a row (dict keys), so a plain += is exact
        flat = z.view(-1)
        k = torch.tensor(keys, device=z.device)
        flat[k] += torch.tensor(values, dtype=DTYPE, device=z.device)


def _repetition(z: torch.Tensor, rows: Sequence[SampleRow]) -> None:  # S2
    idx = _select(rows, lambda p: p.repetition_penalty != 1)
    if not idx:
        return
    vocab, flat = z.shape[1], z.view(-1)
    keys = torch.unique(_history(rows, idx, vocab, z.device, with_prompt=True))
    penalty = torch.ones(len(rows), dtype=DTYPE, device=z.device)
    penalty[idx] = _column(rows, idx, lambda p: p.repetition_penalty, z.device)
    r = penalty[keys // vocab]
    x = flat[keys]
    flat[keys] = torch.where(x > 0, x / r, x * r)


def _presence_frequency(z: torch.Tensor, rows: Sequence[SampleRow]) -> None:  # S3
    idx = _select(rows, lambda p: p.presence_penalty != 0 or p.frequency_penalty != 0)
    if not idx:
        return
    vocab, flat = z.shape[1], z.view(-1)
    keys, counts = torch.unique(_history(rows, idx, vocab, z.device, with_prompt=False), return_counts=True)
    pres = torch.zeros(len(rows), dtype=DTYPE, device=z.device)
    freq = torch.zeros(len(rows), dtype=DTYPE, device=z.device)
    pres[idx] = _column(rows, idx, lambda p: p.presence_penalty, z.device)
    freq[idx] = _column(rows, idx, lambda p: p.frequency_penalty, z.device)
    owner = keys // vocab
    flat[keys] -= counts.to(DTYPE) * freq[owner] + pres[owner]  # the reference's expression


# ---- S5..S8: temperature and truncation ---------------------------------------------------------


def _min_p(z: torch.Tensor, idx: list[int], rows) -> None:  # S6
    cut = torch.tensor([math.log(rows[b].params.min_p) for b in idx], dtype=DTYPE, device=z.device)
    sub = z[idx]
    z[idx] = sub.masked_fill(sub < cut[:, None], NEG_INF)


def _top_k(z: torch.Tensor, idx: list[int], rows) -> None:  # S7
    """Keep exactly k per row: everything above the k-th value, then the lowest-id ties of it."""
    sub = z[idx]
    k = torch.tensor([rows[b].params.top_k for b in idx], device=z.device)
    kth = torch.topk(sub, int(k.max()), dim=1).values.gather(1, (k - 1)[:, None])
    above = sub > kth
    ties = sub == kth
    room = k[:, None] - above.sum(1, keepdim=True)
    keep = above | (ties & (ties.cumsum(1) <= room))
    z[idx] = sub.masked_fill(~keep, NEG_INF)


def _ranked(z: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, every finite token at or above the row's n-th largest value, in exact rank order.

    Returns (ids, values, count), padded to the longest row with id = V and value = -inf. Taking
    the whole tie group at the n-th value (not topk's arbitrary pick among ties) makes the result
    a true prefix of the rank order; `nonzero` lists ids ascending, and a stable sort by value
    descending then breaks ties by lower id, as the spec's order demands.
    """
    rows, vocab = z.shape
    n = n.clamp(max=vocab)
    nth = torch.topk(z, int(n.max()), dim=1).values.gather(1, (n - 1)[:, None])
    candidate = (z >= nth) & (z > NEG_INF)
    count = candidate.sum(1)
    r, ids = candidate.nonzero(as_tuple=True)
    pos = torch.arange(r.numel(), device=z.device) - (count.cumsum(0) - count)[r]
    width = int(count.max())
    packed_ids = torch.full((rows, width), vocab, dtype=torch.long, device=z.device)
    packed = torch.full((rows, width), NEG_INF, dtype=z.dtype, device=z.device)
    packed_ids[r, pos] = ids
    packed[r, pos] = z[r, ids]
    packed, order = torch.sort(packed, dim=1, descending=True, stable=True)
    return packed_ids.gather(1, order), packed, count


def _top_p(z: torch.Tensor, idx: list[int], rows) -> None:  # S8
    sub = z[idx]
    vocab = sub.shape[1]
    p = torch.tensor([rows[b].params.top_p for b in idx], dtype=DTYPE, device=z.device)
    finite = (sub > NEG_INF).sum(1)
    k = torch.tensor([rows[b].params.top_k for b in idx], device=z.device)
    # Candidates: top_k's survivors when it ran (all of them), else a first guess that grows.
    n = torch.where(k > 0, k, TOP_P_FIRST_CANDIDATES).clamp(max=finite)
    m = sub.amax(1, keepdim=True)
    total = torch.exp(sub - m).sum(1, keepdim=True)
    pending = torch.ones(len(idx), dtype=torch.bool, device=z.device)
    while bool(pending.any()):
        todo = pending.nonzero().flatten()
        ids, values, count = _ranked(sub[todo], n[todo])
        q = torch.exp(values - m[todo]) / total[todo]
        mass = q.cumsum(1)  # inclusive; the mass of ranks < r is mass[r - 1]
        before = torch.cat([torch.zeros_like(mass[:, :1]), mass[:, :-1]], dim=1)
        keep = before < p[todo, None]
        keep[:, 0] = True  # rank 0 always stays (top_p = 0 keeps one token)
        # Complete when the candidates' mass reaches p (the next rank fails) or they are all.
        done = (mass[:, -1] >= p[todo]) | (count >= finite[todo])
        mask = torch.zeros(len(todo), vocab + 1, dtype=torch.bool, device=z.device)
        mask.scatter_(1, ids, keep)  # padding writes to column V, dropped below
        finished = todo[done]
        sub[finished] = sub[finished].masked_fill(~mask[done, :vocab], NEG_INF)
        pending[finished] = False
        n[todo] = (n[todo] * 8).clamp(max=finite[todo])
    z[idx] = sub


def _process(logits: torch.Tensor, rows: Sequence[SampleRow]) -> _Processed:
    if logits.dim() != 2 or logits.shape[0] != len(rows):
        raise SamplingError(f"logits {tuple(logits.shape)} for {len(rows)} rows; expected [B, V]")
    z = logits.to(DTYPE, copy=True).contiguous()  # never edit the caller's tensor
    top = z.amax(1)
    if bool(torch.isnan(top).any() | (top == math.inf).any()):  # amax propagates NaN
        raise SamplingError("logits contain NaN or +inf")
    _constrain(z, rows)
    raw = z.clone()
    _bias(z, rows)
    _repetition(z, rows)
    _presence_frequency(z, rows)
    m = z.amax(1, keepdim=True)
    dead = (m[:, 0] == NEG_INF).nonzero().flatten().tolist()
    if dead:
        raise SamplingError(f"rows {dead}: every token is -inf after S3; nothing to sample")
    if bool((m == math.inf).any()):  # only a repetition_penalty below ~1e-300 can overflow
        raise SamplingError("a logit overflowed to +inf in S2 (repetition_penalty too small)")
    greedy = [row.params.greedy for row in rows]
    # S5 for every row (greedy rows divide by 1 and are then ignored): one pass, no branching.
    t = torch.tensor([r.params.temperature or 1.0 for r in rows], dtype=DTYPE, device=z.device)
    final = (z - m) / t[:, None]
    sampling = [b for b in range(len(rows)) if not greedy[b]]
    for step, want in (
        (_min_p, lambda p: p.min_p > 0),
        (_top_k, lambda p: 0 < p.top_k < final.shape[1]),
        (_top_p, lambda p: p.top_p < 1),
    ):
        idx = [b for b in sampling if want(rows[b].params)]
        if idx:
            step(final, idx, rows)
    return _Processed(raw, z, final, greedy)


# ---- S9 and the public entry points -------------------------------------------------------------


def _draw(final: torch.Tensor, u: torch.Tensor) -> torch.Tensor:  # S9
    """Smallest id whose running weight (ascending ids) exceeds u * total: the reference's rule."""
    w = torch.exp(final - final.amax(1, keepdim=True))
    running = torch.cumsum(w, 1)  # sequential on CPU: the same sums as the reference
    threshold = (u * running[:, -1]).unsqueeze(1).contiguous()
    token = torch.searchsorted(running, threshold, right=True).squeeze(1)
    last_with_weight = w.shape[1] - 1 - (w > 0).flip(1).to(torch.int8).argmax(1)
    return torch.where(token < w.shape[1], token, last_with_weight)


def _log_softmax(z: torch.Tensor) -> torch.Tensor:
    m = z.amax(1, keepdim=True)
    return (z - m) - torch.log(torch.exp(z - m).sum(1, keepdim=True))


def distribution_batch(logits: torch.Tensor, rows: Sequence[SampleRow]) -> torch.Tensor:
    """[B, V] float64 final distributions (one-hot on the S4 token for greedy rows)."""
    out = _process(logits, rows)
    probs = torch.softmax(out.final, dim=1)
    for b, is_greedy in enumerate(out.greedy):
        if is_greedy:
            probs[b] = 0.0
            probs[b, int(torch.argmax(out.penalised[b]))] = 1.0  # argmax: first max = lowest id
    return probs


def sample_batch(logits: torch.Tensor, rows: Sequence[SampleRow]) -> list[SampleResult]:
    """One token per row, with its logprob and top_logprobs in the row's logprobs_mode."""
    out = _process(logits, rows)
    device = logits.device
    u = torch.tensor([uniform(r.seed, r.choice, r.step) for r in rows], dtype=DTYPE, device=device)
    greedy = torch.tensor(out.greedy, device=device)
    tokens = torch.where(greedy, out.penalised.argmax(1), _draw(out.final, u))
    processed = [r.params.logprobs_mode == "processed" for r in rows]
    source = torch.where(
        torch.tensor(processed, device=device)[:, None],
        torch.where(greedy[:, None], out.penalised, out.final),  # the spec: S3's logits at T = 0
        out.raw,
    )
    logprobs = _log_softmax(source)
    chosen = logprobs.gather(1, tokens[:, None]).squeeze(1).tolist()
    tops: list[list[tuple[int, float]]] = [[] for _ in rows]
    want = [b for b, r in enumerate(rows) if r.params.top_logprobs > 0]
    if want:
        n = torch.tensor([rows[b].params.top_logprobs for b in want], device=device)
        ids, values, _ = _ranked(logprobs[want], n)
        for j, b in enumerate(want):
            pairs = zip(ids[j].tolist(), values[j].tolist(), strict=True)
            tops[b] = [(i, v) for i, v in pairs if v > NEG_INF][: rows[b].params.top_logprobs]
    return [SampleResult(t, lp, top) for t, lp, top in zip(tokens.tolist(), chosen, tops, strict=True)]
