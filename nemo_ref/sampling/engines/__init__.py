"""What each inference engine does with the same sampling request, as executable code.

    from nemo_ref.sampling import engines
    engines.names()                       # ["nemo_ref", "vllm", "hf", "llama.cpp", ...]
    e = engines.get("llama.cpp")
    e.resolve({"temperature": 0.7})       # the knobs it runs with (its defaults filled in)
    e.request_notes(request)              # fields it ignored, values it clamped or rewrote
    e.probabilities(logits, request, prompt_tokens, output_tokens)   # float64 [V]
    e.trace(logits, request, ...)         # every step, what it dropped
    e.sample(logits, request, prompt_tokens, output_tokens, seed)    # where the draw is reproducible

Every engine is one `EngineSpec` (definitions.py): named choices (step order, penalty scopes,
tie rules, top_p boundary, temperature rules, defaults, validation, logprobs mode, seeding) over
the shared steps of steps.py, each choice with the engine source file it comes from. docs/engines.md
is generated from those definitions (`python -m nemo_ref.sampling.engines.doc`).

Core only: numpy, no server or tokenizer imports.
"""

from __future__ import annotations

from ..params import ParamError
from .definitions import ENGINES
from .spec import Cited, Engine, EngineSpec, Field, Trace

_BY_NAME: dict[str, Engine] = {spec.name: Engine(spec) for spec in ENGINES}


def names() -> list[str]:
    """The engines, nemo_ref first."""
    return list(_BY_NAME)


def get(name: str) -> Engine:
    """The engine called `name` (see names()); an unknown name is a KeyError listing the valid ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown engine {name!r}; valid: {', '.join(_BY_NAME)}") from None


__all__ = ["Cited", "Engine", "EngineSpec", "Field", "ParamError", "Trace", "get", "names"]
