"""What each inference engine does with the same sampling request, as executable code.

    from nemo_ref.sampling import engines
    engines.names()                       # ["nemo_ref", "vllm", "hf", "llama.cpp", ...]
    e = engines.get("llama.cpp")
    e.resolve({"temperature": 0.7})       # the knobs it runs with (its defaults filled in)
    e.request_notes(request)              # fields it ignored, values it clamped or rewrote
    e.probabilities(logits, request, prompt_tokens, output_tokens)   # float64 [V]
    e.trace(logits, request, ...)         # every step, what it dropped
    e.sample(logits, request, prompt_tokens, output_tokens, seed)    # where the draw is reproducible

Every engine is one `EngineSpec` (spec.py; the nine in definitions/, one module per engine):
named choices (step order, penalty scopes, tie rules, top_p boundary, temperature rules, defaults,
validation, logprobs mode, seeding) over the shared steps of steps.py (named in chain.py), each
choice with the engine source file it comes from. `Engine` (engine.py) runs them; registry.py
names them. docs/engines.md is generated from the definitions (`python -m
nemo_ref.sampling.engines.doc`, doc.py).

Core only: numpy, no server or tokenizer imports.
"""

from __future__ import annotations

from ..params import ParamError
from .engine import Engine, Trace
from .fields import Field
from .registry import get, names
from .spec import Cited, EngineSpec

__all__ = ["Cited", "Engine", "EngineSpec", "Field", "ParamError", "Trace", "get", "names"]
