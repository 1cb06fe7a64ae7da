"""Text Generation Inference (its Python server and Rust router)."""

from __future__ import annotations

from ..fields import Field, ignored, use
from ..spec import Cited, EngineSpec

T_LP = "server/text_generation_server/utils/logits_process.py"
T_TOKENS = "server/text_generation_server/utils/tokens.py (NextTokenChooser)"
T_VALID = "router/src/validation.rs"
T_CHAT = "router/src/lib.rs (ChatRequest::try_into_generate)"
_TGI_CHAT = "not a field of TGI's chat request: ignored"

TGI = EngineSpec(
    name="tgi",
    version="Text Generation Inference (maintenance mode)",
    order=Cited(("repetition", "normalised_frequency", "greedy", "temperature", "top_k", "top_p"), T_TOKENS),
    defaults=Cited({}, T_VALID),
    fields={
        "temperature": use(
            "temperature",
            T_VALID + ", " + T_CHAT,
            0,
            answer="`temperature` must be strictly positive (0 on the chat route: greedy)",
        ),
        "top_p": use("top_p", T_VALID, 0, 1, "`top_p` must be > 0.0 and < 1.0", lo_open=True, hi_open=True),
        "frequency_penalty": use(
            "frequency_penalty", T_VALID, -2, 2, "`frequency_penalty` must be >= -2.0 and <= 2.0"
        ),
        "presence_penalty": Field(
            "use",
            "repetition_penalty",
            lo=-2,
            lo_open=True,
            source=T_CHAT + "; huggingface/text-generation-inference#1796",
            answer="`repetition_penalty` (= presence_penalty + 2) must be strictly positive",
            transform=lambda v: {"repetition_penalty": v + 2.0},
        ),
        "top_k": ignored("top_k", T_CHAT, _TGI_CHAT),
        "min_p": ignored("min_p", T_CHAT, "TGI has no min_p: ignored"),
        "repetition_penalty": ignored("repetition_penalty", T_CHAT, _TGI_CHAT),
        "logit_bias": ignored("logit_bias", T_CHAT, "accepted and unused"),
    },
    repetition_sign=Cited("positive_divides", T_LP + " (HeterogeneousRepetitionPenaltyLogitsProcessor)"),
    repetition_scope=Cited("prompt+output", T_LP + " (all input_ids)"),
    penalty_scope=Cited("prompt+output", T_LP + " (HeterogeneousFrequencyPenaltyLogitsProcessor)"),
    frequency_formula=Cited("normalised", T_LP + " (z -= f * count / sequence length)"),
    top_k_ties=Cited("keep", T_LP + " (HeterogeneousTopKLogitsWarper)"),
    top_p_boundary=Cited("lt", T_LP + " (HeterogeneousTopPLogitsWarper)"),
    zero_temperature=Cited("greedy", T_CHAT),
    min_temperature=Cited(None, T_VALID),
    logprobs_mode=Cited("processed", T_TOKENS),
    seeding=Cited("per-request torch.Generator (Exp(1) race on the device)", T_TOKENS),
    notes=(
        "Batched rows are right-padded with token 0, which the repetition penalty may then hit "
        "(UNVERIFIED); this emulation penalises the row's own tokens only.",
        "Chat-template tokens are part of the prompt, so the repetition penalty hits them "
        "(huggingface/text-generation-inference#1170).",
        "The frequency penalty divides by input_ids' width, which for a padded batch is the longest "
        "row: the same request is penalised less next to a longer one.",
        "logits_process.py also holds a non-batched FrequencyPenaltyLogitsProcessor with another "
        "formula (-z*f or -z/f per occurrence); which models use it is UNVERIFIED, not modelled.",
    ),
)
