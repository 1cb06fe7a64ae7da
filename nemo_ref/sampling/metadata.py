"""One decode step's sampling inputs as columns, built once from the rows (vLLM's SamplingMetadata).

The engine hands the sampler one ``SampleRow`` per sequence (its ``SamplingParams``, its draw's
counters, its history and its S0 mask). ``build_metadata`` reads every row once and lays the step
out as columns; both backends (``sampler.TorchSampler``, ``sampler.TritonSampler``) read
only these columns (``SamplingMetadata``'s docstring lists them), never ``SampleRow.params``.

Histories are gathered only for rows whose penalties read them, so a row without penalties costs
no history conversion (and its history is not checked: it is never read).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .params import SamplingParams
from .reference import SamplingError
from .rng import uniform

__all__ = ["SampleRow", "SamplingMetadata", "build_metadata"]

DTYPE = torch.float64  # the torch sampler's precision; the kernels convert what they read


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


@dataclass(frozen=True)
class SamplingMetadata:
    """A decode step's rows as columns. ``B`` rows, vocabulary ``V``; the tensors live on the
    logits' device. Flat keys are ``row * V + token`` (row-major COO of a ``[B, V]`` matrix: one
    int64 carries the pair, and ``key // V`` gives the row back).

    | column | shape, dtype | what (docs/sampling.md) |
    |---|---|---|
    | ``vocab`` | int | ``V`` |
    | ``temperature`` | ``[B]`` float64 | S5's T (0: greedy, S4) |
    | ``top_k`` | ``[B]`` int64 | S7's k as requested (0 or -1: off; ``>= V`` changes nothing) |
    | ``top_p`` | ``[B]`` float64 | S8's p (1: off) |
    | ``min_p`` | ``[B]`` float64 | S6's m (0: off) |
    | ``log_min_p`` | ``[B]`` float64 | S6's cut ``ln(m)`` (``math.log``, as the reference), -inf when off |
    | ``repetition_penalty`` | ``[B]`` float64 | S2's r (1: off) |
    | ``presence_penalty``, ``frequency_penalty`` | ``[B]`` float64 | S3's two weights (0: off) |
    | ``u`` | ``[B]`` float64 | S9's draw ``U(seed, choice, step)`` (rng.py) |
    | ``bias_keys``, ``bias_values`` | ``[N]`` int64, ``[N]`` float64 | S1: the (row, id, value) triplets of every row's ``logit_bias`` |
    | ``repetition_keys`` | ``[Nr]`` int64 | S2: every token of P and G of the rows with r != 1 (repeats kept) |
    | ``output_keys`` | ``[Ng]`` int64 | S3: every token of G of the rows with a presence or frequency penalty (repeats kept: they count) |
    | ``allowed`` | ``[B, V]`` bool or None | S0's mask (all True in a row without one; None when no row has one) |
    | ``greedy`` | tuple of B bool | ``temperature == 0``: S4 instead of S5..S9 |
    | ``truncates`` | tuple of B bool | some of S6..S8 is on (min_p > 0, 0 < k < V, p < 1) |
    | ``logprobs`` | tuple of B ``"raw"``/``"processed"``/None | which logprobs the row reports (None: none) |
    | ``top_logprobs`` | tuple of B int | how many top entries it reports |
    """

    vocab: int
    temperature: torch.Tensor  # [B] float64
    top_k: torch.Tensor  # [B] int64
    top_p: torch.Tensor  # [B] float64
    min_p: torch.Tensor  # [B] float64
    log_min_p: torch.Tensor  # [B] float64
    repetition_penalty: torch.Tensor  # [B] float64
    presence_penalty: torch.Tensor  # [B] float64
    frequency_penalty: torch.Tensor  # [B] float64
    u: torch.Tensor  # [B] float64
    bias_keys: torch.Tensor  # [N] int64, row * V + id
    bias_values: torch.Tensor  # [N] float64
    repetition_keys: torch.Tensor  # [Nr] int64, row * V + id
    output_keys: torch.Tensor  # [Ng] int64, row * V + id
    allowed: torch.Tensor | None  # [B, V] bool
    greedy: tuple[bool, ...]
    truncates: tuple[bool, ...]
    logprobs: tuple[str | None, ...]
    top_logprobs: tuple[int, ...]

    @property
    def batch(self) -> int:
        return len(self.greedy)

    @property
    def device(self) -> torch.device:
        return self.temperature.device

    def check(self, logits: torch.Tensor) -> None:
        """Backends call it first: the logits must be ``[B, V]`` for these rows."""
        if logits.dim() != 2 or tuple(logits.shape) != (self.batch, self.vocab):
            raise SamplingError(
                f"logits {tuple(logits.shape)} for {self.batch} rows of {self.vocab} tokens; expected [B, V]"
            )


def _keys(rows: Sequence[SampleRow], owners: list[int], prompt: bool, vocab: int, device) -> torch.Tensor:
    """Flat keys ``b * V + token`` of the owners' outputs (and prompts), repeats kept. Built and
    checked on the host, where the histories are, then copied to ``device`` at once."""
    parts, lengths = [], []
    for b in owners:
        for tokens in (rows[b].output_tokens, rows[b].prompt_tokens) if prompt else (rows[b].output_tokens,):
            parts.append(torch.as_tensor(tokens, dtype=torch.long, device="cpu").reshape(-1))
            lengths.append(parts[-1].numel())
    if not parts:
        return torch.empty(0, dtype=torch.long, device=device)
    flat = torch.cat(parts)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= vocab):
        raise SamplingError(f"history token ids outside [0, {vocab})")
    owner = [b for b in owners for _ in ((0, 1) if prompt else (0,))]
    row = torch.repeat_interleave(torch.tensor(owner), torch.tensor(lengths))
    return (flat + row * vocab).to(device)


def build_metadata(rows: Sequence[SampleRow], vocab: int, device: torch.device | str) -> SamplingMetadata:
    """The step's columns (module docstring), read from the rows once. Raises ``ParamError`` for a
    ``logit_bias`` id outside the vocabulary and ``SamplingError`` for a history id outside it or
    an S0 mask of the wrong size."""
    params = [row.params for row in rows]
    for p in params:
        p.check_vocab(vocab)

    def column(values: list, dtype: torch.dtype = DTYPE) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=device)

    bias_keys = [b * vocab + i for b, p in enumerate(params) for i in p.logit_bias]
    bias_values = [v for p in params for v in p.logit_bias.values()]
    repeating = [b for b, p in enumerate(params) if p.repetition_penalty != 1]
    counting = [b for b, p in enumerate(params) if p.presence_penalty or p.frequency_penalty]
    allowed = None
    if any(row.allowed is not None for row in rows):
        allowed = torch.ones((len(rows), vocab), dtype=torch.bool)  # on the host, like the masks
        for b, row in enumerate(rows):
            if row.allowed is not None:
                mask = row.allowed.to(device="cpu", dtype=torch.bool).reshape(-1)
                if mask.numel() != vocab:
                    raise SamplingError(f"row {b}: allowed mask has {mask.numel()} entries")
                allowed[b] = mask
        allowed = allowed.to(device)  # [B, V]: one copy per step
    # the float64 columns in one tensor: one host-to-device copy per step instead of eight
    floats = column(
        [
            [p.temperature for p in params],
            [p.top_p for p in params],
            [p.min_p for p in params],
            [math.log(p.min_p) if p.min_p > 0 else -math.inf for p in params],
            [p.repetition_penalty for p in params],
            [p.presence_penalty for p in params],
            [p.frequency_penalty for p in params],
            [uniform(row.seed, row.choice, row.step) for row in rows],
        ]
    )  # [8, B]
    temperature, top_p, min_p, log_min_p, repetition, presence, frequency, u = floats.unbind(0)
    return SamplingMetadata(
        vocab=vocab,
        temperature=temperature,
        top_k=column([p.top_k for p in params], torch.long),
        top_p=top_p,
        min_p=min_p,
        log_min_p=log_min_p,
        repetition_penalty=repetition,
        presence_penalty=presence,
        frequency_penalty=frequency,
        u=u,
        bias_keys=column(bias_keys, torch.long),
        bias_values=column(bias_values),
        repetition_keys=_keys(rows, repeating, True, vocab, device),
        output_keys=_keys(rows, counting, False, vocab, device),
        allowed=allowed,
        greedy=tuple(p.greedy for p in params),
        truncates=tuple(p.min_p > 0 or 0 < p.top_k < vocab or p.top_p < 1 for p in params),
        logprobs=tuple(p.logprobs_mode if p.logprobs else None for p in params),
        top_logprobs=tuple(p.top_logprobs for p in params),
    )
