"""mistral-inference: the model authors' own `generate()`."""

from __future__ import annotations

from ..fields import unsupported, use
from ..spec import Cited, EngineSpec

M_GEN = "src/mistral_inference/generate.py"
_M_NONE = "generate() takes no such argument (TypeError)"

MISTRAL_INFERENCE = EngineSpec(
    name="mistral-inference",
    version="mistral-inference v1.6.0",
    order=Cited(("greedy", "temperature", "top_p"), M_GEN + " (sample, sample_top_p)"),
    defaults=Cited({"top_p": 0.8}, M_GEN + " (generate: top_p=0.8)"),
    fields={
        "temperature": use(
            "temperature",
            M_GEN,
            required=True,
            answer="generate() requires temperature (keyword-only, no default; TypeError without it)",
        ),
        "top_p": unsupported("top_p", M_GEN, "generate() fixes top_p at 0.8 and takes no top_p (TypeError)"),
        "top_k": unsupported("top_k", M_GEN, _M_NONE),
        "min_p": unsupported("min_p", M_GEN, _M_NONE),
        "repetition_penalty": unsupported("repetition_penalty", M_GEN, _M_NONE),
        "presence_penalty": unsupported("presence_penalty", M_GEN, _M_NONE),
        "frequency_penalty": unsupported("frequency_penalty", M_GEN, _M_NONE),
        "logit_bias": unsupported("logit_bias", M_GEN, _M_NONE),
    },
    repetition_sign=Cited("none", M_GEN),
    repetition_scope=Cited("none", M_GEN),
    penalty_scope=Cited("none", M_GEN),
    frequency_formula=Cited("none", M_GEN),
    top_k_ties=Cited("none", M_GEN),
    top_p_boundary=Cited("le", M_GEN + " (sample_top_p: cumsum - p_t > p removed)"),
    zero_temperature=Cited("argmax_if_not_positive", M_GEN + " (sample: T <= 0 -> argmax)"),
    min_temperature=Cited(None, M_GEN),
    logprobs_mode=Cited("raw", M_GEN + " (log_softmax of the logits)"),
    seeding=Cited("global torch RNG (torch.multinomial)", M_GEN),
)
