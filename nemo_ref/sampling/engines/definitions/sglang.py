"""SGLang (its PyTorch sampling path; files of the sglang package's `srt`)."""

from __future__ import annotations

from ..fields import Field, use
from ..spec import Cited, EngineSpec

S_PARAMS = "srt/sampling/sampling_params.py"
S_PEN = "srt/sampling/penaltylib/"
S_SAMPLER = "srt/layers/sampler.py"
S_BATCH = "srt/sampling/sampling_batch_info.py"

SGLANG = EngineSpec(
    name="sglang",
    version="SGLang 0.5.23",
    order=Cited(
        ("presence_frequency", "repetition", "logit_bias", "temperature", "top_p", "top_k", "min_p"),
        S_SAMPLER + " + " + S_BATCH + " (top_k and top_p jointly on one sort: same as top_p, then top_k)",
    ),
    defaults=Cited({}, S_PARAMS),
    fields={
        "temperature": use(
            "temperature", S_PARAMS, 0, answer="temperature must be a non-negative finite number"
        ),
        "top_p": use("top_p", S_PARAMS, 0, 1, "top_p must be in (0, 1]", lo_open=True),
        "top_k": use(
            "top_k",
            S_PARAMS,
            -1,
            kind="int",
            reject_values=(0,),
            answer="top_k must be -1 (disable) or at least 1",
        ),
        "min_p": use("min_p", S_PARAMS, 0, 1, "min_p must be in [0, 1]"),
        "repetition_penalty": use(
            "repetition_penalty",
            S_PARAMS,
            0,
            2,
            "repetition_penalty must be in (0, 2] (1.0 = no penalty)",
            lo_open=True,
        ),
        "presence_penalty": use("presence_penalty", S_PARAMS, -2, 2, "presence_penalty must be in [-2, 2]"),
        "frequency_penalty": use(
            "frequency_penalty", S_PARAMS, -2, 2, "frequency_penalty must be in [-2, 2]"
        ),
        "logit_bias": Field(
            "use", "logit_bias", kind="bias", source=S_PARAMS + " (keys in [0, V); values unchecked)"
        ),
    },
    repetition_sign=Cited("positive_divides", S_PEN + "repetition_penalty.py (z < 0 -> z * r)"),
    repetition_scope=Cited("output", S_PEN + "repetition_penalty.py"),
    penalty_scope=Cited("output", S_PEN + "frequency_penalty.py, presence_penalty.py"),
    frequency_formula=Cited("openai", S_PEN + "frequency_penalty.py"),
    top_k_ties=Cited("exactly_k", S_SAMPLER + " (rank < k on the sorted row)"),
    top_p_boundary=Cited("le", S_SAMPLER + " (cumsum - p_t > top_p removed; not renormalised after top_k)"),
    zero_temperature=Cited("greedy_via_top_k", S_PARAMS + " (T < 1e-6 -> T = 1, top_k = 1)"),
    min_temperature=Cited(None, S_PARAMS),
    logprobs_mode=Cited("tempered", S_SAMPLER + " (log(softmax(z / T)) before the filters)"),
    seeding=Cited("ignored unless deterministic inference mode is on", S_SAMPLER),
    notes=(
        "On CUDA the FlashInfer backend is the default: with min_p it renormalises top_k before top_p "
        "(exact boundaries UNVERIFIED); this emulation follows the PyTorch path.",
    ),
)
