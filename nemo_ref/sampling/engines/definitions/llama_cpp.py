"""llama.cpp's llama-server and Ollama (which runs llama-server): one set of choices, two front ends.

llama.cpp's files are those of the copy vendored by llama-cpp-python 0.3.36; Ollama's of its
repository, where `llama.cpp ` prefixes the files of the llama-server it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..fields import Field, ignored, in_range, use
from ..mt19937 import uniform_doubles
from ..spec import Cited, EngineSpec

INT32_MAX = 2**31 - 1


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
        "temperature": use("temperature", source, 0, violation="clamp", answer="clamped to >= 0"),
        "top_k": use("top_k", source, 0, INT32_MAX, kind="int", violation="clamp", answer="clamped to >= 0"),
        "top_p": in_range("top_p", source, "[0, 1]", "clamped to {interval}", violation="clamp"),
        "min_p": in_range("min_p", source, "[0, 1]", "clamped to {interval}", violation="clamp"),
        "repeat_penalty": use(
            "repetition_penalty",
            L_SAMPLING,
            0,
            answer="penalty_repeat must be finite and greater than 0",
            lo_open=True,
        ),
        "repeat_last_n": use(
            "repeat_last_n",
            source,
            0,
            INT32_MAX,
            kind="int",
            answer="Value must be between 0 <= value <= 2147483647",
        ),
        "repetition_penalty": ignored(
            "repetition_penalty", source, "not a llama-server field (its name is repeat_penalty): ignored"
        ),
        "presence_penalty": use("presence_penalty", source),
        "frequency_penalty": use("frequency_penalty", source),
        "logit_bias": use("logit_bias", source, kind="bias", answer="no range; false bans", false_bans=True),
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
        "temperature": use(
            "temperature", O_OPENAI, 0, violation="clamp", answer="clamped to >= 0 by llama-server"
        ),
        "top_p": in_range(
            "top_p", O_OPENAI, "[0, 1]", "clamped to {interval} by llama-server", violation="clamp"
        ),
        "presence_penalty": use("presence_penalty", O_OPENAI),
        "frequency_penalty": use("frequency_penalty", O_OPENAI),
        "top_k": ignored("top_k", O_OPENAI, _OLLAMA_IGNORES),
        "min_p": ignored("min_p", O_OPENAI, _OLLAMA_IGNORES),
        "repetition_penalty": ignored("repetition_penalty", O_OPENAI, _OLLAMA_IGNORES),
        "logit_bias": ignored("logit_bias", O_OPENAI, _OLLAMA_IGNORES),
    },
    notes=(
        "The Go sampler Ollama used from 2025 to mid 2026 ignored every penalty (ollama/ollama#15783).",
        "A Modelfile's PARAMETER lines replace the defaults.",
    ),
    **_llama_choices("llama.cpp "),
)
