"""HF transformers: `generate(do_sample=True)`'s logits processors (files of the transformers package)."""

from __future__ import annotations

from ..fields import Field, unsupported, use
from ..spec import Cited, EngineSpec

HF_UTILS = "generation/utils.py (_get_logits_processor)"
HF_LP = "generation/logits_process.py"
HF_CFG = "generation/configuration_utils.py"

HF = EngineSpec(
    name="hf",
    version="transformers 5.24.0",
    order=Cited(("logit_bias", "repetition", "temperature", "top_k", "top_p", "min_p"), HF_UTILS),
    defaults=Cited({"top_k": 50}, HF_CFG + " (_get_default_generation_params)"),
    fields={
        "temperature": use(
            "temperature",
            HF_LP + " (TemperatureLogitsWarper)",
            0,
            answer="ValueError: `temperature` has to be a strictly positive float "
            "(greedy decoding is do_sample=False)",
            lo_open=True,
        ),
        "top_p": use(
            "top_p",
            HF_LP + " (TopPLogitsWarper)",
            0,
            1,
            "ValueError: `top_p` has to be a float >= 0 and <= 1",
        ),
        "top_k": use(
            "top_k",
            HF_LP + " (TopKLogitsWarper)",
            0,
            kind="int",
            answer="ValueError: `top_k` has to be a strictly positive integer (0 = off)",
        ),
        "min_p": use(
            "min_p",
            HF_LP + " (MinPLogitsWarper)",
            0,
            1,
            "ValueError: `min_p` has to be a float >= 0 and <= 1",
        ),
        "repetition_penalty": use(
            "repetition_penalty",
            HF_LP + " (RepetitionPenaltyLogitsProcessor)",
            0,
            answer="ValueError: `penalty` has to be a strictly positive float",
            lo_open=True,
        ),
        "presence_penalty": unsupported(
            "presence_penalty",
            HF_UTILS,
            "generate() has no presence_penalty (ValueError: unused model_kwargs)",
        ),
        "frequency_penalty": unsupported(
            "frequency_penalty",
            HF_UTILS,
            "generate() has no frequency_penalty (ValueError: unused model_kwargs)",
        ),
        "logit_bias": Field(
            "use",
            "logit_bias",
            kind="bias",
            source=HF_LP + " (SequenceBiasLogitsProcessor)",
            assumed=True,
            answer="sent as sequence_bias={(id,): bias}",
        ),
    },
    repetition_sign=Cited("positive_divides", HF_LP + " (RepetitionPenaltyLogitsProcessor: z < 0 -> z * r)"),
    repetition_scope=Cited("prompt+output", HF_LP + " (all input_ids, left padding excluded)"),
    penalty_scope=Cited("none", HF_UTILS),
    frequency_formula=Cited("none", HF_UTILS),
    top_k_ties=Cited("keep", HF_LP + " (TopKLogitsWarper: scores < k-th value removed)"),
    top_p_boundary=Cited("lt", HF_LP + " (TopPLogitsWarper: ascending cumsum <= 1 - p removed)"),
    zero_temperature=Cited("reject", HF_LP + " (TemperatureLogitsWarper)"),
    min_temperature=Cited(None, HF_LP),
    logprobs_mode=Cited("processed", "generation/utils.py (output_scores; output_logits are raw)"),
    seeding=Cited(
        "global torch RNG (torch.multinomial on the model's device)", "generation/utils.py (_sample)"
    ),
    notes=(
        "A model's generation_config.json replaces these defaults (top_k 50 only applies when it sets none: "
        "huggingface/transformers#38549).",
    ),
)
