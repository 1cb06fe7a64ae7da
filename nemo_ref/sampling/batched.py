"""The batched torch sampler: the reference's pipeline (reference.py) for a whole decode step at once.

The torch backend of the generation loop (sampler.TorchSampler): `sample(logits, meta)` and
`distribution(logits, meta)` read one step's SamplingMetadata (metadata.py), whose rows have their
own parameters, histories, masks and draws; `sample_batch`/`distribution_batch` build it from a
list of SampleRows first. The math is the reference's, in float64 (on CPU and CUDA alike) and op
for op where a decision depends on it (S1..S7 and the S9 comparison are the same float
operations), so distributions agree to ~1e-15 and tokens agree unless a draw lands within an ulp
of a boundary.

Where the time goes at vocab 131072 (benchmarks/sampler-cpu.md): a few dense passes over the
logits (float64 copy, the max, S5), then everything else on small tensors:
- penalties touch only the history's ids (gather/scatter), never a dense [B, V] count table;
- truncation packs the survivors first: S6 keeps z >= ln(min_p) and S7 the first k ranks, both
  prefixes of the rank order, so every survivor lies at or above max(ln(min_p), k-th largest
  value). A block-wise torch.topk finds that value (see _candidates). Only those candidates are
  sorted (for the exact rank order) and walked for top_p. top_p alone has no such bound: it takes
  the tokens at or above the 1024th value, and grows that guess x8 until their mass reaches p;
- the S9 draw runs on the packed survivors (in ascending id order, like the reference), in place;
- logprobs are computed only for rows that ask for them (raw ones need a dense normaliser).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .metadata import DTYPE, SampleRow, SamplingMetadata, build_metadata
from .reference import SampleResult, SamplingError

__all__ = ["SampleResult", "SampleRow", "distribution", "distribution_batch", "sample", "sample_batch"]

NEG_INF = -math.inf
FLOAT64_MIN = torch.finfo(DTYPE).min  # a threshold that keeps every finite logit and no -inf
TOP_P_FIRST_CANDIDATES = 1024  # top_p's first guess at how many ranks it needs; grows x8
BLOCK = 64  # block size of the n-th-largest search (see _candidates)


@dataclass
class _Group:
    """Rows of the batch and their final logits: packed survivors, ids ascending (ids None: all
    V ids in order, vals dense). Padding is id V with value -inf."""

    rows: list[int]
    ids: torch.Tensor | None
    vals: torch.Tensor


@dataclass
class _Processed:
    raw: torch.Tensor | None  # [B, V] after S0 (kept only when a row wants raw logprobs)
    penalised: torch.Tensor  # [B, V] after S3, for the greedy rows (the others' rows: undefined)
    groups: list[_Group]  # the sampling rows after S8


# ---- S0..S3: per-token edits of the logits ------------------------------------------------------


def _constrain(z: torch.Tensor, meta: SamplingMetadata) -> None:  # S0
    if meta.allowed is not None:
        z.masked_fill_(~meta.allowed, NEG_INF)


def _bias(z: torch.Tensor, meta: SamplingMetadata) -> None:  # S1
    if meta.bias_keys.numel():  # ids are distinct within a row (dict keys), so a plain += is exact
        z.view(-1)[meta.bias_keys] += meta.bias_values


def _repetition(z: torch.Tensor, meta: SamplingMetadata) -> None:  # S2
    if not meta.repetition_keys.numel():
        return
    flat = z.view(-1)
    keys = torch.unique(meta.repetition_keys)  # once per token
    r = meta.repetition_penalty[keys // meta.vocab]
    x = flat[keys]
    flat[keys] = torch.where(x > 0, x / r, x * r)


def _presence_frequency(z: torch.Tensor, meta: SamplingMetadata) -> None:  # S3
    if not meta.output_keys.numel():
        return
    keys, counts = torch.unique(meta.output_keys, return_counts=True)
    owner = keys // meta.vocab
    presence = meta.presence_penalty[owner]
    frequency = meta.frequency_penalty[owner]
    z.view(-1)[keys] -= counts.to(DTYPE) * frequency + presence  # the reference's expression


# ---- S6..S8 on packed candidates ----------------------------------------------------------------


def _pack(values: torch.Tensor, keep: torch.Tensor, ids: torch.Tensor | None, vocab: int):
    """The kept entries of each row packed to the left, in column order: (ids, values), padded
    with id `vocab` and value -inf to the longest row. `ids`: each column's token id (None: the
    column index). Columns are in ascending id order, and so is the result."""
    rows = values.shape[0]
    count = keep.sum(1)
    r, col = keep.nonzero(as_tuple=True)  # row-major: ascending columns within a row
    pos = torch.arange(r.numel(), device=values.device) - (count.cumsum(0) - count)[r]
    width = max(int(count.max()), 1)
    packed_ids = torch.full((rows, width), vocab, dtype=torch.long, device=values.device)
    packed = torch.full((rows, width), NEG_INF, dtype=values.dtype, device=values.device)
    packed_ids[r, pos] = col if ids is None else ids[r, col]
    packed[r, pos] = values[r, col]
    return packed_ids, packed


def _candidates(z: torch.Tensor, n: torch.Tensor, floor: torch.Tensor):
    """Every token with z >= max(floor, the row's n-th largest value) (n = 0: floor alone), packed
    by ascending id. floor must exclude -inf.

    Fast path, when every row has a small n: cut the row into blocks of BLOCK ids and take the
    n_max blocks with the largest maxima (the window). Every value above the n-th largest block
    maximum lies in the window, and at least n values reach that maximum, so the n-th largest value
    is the window's n-th largest. Tokens outside the window are at most the largest maximum left
    out; when that is below the threshold, the window holds every candidate. Otherwise (a tie
    across blocks at the cut) the dense path decides.
    """
    rows, vocab = z.shape
    n_max = int(n.max())
    if n_max > 0 and bool((n > 0).all()) and vocab % BLOCK == 0 and 4 * n_max * BLOCK <= vocab:
        blocks = z.view(rows, vocab // BLOCK, BLOCK)
        best = torch.topk(blocks.amax(2), n_max + 1, dim=1)
        picked = best.indices[:, :n_max].sort(dim=1).values[:, :, None]  # ascending ids
        window = blocks.gather(1, picked.expand(-1, -1, BLOCK)).reshape(rows, -1)
        nth = torch.topk(window, n_max, dim=1).values.gather(1, (n - 1)[:, None])
        threshold = torch.maximum(nth, floor[:, None])
        if bool((best.values[:, n_max : n_max + 1] < threshold).all()):
            ids = (picked * BLOCK + torch.arange(BLOCK, device=z.device)).reshape(rows, -1)
            return _pack(window, window >= threshold, ids, vocab)
    threshold = floor[:, None]
    if n_max > 0:
        nth = torch.topk(z, n_max, dim=1).values.gather(1, (n - 1).clamp(min=0)[:, None])
        threshold = torch.where(n[:, None] > 0, torch.maximum(threshold, nth), threshold)
    return _pack(z, z >= threshold, None, vocab)


def _rank(packed: torch.Tensor) -> torch.Tensor:
    """Positions in rank order. The packed ids ascend, so a stable sort by value descending puts
    ties lower id first: exactly the spec's order."""
    return torch.sort(packed, dim=1, descending=True, stable=True).indices


def _truncate(
    z: torch.Tensor, cut: torch.Tensor, k: torch.Tensor, top_p: torch.Tensor, n: torch.Tensor, total
):
    """S6..S8 for rows whose survivors all lie within the candidates z >= max(ln min_p, n-th
    largest value) (n = 0: no n-th value). `cut`, `k`, `top_p`: the rows' ln(min_p), top_k (0:
    off) and top_p. `total`: None, or (mass, count) of S6's survivors over every id, needed by
    rows with top_p and no top_k. Returns (ids, vals, done): done is False for top_p-only rows
    whose candidates may be too few (mass short of p, survivors left out)."""
    dev = z.device
    mass_all, survivors = total if total is not None else (None, None)
    ids, vals = _candidates(z, n, cut.clamp(min=FLOAT64_MIN))  # S6 is z >= ln(min_p): done
    count = (vals > NEG_INF).sum(1)
    if not bool(((k > 0) | (top_p < 1)).any()):
        return ids, vals, torch.ones_like(k, dtype=torch.bool)  # min_p alone: packing was S6
    order = _rank(vals)
    ranked = vals.gather(1, order)
    rank = torch.arange(ranked.shape[1], device=dev)[None, :]
    ranked = ranked.masked_fill((k[:, None] > 0) & (rank >= k[:, None]), NEG_INF)  # S7: k first
    done = torch.ones_like(k, dtype=torch.bool)
    if bool((top_p < 1).any()):  # S8 on the renormalised survivors, in rank order
        w = torch.exp(ranked)  # max z is 0 after S5: exp(z - max) = exp(z)
        norm = w.sum(1) if mass_all is None else torch.where(k > 0, w.sum(1), mass_all)
        mass = (w / norm[:, None]).cumsum(1)
        before = torch.cat([torch.zeros_like(mass[:, :1]), mass[:, :-1]], dim=1)
        # rank 0 always stays; rows with top_p = 1 skip S8 (a float sum can reach 1.0 early)
        fails = (before >= top_p[:, None]) & (rank >= 1) & (top_p < 1)[:, None]
        ranked = ranked.masked_fill(fails, NEG_INF)
        if survivors is not None:  # top_p alone: are all S6's survivors among the candidates?
            done = (k > 0) | (top_p == 1) | (mass[:, -1] >= top_p) | (count >= survivors)
    vals = torch.empty_like(vals).scatter_(1, order, ranked)  # back to ascending ids
    return ids, vals, done


def _survivors(
    final: torch.Tensor, meta: SamplingMetadata, rows: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """S6..S8 for the batch rows `rows`, which truncate; `final` = their logits after S5.
    Returns packed (ids, vals)."""
    vocab = final.shape[1]
    index = torch.tensor(rows, device=final.device)
    cut, top_k, top_p = meta.log_min_p[index], meta.top_k[index], meta.top_p[index]
    k = torch.where((top_k > 0) & (top_k < vocab), top_k, 0)
    top_p_alone = (top_p < 1) & (k == 0)
    n = torch.where(top_p_alone, TOP_P_FIRST_CANDIDATES, k).clamp(max=vocab)
    total = None
    if bool(top_p_alone.any()):  # top_p's normaliser: the mass of S6's survivors, over every id
        keep = final >= cut.clamp(min=FLOAT64_MIN)[:, None]
        total = (torch.where(keep, torch.exp(final), 0.0).sum(1), keep.sum(1))  # mass, count
    while True:
        ids, vals, done = _truncate(final, cut, k, top_p, n, total)
        if bool(done.all()):
            return ids, vals
        # rare (a flat distribution): more ranks needed; rows already done get the same result
        n = torch.where(done, n, (n * 8).clamp(max=vocab))


# ---- the pipeline, S9 and the public entry points -----------------------------------------------


def _process(logits: torch.Tensor, meta: SamplingMetadata, keep_raw: bool) -> _Processed:
    """S0..S8 for the batch: greedy rows stop at S3, the others end as groups of final logits."""
    meta.check(logits)
    top = logits.amax(1)  # amax propagates NaN
    if bool(torch.isnan(top).any() | (top == math.inf).any()):
        raise SamplingError("logits contain NaN or +inf")
    z = logits.to(DTYPE, copy=True).contiguous()  # never edit the caller's tensor
    _constrain(z, meta)
    raw = z.clone() if keep_raw else None
    _bias(z, meta)
    _repetition(z, meta)
    _presence_frequency(z, meta)
    m = z.amax(1, keepdim=True)
    dead = (m[:, 0] == NEG_INF).nonzero().flatten().tolist()
    if dead:
        raise SamplingError(f"rows {dead}: every token is -inf after S3; nothing to sample")
    if bool((m == math.inf).any()):  # only a repetition_penalty below ~1e-300 can overflow
        raise SamplingError("a logit overflowed to +inf in S2 (repetition_penalty too small)")
    sampling = [b for b, greedy in enumerate(meta.greedy) if not greedy]
    groups = []
    if sampling:
        every = len(sampling) == meta.batch  # avoid copying [B, V] tensors by index when we can
        # S5: shift first ... (in place when no greedy row needs S3's logits any more)
        final = z.sub_(m) if every else z[sampling] - m[sampling]
        t = meta.temperature if every else meta.temperature[torch.tensor(sampling, device=z.device)]
        if bool((t != 1).any()):  # ... then divide (by 1 is exact: skipping it changes nothing)
            final /= t[:, None]
        cut = [j for j, b in enumerate(sampling) if meta.truncates[b]]
        plain = [j for j, b in enumerate(sampling) if not meta.truncates[b]]
        if plain:
            groups.append(_Group([sampling[j] for j in plain], None, final if not cut else final[plain]))
        if cut:
            rows = [sampling[j] for j in cut]
            ids, vals = _survivors(final if not plain else final[cut], meta, rows)
            groups.append(_Group(rows, ids, vals))
    return _Processed(raw, z, groups)


def _draw(group: _Group, u: torch.Tensor, keep_vals: bool) -> torch.Tensor:  # S9
    """Smallest id whose running weight (ascending ids) exceeds u * total: the reference's rule.
    Packed survivors give the same running sums as the dense row (the zeros add nothing).
    Unless keep_vals, group.vals is overwritten: a fresh [B, V] buffer costs page faults."""
    # w = exp(z - max z) = exp(z): max z is 0 after S5, and rank 0 survives S6..S8.
    w = torch.exp(group.vals) if keep_vals else group.vals.exp_()
    running = w.cumsum_(1)  # sequential on CPU: the reference's sums
    pos = torch.searchsorted(running, (u * running[:, -1])[:, None], right=True)[:, 0]
    width = running.shape[1]
    if bool((pos >= width).any()):
        # Unreachable for u < 1 (the total is >= 1, and then u * total rounds below it); a guard
        # that matches the reference: the last token with weight (where the running sum grows).
        before = torch.nn.functional.pad(running[:, :-1], (1, 0))
        columns = torch.arange(width, device=running.device)
        last = torch.where(running > before, columns, -1).amax(1)
        pos = torch.where(pos < width, pos, last)
    return pos if group.ids is None else group.ids.gather(1, pos[:, None])[:, 0]


def _first_max(z: torch.Tensor) -> torch.Tensor:
    """S4 per row: the lowest id among the maxima (not left to argmax's tie rule on any device)."""
    ids = torch.arange(z.shape[1], device=z.device)
    return torch.where(z == z.amax(1, keepdim=True), ids, z.shape[1]).amin(1)


def _logprobs(vals: torch.Tensor, ids: torch.Tensor | None, token: int, n: int):
    """One row's log_softmax: the token's entry and the n best (id, logprob), ties lower id first."""
    m = vals.max()
    lp = (vals - m) - torch.log(torch.exp(vals - m).sum())  # the reference's expression
    pos = token if ids is None else int((ids == token).nonzero()[0, 0])
    top: list[tuple[int, float]] = []
    if n:  # the tokens at or above the n-th logprob (ties included), then the exact rank order
        n_row = torch.tensor([min(n, lp.numel())], device=lp.device)
        floor = torch.tensor([FLOAT64_MIN], dtype=DTYPE, device=lp.device)
        cols, values = _candidates(lp[None], n_row, floor)
        order = _rank(values)[0, :n]
        cols, values = cols[0, order], values[0, order]
        cols, values = cols[values > NEG_INF], values[values > NEG_INF]  # drop the padding
        top_ids = cols if ids is None else ids[cols]
        top = list(zip(top_ids.tolist(), values.tolist(), strict=True))
    return float(lp[pos]), top


def distribution(logits: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
    """[B, V] float64 final distributions (one-hot on the S4 token for greedy rows)."""
    out = _process(logits, meta, keep_raw=False)
    batch, vocab = out.penalised.shape
    probs = torch.zeros(batch, vocab + 1, dtype=DTYPE, device=logits.device)  # column V: padding
    for b, is_greedy in enumerate(meta.greedy):
        if is_greedy:
            probs[b, int(_first_max(out.penalised[b : b + 1]))] = 1.0
    for group in out.groups:
        w = torch.exp(group.vals)
        q = w / w.sum(1, keepdim=True)
        if group.ids is None:
            probs[group.rows, :vocab] = q
        else:
            probs[group.rows] = torch.zeros_like(probs[group.rows]).scatter_(1, group.ids, q)
    return probs[:, :vocab]


def sample(logits: torch.Tensor, meta: SamplingMetadata) -> list[SampleResult]:
    """One token per row. `logprob` and `top` (in the row's logprobs mode) are computed for rows
    that ask for logprobs; other rows get NaN and [] (a raw logprob costs a full-vocabulary pass)."""
    out = _process(logits, meta, keep_raw="raw" in meta.logprobs)
    tokens = [0] * meta.batch
    greedy_rows = [b for b, g in enumerate(meta.greedy) if g]
    if greedy_rows:  # S4
        for b, t in zip(greedy_rows, _first_max(out.penalised[greedy_rows]).tolist(), strict=True):
            tokens[b] = t
    packed_of: dict[int, tuple[torch.Tensor | None, torch.Tensor]] = {}
    for group in out.groups:
        every = len(group.rows) == meta.batch  # then group.rows is 0..B-1, in order
        u = meta.u if every else meta.u[torch.tensor(group.rows, device=meta.u.device)]
        processed = any(meta.logprobs[b] == "processed" for b in group.rows)
        drawn = _draw(group, u, keep_vals=processed).tolist()
        for j, b in enumerate(group.rows):
            tokens[b] = drawn[j]
            packed_of[b] = (None if group.ids is None else group.ids[j], group.vals[j])
    results = []
    for b, mode in enumerate(meta.logprobs):
        if mode is None:
            results.append(SampleResult(tokens[b], math.nan, []))
            continue
        if mode == "raw":
            ids, vals = None, out.raw[b]
        else:  # processed: the final logits (S8), or S3's at T = 0 (the spec)
            ids, vals = packed_of.get(b, (None, out.penalised[b]))
        results.append(SampleResult(tokens[b], *_logprobs(vals, ids, tokens[b], meta.top_logprobs[b])))
    return results


def distribution_batch(logits: torch.Tensor, rows: Sequence[SampleRow]) -> torch.Tensor:
    """``distribution`` for these rows (their metadata built here)."""
    return distribution(logits, build_metadata(rows, logits.shape[-1], logits.device))


def sample_batch(logits: torch.Tensor, rows: Sequence[SampleRow]) -> list[SampleResult]:
    """``sample`` for these rows (their metadata built here)."""
    return sample(logits, build_metadata(rows, logits.shape[-1], logits.device))
