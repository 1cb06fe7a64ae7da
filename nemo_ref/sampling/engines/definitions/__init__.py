"""The nine engines, each as its choices over the shared steps, each choice with its source.

One module per engine (llama.cpp and Ollama share one: Ollama runs llama-server). They are the
data behind docs/engines.md, one `EngineSpec` each, nothing else.

Sources are files of the engine's own repository at the version in `version` (llama.cpp: the copy
vendored by llama-cpp-python 0.3.36). `Cited(..., assumed=True)` marks what the source (or, for
OpenAI, the API reference) leaves open: the emulation's assumption, stated in docs/engines.md.
"""

from __future__ import annotations

from ..spec import EngineSpec
from .hf import HF
from .llama_cpp import LLAMA_CPP, OLLAMA
from .mistral_inference import MISTRAL_INFERENCE
from .nemo_ref import NEMO_REF
from .openai import OPENAI
from .sglang import SGLANG
from .tgi import TGI
from .vllm import VLLM

# The order of engines.names() and of the docs' columns: nemo_ref first.
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

__all__ = ["ENGINES"]
