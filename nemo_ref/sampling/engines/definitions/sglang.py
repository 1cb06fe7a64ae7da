"""SGLang (its PyTorch sampling path; files of the sglang package's `srt`)."""

from __future__ import annotations

from ..fields import Field, in_range, use
from ..spec import Cited, EngineSpec

S_PARAMS = "srt/sampling/sampling_params.py"
S_PEN = "srt/sampling/penaltylib/"
S_SAMPLER = "srt/layers/sampler.py"
S_BATCH = "srt/sampling/sampling_batch_info.py"
S_RANGE = "{knob} must be in {interval}"

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
        "top_p": in_range("top_p", S_PARAMS, "(0, 1]", S_RANGE),
        "top_k": use(
            "top_k",
            S_PARAMS,
            -1,
            kind="int",
            reject_values=(0,),
            answer="top_k must be -1 (disable) or at least 1",
        ),
        "min_p": in_range("min_p", S_PARAMS, "[0, 1]", S_RANGE),
        "repetition_penalty": in_range(
            "repetition_penalty", S_PARAMS, "(0, 2]", S_RANGE + " (1.0 = no penalty)"
        ),
        "presence_penalty": in_range("presence_penalty", S_PARAMS, "[-2, 2]", S_RANGE),
        "frequency_penalty": in_range("frequency_penalty", S_PARAMS, "[-2, 2]", S_RANGE),
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
