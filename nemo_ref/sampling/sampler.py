"""The sampler's one call, ``sampler(logits, rows) -> [SampleResult]``, and its two backends.

The engine picks a backend once, when it is built (``make_sampler``), and calls it once per
decode step. Each call builds the step's ``SamplingMetadata`` once (metadata.py) and hands it to
the backend, which reads only those columns:

- ``TorchSampler``: the batched torch pipeline (batched.py), float64, the default off CUDA;
- ``TritonSampler``: the sort-free kernels (``nemo_ref.kernels.sampling``), float32 values with
  float64 targets, the default on CUDA (backends.py).

Both follow docs/sampling.md step by step and are tested against the pure-Python reference
(reference.py) and against each other on the same metadata. Any other callable with this
signature is a backend too (the server's ``--semantics`` emulations, tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from . import batched
from .metadata import SampleRow, SamplingMetadata, build_metadata
from .reference import SampleResult

__all__ = ["Sampler", "SamplerBackend", "TorchSampler", "TritonSampler", "make_sampler"]

SamplerBackend = Callable[[torch.Tensor, Sequence[SampleRow]], list[SampleResult]]


class Sampler:
    """A backend: ``sampler(logits, rows)`` builds the step's metadata once and calls ``sample``.

    ``sample`` and ``distribution`` take the metadata itself (tests and benchmarks hand both
    backends the same one).
    """

    name: str

    def __call__(self, logits: torch.Tensor, rows: Sequence[SampleRow]) -> list[SampleResult]:
        return self.sample(logits, build_metadata(rows, logits.shape[-1], logits.device))

    def sample(self, logits: torch.Tensor, meta: SamplingMetadata) -> list[SampleResult]:
        """One ``SampleResult`` per row: the token, and its logprob and top entries (in the row's
        mode) for rows that ask for logprobs; NaN and [] for the others."""
        raise NotImplementedError

    def distribution(self, logits: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
        """[B, V] final distributions S9 draws from (one-hot on S4's token for greedy rows)."""
        raise NotImplementedError


class TorchSampler(Sampler):
    """Samples one token per row of ``logits`` [B, V], in float64, with these steps in order
    (docs/sampling.md's S0..S9; batched.py):

    1. Copy the logits to float64; reject NaN and +inf (``SamplingError``).
    2. S0: mask the tokens ``allowed`` forbids (-inf). Raw logprobs are taken here.
    3. S1: add ``bias_values`` at ``bias_keys``.
    4. S2: the repetition penalty on each distinct token of ``repetition_keys``.
    5. S3: presence and frequency from the counts of ``output_keys``; a row left with no finite
       logit is an error.
    6. S4: greedy rows take the lowest id among the maxima.
    7. S5: the other rows shift by their maximum, then divide by ``temperature``.
    8. S6..S8 (rows that ``truncate``): pack the candidates ``z >= max(log_min_p, k-th value)``,
       rank them (ties: lower id), cut ``top_k`` then ``top_p`` on the renormalised survivors.
    9. S9: the first running weight, in ascending ids, past ``u`` times the total.
    10. Logprobs for the rows that ask (raw: step 2's; processed: the final logits, S3's at T = 0).
    """

    name = "torch"

    def sample(self, logits: torch.Tensor, meta: SamplingMetadata) -> list[SampleResult]:
        return batched.sample(logits, meta)

    def distribution(self, logits: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
        return batched.distribution(logits, meta)


class TritonSampler(Sampler):
    """Samples one token per row of ``logits`` [B, V] with the Triton kernels, one program per
    row (``nemo_ref.kernels.sampling``), with these steps in order:

    1. Lay the metadata out as kernel arguments (``kernel_inputs``): per-row parameters, and
       dense ``[B, V]`` bias, seen-token mask and output counts only when some row uses them.
    2. One launch of ``_sample_kernel`` per step. Pass 1 over the row: S0 (``allowed``), S1, S2,
       S3 into a float32 scratch row, the maximum and S4's argmax; NaN or +inf is an error.
    3. Greedy rows stop at S4. The others: S5 and S6 on the fly, a histogram of the survivors.
    4. S7 and S8: compact the candidates into a buffer (ids ascending) when it holds what they
       keep; binary searches over order-preserving keys find each cut (ties: lower id).
    5. S9: the first prefix sum, in ascending ids, past ``u`` times the survivors' mass.
    6. Logprobs for the rows that ask: raw from ``raw_logprobs`` (S0's log-softmax), processed
       from the final distribution the kernel writes (log-softmax after S3 at T = 0).
    """

    name = "triton"

    def __init__(self) -> None:
        from ..kernels import sampling as kernels  # Triton is imported only by whoever chooses it

        self.kernels = kernels

    @staticmethod
    def kernel_inputs(meta: SamplingMetadata) -> dict[str, torch.Tensor | None]:
        """The keyword arguments of ``kernels.sampling.sample``/``probabilities`` (all but ``u``)."""
        B, V, f32 = meta.batch, meta.vocab, torch.float32
        out: dict[str, torch.Tensor | None] = {
            "temperature": meta.temperature.to(f32),
            "top_p": meta.top_p,
            "top_k": meta.top_k.to(torch.int32),
            "min_p": meta.min_p,
            "logit_bias": None,
            "allowed": meta.allowed,
            **dict.fromkeys(("repetition_penalty", "presence_penalty", "frequency_penalty")),
            **dict.fromkeys(("prompt_mask", "output_counts")),
        }
        if meta.bias_keys.numel():
            bias = torch.zeros(B * V, device=meta.device, dtype=f32)
            bias[meta.bias_keys] = meta.bias_values.to(f32)
            out["logit_bias"] = bias.view(B, V)
        if meta.repetition_keys.numel() or meta.output_keys.numel():
            # The kernel penalises (S2) the tokens marked here or counted below: P and G of the
            # rows with r != 1; it subtracts (S3) the counts of G of the rows with presence or
            # frequency. Elsewhere r = 1 and the counts are 0: both exact no-ops.
            seen = torch.zeros(B * V, device=meta.device, dtype=torch.uint8)
            seen[meta.repetition_keys] = 1
            counts = torch.zeros(B * V, device=meta.device, dtype=torch.int32)
            counts.index_add_(0, meta.output_keys, torch.ones_like(meta.output_keys, dtype=torch.int32))
            out["prompt_mask"], out["output_counts"] = seen.view(B, V), counts.view(B, V)
            for name in ("repetition_penalty", "presence_penalty", "frequency_penalty"):
                out[name] = getattr(meta, name).to(f32)
        return out

    def sample(self, logits: torch.Tensor, meta: SamplingMetadata) -> list[SampleResult]:
        meta.check(logits)
        inputs = self.kernel_inputs(meta)
        processed = "processed" in meta.logprobs
        tokens, probs, penalised = self.kernels.run_sampler(logits, meta.u, processed, **inputs)
        raw_n = [n for mode, n in zip(meta.logprobs, meta.top_logprobs, strict=True) if mode == "raw"]
        if raw_n:
            raw, top_ids, top_values = self.kernels.raw_logprobs(logits, inputs["allowed"], max(raw_n))
        results = []
        for b, (mode, token) in enumerate(zip(meta.logprobs, tokens.tolist(), strict=True)):
            if mode is None:
                results.append(SampleResult(token, math.nan, []))
                continue
            if mode == "processed":
                assert probs is not None
                lp = torch.log_softmax(penalised[b], 0) if meta.greedy[b] else torch.log(probs[b])
                best, best_ids = torch.sort(lp, descending=True, stable=True)  # ties: lower id first
            else:
                lp, best, best_ids = raw[b], top_values[b], top_ids[b]
            n = meta.top_logprobs[b]
            pairs = zip(best_ids[:n].tolist(), best[:n].tolist(), strict=True)
            top = [(i, v) for i, v in pairs if v > -math.inf]
            results.append(SampleResult(token, float(lp[token]), top))
        return results

    def distribution(self, logits: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
        meta.check(logits)
        return self.kernels.probabilities(logits, **self.kernel_inputs(meta))


def make_sampler(choice: str | SamplerBackend | None, device: torch.device | str = "cpu") -> SamplerBackend:
    """The backend for ``choice``: ``"torch"``, ``"triton"``, a callable (used as is), or None
    (backends.py's rule for ``device``: Triton on CUDA, torch elsewhere)."""
    if choice is None:
        from ..backends import default_sampler

        choice = default_sampler(device)
    if callable(choice):
        return choice
    if choice == "torch":
        return TorchSampler()
    if choice == "triton":
        return TritonSampler()
    raise ValueError(f"sampler must be 'torch', 'triton' or a callable, got {choice!r}")
