"""nemo_ref: a readable reference implementation of Mistral Nemo 12B and its sampler.

The public surface (README.md "Library") is re-exported here lazily, so that ``import nemo_ref`` needs only
torch, safetensors and numpy, and the tokenizer, server and structured-output dependencies load only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import ModelArgs

# Bound eagerly: a lazy lookup of `generate` would import the submodule nemo_ref.generate, and Python
# would then bind the module over the function of the same name.
from .generate import Completion, generate, stream
from .model import Transformer
from .sampling.params import SamplingParams

__all__ = [
    "Completion",
    "ModelArgs",
    "SamplingParams",
    "Transformer",
    "generate",
    "load_model",
    "load_tokenizer",
    "save_checkpoint",
    "stream",
]

_LAZY = {
    "load_model": "nemo_ref.checkpoint",
    "save_checkpoint": "nemo_ref.checkpoint",
    "load_tokenizer": "nemo_ref.tokenizer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nemo_ref' has no attribute {name!r}")
