"""The nine engines, each as its choices over the shared steps, each choice with its source.

Long by nature: it is the data behind docs/engines.md, one block per engine, nothing else.

Sources are files of the engine's own repository at the version in `version` (llama.cpp: the copy
vendored by llama-cpp-python 0.3.36). `Cited(..., assumed=True)` marks what the source (or, for
OpenAI, the API reference) leaves open: the emulation's assumption, stated in docs/engines.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..rng import uniform
from .mt19937 import uniform_doubles
from .spec import Cited, EngineSpec, Field

INT32_MAX = 2**31 - 1


# ---- draws that are a function of the seed ------------------------------------------------------


def nemo_ref_draw(z: np.ndarray, knobs: Mapping[str, Any], output: np.ndarray, seed: int) -> int:
    """docs/sampling.md S9: u = U(seed, 0, step); the smallest id whose running weight (ascending
    ids) exceeds u * total. Choice 0; the step is the number of tokens generated so far."""
    u = uniform(seed, 0, int(output.size))
    running = np.cumsum(np.exp(z - z.max()))
    i = int(np.searchsorted(running, u * running[-1], side="right"))
    return i if i < z.size else int(np.flatnonzero(np.isfinite(z))[-1])


def llama_cpp_draw(z: np.ndarray, knobs: Mapping[str, Any], output: np.ndarray, seed: int) -> int:
    """src/llama-sampler.cpp `llama_sampler_dist_apply`: float32 weights expf(l - max) in the
    candidates' current order, their double sum, u from std::mt19937(seed) (one draw per sampled
    token, so the step's u is draw number len(output)), the first candidate whose running double
    sum is >= u * sum. The current order is descending logit when top_k or top_p sorted the array
    (ties: lower id first, an assumption: std::partial_sort leaves them unspecified), else the ids'
    own ascending order (min_p and temperature keep the order)."""
    if not 0 <= seed < 2**32 - 1:
        raise ValueError("llama.cpp seeds are uint32 and 0xFFFFFFFF (-1) means a random seed")
    ids = np.flatnonzero(np.isfinite(z))
    if knobs["top_k"] > 0 or knobs["top_p"] < 1:
        ids = ids[np.lexsort((ids, -z[ids]))]
    w = np.exp((z[ids] - z[ids].max()).astype(np.float32)).astype(np.float64)
    running = np.cumsum(w)  # sequential double adds, as the C loop
    u = uniform_doubles(seed, int(output.size) + 1)[-1]
    i = int(np.searchsorted(running, running[-1] * u, side="left"))  # first running >= target
    return int(ids[min(i, ids.size - 1)])


# ---- request fields shared by several engines ----------------------------------------------------


def _f(
    knob: str, source: str, lo: float = -math.inf, hi: float = math.inf, answer: str = "", **kw: Any
) -> Field:
    return Field("use", knob, lo=lo, hi=hi, answer=answer, source=source, **kw)


def _ignored(knob: str, source: str, answer: str, assumed: bool = False) -> Field:
    return Field("ignore", knob, answer=answer, source=source, assumed=assumed)


def _unsupported(knob: str, source: str, answer: str, assumed: bool = False) -> Field:
    return Field("unsupported", knob, answer=answer, source=source, assumed=assumed)


# ---- nemo_ref ------------------------------------------------------------------------------------

NR = "docs/sampling.md"
NR_PARAMS = "nemo_ref/sampling/params.py"

NEMO_REF = EngineSpec(
    name="nemo_ref",
    version="nemo_ref 0.1.0",
    order=Cited(
        (
            "logit_bias",
            "repetition",
            "presence_frequency",
            "greedy",
            "temperature",
            "min_p",
            "top_k",
            "top_p",
        ),
        NR + " (S1..S8)",
    ),
    defaults=Cited({}, NR_PARAMS),
    fields={
        "temperature": _f("temperature", NR_PARAMS, 0, 2, "temperature must be a number in [0, 2]"),
        "top_p": _f("top_p", NR_PARAMS, 0, 1, "top_p must be a number in [0, 1]"),
        "top_k": _f(
            "top_k", NR_PARAMS, -1, kind="int", answer="top_k must be an integer >= 0 (or -1 for off)"
        ),
        "min_p": _f("min_p", NR_PARAMS, 0, 1, "min_p must be a number in [0, 1]"),
        "repetition_penalty": _f(
            "repetition_penalty",
            NR_PARAMS,
            0,
            2,
            "repetition_penalty must be a number in (0, 2]",
            lo_open=True,
        ),
        "presence_penalty": _f(
            "presence_penalty", NR_PARAMS, -2, 2, "presence_penalty must be a number in [-2, 2]"
        ),
        "frequency_penalty": _f(
            "frequency_penalty", NR_PARAMS, -2, 2, "frequency_penalty must be a number in [-2, 2]"
        ),
        "logit_bias": _f("logit_bias", NR_PARAMS, -100, 100, "values must lie in [-100, 100]", kind="bias"),
    },
    repetition_sign=Cited("positive_divides", NR + " S2"),
    repetition_scope=Cited("prompt+output", NR + " S2"),
    penalty_scope=Cited("output", NR + " S3"),
    frequency_formula=Cited("openai", NR + " S3"),
    top_k_ties=Cited("exactly_k", NR + " S7"),
    top_p_boundary=Cited("lt", NR + " S8"),
    zero_temperature=Cited("greedy", NR + " S4"),
    min_temperature=Cited(None, NR + " S5"),
    logprobs_mode=Cited("raw", NR + " Logprobs"),
    seeding=Cited(
        "counter-based: U(seed, choice, step) = SHA-256, batch-independent", "nemo_ref/sampling/rng.py"
    ),
    draw=nemo_ref_draw,
)


# ---- vLLM ----------------------------------------------------------------------------------------

V_SAMPLER = "vllm/v1/sample/sampler.py"
V_PARAMS = "vllm/sampling_params.py"
V_TOPKP = "vllm/v1/sample/ops/topk_topp_sampler.py"
V_PEN = "vllm/model_executor/layers/utils.py (apply_penalties)"
V_PROTO = "vllm/entrypoints/openai/protocol.py"

VLLM = EngineSpec(
    name="vllm",
    version="vLLM 0.33.0",
    order=Cited(
        (
            "logit_bias",
            "repetition",
            "presence_frequency",
            "greedy",
            "temperature",
            "min_p",
            "top_k",
            "top_p",
        ),
        V_SAMPLER,
    ),
    defaults=Cited({}, V_PARAMS),
    fields={
        "temperature": _f("temperature", V_PARAMS, 0, 2, "400: temperature must be in [0, 2]"),
        "top_p": _f("top_p", V_PARAMS, 0, 1, "400: top_p must be in (0, 1]", lo_open=True),
        "top_k": _f(
            "top_k", V_PARAMS, -1, kind="int", answer="400: top_k must be 0 (disable), or at least 1"
        ),
        "min_p": _f("min_p", V_PARAMS, 0, 1, "400: min_p must be in [0, 1]"),
        "repetition_penalty": _f(
            "repetition_penalty",
            V_PARAMS,
            0,
            answer="400: repetition_penalty must be greater than zero",
            lo_open=True,
        ),
        "presence_penalty": _f(
            "presence_penalty", V_PARAMS, -2, 2, "400: presence_penalty must be in [-2, 2]"
        ),
        "frequency_penalty": _f(
            "frequency_penalty", V_PARAMS, -2, 2, "400: frequency_penalty must be in [-2, 2]"
        ),
        "logit_bias": _f(
            "logit_bias", V_PROTO, -100, 100, "clamped to [-100, 100]", kind="bias", violation="clamp"
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


# ---- HF transformers -----------------------------------------------------------------------------

HF_UTILS = "generation/utils.py (_get_logits_processor)"
HF_LP = "generation/logits_process.py"
HF_CFG = "generation/configuration_utils.py"

HF = EngineSpec(
    name="hf",
    version="transformers 5.24.0",
    order=Cited(("logit_bias", "repetition", "temperature", "top_k", "top_p", "min_p"), HF_UTILS),
    defaults=Cited({"top_k": 50}, HF_CFG + " (_get_default_generation_params)"),
    fields={
        "temperature": _f(
            "temperature",
            HF_LP + " (TemperatureLogitsWarper)",
            0,
            answer="ValueError: `temperature` has to be a strictly positive float "
            "(greedy decoding is do_sample=False)",
            lo_open=True,
        ),
        "top_p": _f(
            "top_p",
            HF_LP + " (TopPLogitsWarper)",
            0,
            1,
            "ValueError: `top_p` has to be a float >= 0 and <= 1",
        ),
        "top_k": _f(
            "top_k",
            HF_LP + " (TopKLogitsWarper)",
            0,
            kind="int",
            answer="ValueError: `top_k` has to be a strictly positive integer (0 = off)",
        ),
        "min_p": _f(
            "min_p",
            HF_LP + " (MinPLogitsWarper)",
            0,
            1,
            "ValueError: `min_p` has to be a float >= 0 and <= 1",
        ),
        "repetition_penalty": _f(
            "repetition_penalty",
            HF_LP + " (RepetitionPenaltyLogitsProcessor)",
            0,
            answer="ValueError: `penalty` has to be a strictly positive float",
            lo_open=True,
        ),
        "presence_penalty": _unsupported(
            "presence_penalty",
            HF_UTILS,
            "generate() has no presence_penalty (ValueError: unused model_kwargs)",
        ),
        "frequency_penalty": _unsupported(
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


# ---- llama.cpp (server) and Ollama (which runs llama-server) -------------------------------------

L_SAMPLER = "src/llama-sampler.cpp"
L_COMMON = "common/common.h"
L_SAMPLING = "common/sampling.cpp"
L_SCHEMA = "tools/server/server-schema.cpp"
L_SERVER = "tools/server/server-context.cpp"


def _llama_choices(where: str) -> dict[str, Any]:
    """The choices llama-server makes; `where` names the repository (Ollama runs llama-server)."""
    return dict(
        order=Cited(
            ("logit_bias", "repetition", "presence_frequency", "top_k", "top_p", "min_p", "temperature"),
            where + L_SAMPLING + " (common_sampler_init) + " + L_COMMON + " (samplers)",
        ),
        repetition_sign=Cited("positive_divides", where + L_SAMPLER + " (penalties: z <= 0 -> z * r)"),
        repetition_scope=Cited(
            "window", where + L_SAMPLER + " (penalties ring buffer) + " + L_SERVER + " (prompt accepted)"
        ),
        penalty_scope=Cited("window", where + L_SAMPLER + " (penalties)"),
        frequency_formula=Cited("openai", where + L_SAMPLER + " (penalties)"),
        top_k_ties=Cited("exactly_k_unspecified", where + L_SAMPLER + " (std::partial_sort)"),
        top_p_boundary=Cited("lt", where + L_SAMPLER + " (top_p: smallest prefix with cumsum >= p)"),
        zero_temperature=Cited("keep_first_max", where + L_SAMPLER + " (llama_sampler_temp_impl)"),
        min_temperature=Cited(None, where + L_SAMPLER),
        logprobs_mode=Cited("raw", where + L_SERVER + " (n_probs; post_sampling_probs gives the final ones)"),
        seeding=Cited(
            "std::mt19937(seed), uniform_real_distribution<double>, one draw per token",
            where + L_SAMPLER + " (dist)",
        ),
        unknown_bias_ids=Cited("drop", where + L_SCHEMA + " (logit_bias: ids outside [0, n_vocab) skipped)"),
        float32=Cited(True, where + L_SAMPLER + " (llama_token_data.logit is float)"),
        draw=llama_cpp_draw,
    )


def _llama_fields(source: str) -> dict[str, Field]:
    return {
        "temperature": _f("temperature", source, 0, violation="clamp", answer="clamped to >= 0"),
        "top_k": _f("top_k", source, 0, INT32_MAX, kind="int", violation="clamp", answer="clamped to >= 0"),
        "top_p": _f("top_p", source, 0, 1, violation="clamp", answer="clamped to [0, 1]"),
        "min_p": _f("min_p", source, 0, 1, violation="clamp", answer="clamped to [0, 1]"),
        "repeat_penalty": _f(
            "repetition_penalty",
            L_SAMPLING,
            0,
            answer="penalty_repeat must be finite and greater than 0",
            lo_open=True,
        ),
        "repeat_last_n": _f(
            "repeat_last_n",
            source,
            0,
            INT32_MAX,
            kind="int",
            answer="Value must be between 0 <= value <= 2147483647",
        ),
        "repetition_penalty": _ignored(
            "repetition_penalty", source, "not a llama-server field (its name is repeat_penalty): ignored"
        ),
        "presence_penalty": _f("presence_penalty", source),
        "frequency_penalty": _f("frequency_penalty", source),
        "logit_bias": _f("logit_bias", source, kind="bias", answer="no range; false bans", false_bans=True),
    }


LLAMA_CPP = EngineSpec(
    name="llama.cpp",
    version="llama.cpp (vendored by llama-cpp-python 0.3.36), llama-server",
    defaults=Cited(
        {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_last_n": 64}, L_COMMON
    ),
    fields=_llama_fields(L_SCHEMA),
    notes=(
        "GGUF general.sampling.* metadata can replace the defaults.",
        "A request may reorder the chain (`samplers`); this emulation runs the default order.",
    ),
    **_llama_choices(""),
)

O_OPENAI = "openai/openai.go (FromChatRequest)"
O_TYPES = "api/types.go (DefaultOptions)"
O_RUNNER = "llm/llama_server.go"
_OLLAMA_IGNORES = "not read by Ollama's OpenAI route (use /api/chat options): ignored"

OLLAMA = EngineSpec(
    name="ollama",
    version="Ollama (main at 2026-08-21, fb30760; llama-server runner)",
    defaults=Cited(
        {"temperature": 1.0, "top_k": 40, "top_p": 1.0, "min_p": 0.0, "repeat_last_n": 64},
        O_TYPES + " + " + O_OPENAI + " (unset temperature/top_p -> 1.0) + " + O_RUNNER + " (sent explicitly)",
    ),
    fields={
        "temperature": _f(
            "temperature", O_OPENAI, 0, violation="clamp", answer="clamped to >= 0 by llama-server"
        ),
        "top_p": _f("top_p", O_OPENAI, 0, 1, violation="clamp", answer="clamped to [0, 1] by llama-server"),
        "presence_penalty": _f("presence_penalty", O_OPENAI),
        "frequency_penalty": _f("frequency_penalty", O_OPENAI),
        "top_k": _ignored("top_k", O_OPENAI, _OLLAMA_IGNORES),
        "min_p": _ignored("min_p", O_OPENAI, _OLLAMA_IGNORES),
        "repetition_penalty": _ignored("repetition_penalty", O_OPENAI, _OLLAMA_IGNORES),
        "logit_bias": _ignored("logit_bias", O_OPENAI, _OLLAMA_IGNORES),
    },
    notes=(
        "The Go sampler Ollama used from 2025 to mid 2026 ignored every penalty (ollama/ollama#15783).",
        "A Modelfile's PARAMETER lines replace the defaults.",
    ),
    **_llama_choices("llama.cpp "),
)


# ---- SGLang --------------------------------------------------------------------------------------

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
        "temperature": _f(
            "temperature", S_PARAMS, 0, answer="temperature must be a non-negative finite number"
        ),
        "top_p": _f("top_p", S_PARAMS, 0, 1, "top_p must be in (0, 1]", lo_open=True),
        "top_k": _f(
            "top_k",
            S_PARAMS,
            -1,
            kind="int",
            reject_values=(0,),
            answer="top_k must be -1 (disable) or at least 1",
        ),
        "min_p": _f("min_p", S_PARAMS, 0, 1, "min_p must be in [0, 1]"),
        "repetition_penalty": _f(
            "repetition_penalty",
            S_PARAMS,
            0,
            2,
            "repetition_penalty must be in (0, 2] (1.0 = no penalty)",
            lo_open=True,
        ),
        "presence_penalty": _f("presence_penalty", S_PARAMS, -2, 2, "presence_penalty must be in [-2, 2]"),
        "frequency_penalty": _f("frequency_penalty", S_PARAMS, -2, 2, "frequency_penalty must be in [-2, 2]"),
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


# ---- Text Generation Inference -------------------------------------------------------------------

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
        "temperature": _f(
            "temperature",
            T_VALID + ", " + T_CHAT,
            0,
            answer="`temperature` must be strictly positive (0 on the chat route: greedy)",
        ),
        "top_p": _f("top_p", T_VALID, 0, 1, "`top_p` must be > 0.0 and < 1.0", lo_open=True, hi_open=True),
        "frequency_penalty": _f(
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
        "top_k": _ignored("top_k", T_CHAT, _TGI_CHAT),
        "min_p": _ignored("min_p", T_CHAT, "TGI has no min_p: ignored"),
        "repetition_penalty": _ignored("repetition_penalty", T_CHAT, _TGI_CHAT),
        "logit_bias": _ignored("logit_bias", T_CHAT, "accepted and unused"),
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


# ---- mistral-inference ---------------------------------------------------------------------------

M_GEN = "src/mistral_inference/generate.py"
_M_NONE = "generate() takes no such argument (TypeError)"

MISTRAL_INFERENCE = EngineSpec(
    name="mistral-inference",
    version="mistral-inference v1.6.0",
    order=Cited(("greedy", "temperature", "top_p"), M_GEN + " (sample, sample_top_p)"),
    defaults=Cited({"top_p": 0.8}, M_GEN + " (generate: top_p=0.8)"),
    fields={
        "temperature": _f(
            "temperature",
            M_GEN,
            required=True,
            answer="generate() requires temperature (keyword-only, no default; TypeError without it)",
        ),
        "top_p": _unsupported("top_p", M_GEN, "generate() fixes top_p at 0.8 and takes no top_p (TypeError)"),
        "top_k": _unsupported("top_k", M_GEN, _M_NONE),
        "min_p": _unsupported("min_p", M_GEN, _M_NONE),
        "repetition_penalty": _unsupported("repetition_penalty", M_GEN, _M_NONE),
        "presence_penalty": _unsupported("presence_penalty", M_GEN, _M_NONE),
        "frequency_penalty": _unsupported("frequency_penalty", M_GEN, _M_NONE),
        "logit_bias": _unsupported("logit_bias", M_GEN, _M_NONE),
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


# ---- OpenAI (the documented part) ----------------------------------------------------------------

OA = "platform.openai.com/docs/api-reference/chat/create"
OA_DETAILS = "OpenAI API guide, parameter details (frequency and presence penalties)"
_OA_UNKNOWN = "400: Unrecognized request argument supplied"

OPENAI = EngineSpec(
    name="openai",
    version="OpenAI API (documented behaviour)",
    order=Cited(("logit_bias", "presence_frequency", "greedy", "temperature", "top_p"), OA, assumed=True),
    defaults=Cited({}, OA),
    fields={
        "temperature": _f("temperature", OA, 0, 2, "400: temperature must be in [0, 2]"),
        "top_p": _f("top_p", OA, 0, 1, "400: top_p must be in [0, 1]"),
        "presence_penalty": _f("presence_penalty", OA, -2, 2, "400: presence_penalty must be in [-2, 2]"),
        "frequency_penalty": _f("frequency_penalty", OA, -2, 2, "400: frequency_penalty must be in [-2, 2]"),
        "logit_bias": _f(
            "logit_bias", OA, -100, 100, "400: values must lie in [-100, 100]", kind="bias", assumed=True
        ),
        "top_k": _unsupported("top_k", OA, _OA_UNKNOWN, assumed=True),
        "min_p": _unsupported("min_p", OA, _OA_UNKNOWN, assumed=True),
        "repetition_penalty": _unsupported("repetition_penalty", OA, _OA_UNKNOWN, assumed=True),
    },
    repetition_sign=Cited("none", OA),
    repetition_scope=Cited("none", OA),
    penalty_scope=Cited("output", OA_DETAILS),
    frequency_formula=Cited("openai", OA_DETAILS),
    top_k_ties=Cited("none", OA),
    top_p_boundary=Cited("lt", OA, assumed=True),
    zero_temperature=Cited("greedy", OA, assumed=True),
    min_temperature=Cited(None, OA, assumed=True),
    logprobs_mode=Cited("raw", OA, assumed=True),
    seeding=Cited("best effort (system_fingerprint); not reproducible from the seed alone", OA),
)


ENGINES: tuple[EngineSpec, ...] = (
    NEMO_REF,
    VLLM,
    HF,
    LLAMA_CPP,
    OLLAMA,
    SGLANG,
    TGI,
    MISTRAL_INFERENCE,
    OPENAI,
)
