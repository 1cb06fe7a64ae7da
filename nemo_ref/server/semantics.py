"""``nemo-ref serve --semantics ENGINE``: sample the way another engine does (docs/probe.md).

One model can stand in for vLLM, llama-server, Ollama, SGLang, TGI, transformers or
mistral-inference: the server keeps its protocol (routes, bodies, streaming, stops, n) and hands
the sampling to that engine's emulation in ``nemo_ref.sampling.engines``, which owns

- the request's sampling fields: the engine's own validation (a value it rejects is a 400 with its
  message, a value it clamps is clamped, a field it does not read is ignored, a field it does not
  know is rejected as nemo_ref rejects unknown fields), its defaults and rewrites;
- the pipeline: its order, penalty scopes, tie and boundary rules, temperature rules;
- the draw: the emulation's own ``sample`` where the engine's draw is a function of the seed
  (nemo_ref, llama.cpp, Ollama); otherwise an inverse-CDF draw on the emulation's final
  distribution with the project's counter RNG, ``u = U(seed, choice, step)`` (ascending ids);
- logprobs: what that engine reports (raw, tempered or processed).

``nemo_ref`` semantics (the default) does not come here: the server runs its own sampler, unchanged.

The sampler backend (``SemanticsSampler``) plugs into ``Engine(sampler=...)``: it receives one
decode step's rows and returns a ``SampleResult`` per row. Rows of one request that share their
history (every choice at step 0) share one pass of the emulation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..sampling.engines import Engine as EngineEmulation
from ..sampling.engines import get as get_engine
from ..sampling.engines import names as engine_names
from ..sampling.params import DISTRIBUTION_FIELDS, ParamError, SamplingParams
from ..sampling.reference import SampleResult
from ..sampling.rng import uniform

# Sampling fields nemo_ref's protocol knows: under another semantics they belong to the engine
# (validated by it, or rejected as unknown when it has no such field).
NEMO_REF_SAMPLING_FIELDS = DISTRIBUTION_FIELDS

# Emulations that only tests may serve (registered by the test suite, never by the CLI).
_EXTRA: dict[str, EngineEmulation] = {}


def semantics_names() -> list[str]:
    return [*engine_names(), *_EXTRA]


def register_semantics(emulation: EngineEmulation) -> None:
    """Make a custom emulation servable under its name (tests: a deliberately inconsistent mix)."""
    _EXTRA[emulation.name] = emulation


@dataclass(frozen=True, eq=False)
class EmulatedParams(SamplingParams):
    """SamplingParams for the protocol side (stops, logprobs, n, max tokens) plus the request's raw
    sampling fields, which only the emulation reads."""

    engine_request: Mapping[str, Any] = field(default_factory=dict)

    __hash__ = object.__hash__  # engine_request is a dict; identity is what the sampler groups by


class Semantics:
    """One engine's semantics: request splitting and validation, and the sampler backend."""

    def __init__(self, name: str):
        self.emulation = _EXTRA[name] if name in _EXTRA else get_engine(name)
        self.name = name
        self.fields = tuple(dict.fromkeys([*NEMO_REF_SAMPLING_FIELDS, *self.emulation.spec.fields]))

    def describe(self) -> dict:
        e = self.emulation
        return {"engine": self.name, "version": e.version, "logprobs_mode": e.logprobs_mode}

    def split(self, raw: bytes) -> tuple[bytes, dict[str, Any] | None]:
        """(the body without its sampling fields, those fields) — validated by the emulation.

        A body that is not a JSON object is returned as it is (the protocol's parser reports it).
        A field the engine rejects raises ParamError with the engine's message; a field nemo_ref
        knows but the engine does not is left in the body only if the engine has it.
        """
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError):
            return raw, None
        if not isinstance(body, dict):
            return raw, None
        request = {}
        for name in self.fields:
            if name in body:
                value = body.pop(name)
                if name in self.emulation.spec.fields:
                    request[name] = value
                elif value is not None:  # nemo_ref knows it, this engine has no such field
                    raise ParamError(name, f"{self.name}: Unrecognized request argument supplied: {name}")
        self.emulation.resolve(request)  # the engine's validation: ParamError names the field
        return json.dumps(body).encode(), request

    def attach(self, seqs: Sequence[Any], request: Mapping[str, Any]) -> None:
        """Give the job's choices the engine request (one shared params object per request)."""
        if not seqs:
            return
        base = seqs[0].params
        kw = {f: getattr(base, f) for f in SamplingParams.__dataclass_fields__}
        params = EmulatedParams(**kw, engine_request=dict(request))
        for seq in seqs:
            seq.params = params

    # ---- the sampler backend (the engine thread calls it once per decode step) -----------------

    def __call__(self, logits: torch.Tensor, rows: Sequence[Any]) -> list[SampleResult]:
        z_all = logits.detach().to(device="cpu", dtype=torch.float64).numpy()  # [B, V]
        groups: dict[tuple, list[int]] = {}
        for b, row in enumerate(rows):
            shared = row.allowed is None  # a grammar's state is the row's own: never grouped
            key = (id(row.params), tuple(int(t) for t in row.output_tokens)) if shared else (b,)
            groups.setdefault(key, []).append(b)
        results: list[SampleResult | None] = [None] * len(rows)
        for members in groups.values():
            # Rows of a group share params and history; their logits are equal unless batched
            # numerics differ, in which case each row runs alone.
            first = members[0]
            same = [b for b in members if np.array_equal(z_all[b], z_all[first])]
            for b in [x for x in members if x not in same]:
                results[b] = self._sample_group(z_all[b], rows, [b])[0]
            for b, r in zip(same, self._sample_group(z_all[first], rows, same), strict=True):
                results[b] = r
        return results  # type: ignore[return-value]

    def _sample_group(self, z: np.ndarray, rows: Sequence[Any], members: list[int]) -> list[SampleResult]:
        row = rows[members[0]]
        params = row.params
        request = getattr(params, "engine_request", {})
        prompt, output = _ids(row.prompt_tokens), _ids(row.output_tokens)
        if row.allowed is not None:  # the grammar acts first, as nemo_ref's S0 (and vLLM) do
            z = z.copy()
            z[~row.allowed.detach().cpu().numpy().astype(bool).reshape(-1)] = -np.inf
        e = self.emulation
        probs = None if e.seed_reproducible else e.probabilities(z, request, prompt, output)
        lps = e.logprobs(z, request, prompt, output) if params.logprobs else None
        out = []
        for b in members:
            r = rows[b]
            if probs is None:
                token = e.sample(z, request, prompt, output, self._seed(r.seed, r.choice))
            else:
                token = _inverse_cdf(probs, uniform(r.seed, r.choice, r.step))
            logprob, top = 0.0, []
            if lps is not None:
                logprob = float(lps[token])
                k = params.top_logprobs
                if k:
                    ids = np.lexsort((np.arange(lps.size), -lps))[:k]  # descending, ties by id
                    top = [(int(i), float(lps[i])) for i in ids]
            out.append(SampleResult(int(token), logprob, top))
        return out

    def _seed(self, seed: int, choice: int) -> int:
        """The seed handed to the emulation's draw: the request's for choice 0 (so a seeded
        request reproduces what the engine itself would draw), a hash of (seed, choice) for the
        others; reduced into [0, 2**32 - 1) (llama.cpp's seeds are uint32, and 0xFFFFFFFF means
        "random")."""
        if choice:
            digest = hashlib.sha256(f"{seed}/{choice}".encode()).digest()
            seed = int.from_bytes(digest[:8], "little")
        return seed % (2**32 - 1)


def _ids(tokens: Any) -> np.ndarray:
    if hasattr(tokens, "detach"):
        return tokens.detach().cpu().numpy().astype(np.int64).reshape(-1)
    return np.asarray(list(tokens), dtype=np.int64)


def _inverse_cdf(probs: np.ndarray, u: float) -> int:
    """The smallest id whose running probability (ascending ids) exceeds u * total."""
    running = np.cumsum(probs)
    i = int(np.searchsorted(running, u * running[-1], side="right"))
    if i >= probs.size:
        i = int(np.flatnonzero(probs > 0)[-1])
    return i


__all__ = ["EmulatedParams", "Semantics", "register_semantics", "semantics_names"]
