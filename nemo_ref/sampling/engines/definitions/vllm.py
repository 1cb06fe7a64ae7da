"""vLLM (the V1 engine's PyTorch sampler; files of the vllm package at `version`)."""

from __future__ import annotations

from ..fields import in_range, use
from ..spec import Cited, EngineSpec

V_SAMPLER = "vllm/v1/sample/sampler.py"
V_PARAMS = "vllm/sampling_params.py"
V_TOPKP = "vllm/v1/sample/ops/topk_topp_sampler.py"
V_PEN = "vllm/model_executor/layers/utils.py (apply_penalties)"
V_PROTO = "vllm/entrypoints/openai/protocol.py"
V_RANGE = "400: {knob} must be in {interval}"
ORDER = ("logit_bias", "repetition", "presence_frequency", "greedy", "temperature", "min_p", "top_k", "top_p")

VLLM = EngineSpec(
    name="vllm",
    version="vLLM 0.33.0",
    order=Cited(ORDER, V_SAMPLER),
    defaults=Cited({}, V_PARAMS),
    fields={
        "temperature": in_range("temperature", V_PARAMS, "[0, 2]", V_RANGE),
        "top_p": in_range("top_p", V_PARAMS, "(0, 1]", V_RANGE),
        "top_k": use(
            "top_k", V_PARAMS, -1, kind="int", answer="400: top_k must be 0 (disable), or at least 1"
        ),
        "min_p": in_range("min_p", V_PARAMS, "[0, 1]", V_RANGE),
        "repetition_penalty": use(
            "repetition_penalty",
            V_PARAMS,
            0,
            answer="400: repetition_penalty must be greater than zero",
            lo_open=True,
        ),
        "presence_penalty": in_range("presence_penalty", V_PARAMS, "[-2, 2]", V_RANGE),
        "frequency_penalty": in_range("frequency_penalty", V_PARAMS, "[-2, 2]", V_RANGE),
        "logit_bias": in_range(
            "logit_bias", V_PROTO, "[-100, 100]", "clamped to {interval}", kind="bias", violation="clamp"
        ),
    },
    repetition_sign=Cited("positive_divides", V_PEN),
    repetition_scope=Cited("prompt+output", V_PEN),
    penalty_scope=Cited("output", V_PEN),
    frequency_formula=Cited("openai", V_PEN),
    top_k_ties=Cited("keep", V_TOPKP),
    top_p_boundary=Cited("lt", V_TOPKP),
    zero_temperature=Cited("greedy", V_SAMPLER),
    min_temperature=Cited(0.01, V_PARAMS),
    logprobs_mode=Cited("raw", V_SAMPLER + " (--logprobs-mode processed_logprobs: processed)"),
    seeding=Cited(
        "per-request: V1 torch.Generator + Exp(1) race; V2 Triton Gumbel-max keyed by (seed, position); "
        "GPU float32 noise, not reproduced here",
        "vllm/v1/worker/gpu/sample/gumbel.py",
    ),
    notes=(
        "The OpenAI server overlays the model's generation_config.json on these defaults unless started "
        "with --generation-config vllm (vllm-project/vllm#15281).",
        "On CUDA, vLLM can sample with FlashInfer's top-k/top-p kernels (VLLM_USE_FLASHINFER_SAMPLER); "
        "their boundaries are not modelled here (the emulation follows the PyTorch path of "
        "topk_topp_sampler.py).",
    ),
)
