"""Triton kernels (installed as ``nemo_ref.kernels``): attention (prefill, decode) and sampling."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from .launch import Launch

__all__ = ["Launch", "interpreted"]


def interpreted(name: str) -> ModuleType:
    """``nemo_ref.kernels.<name>`` running in Triton's interpreter, for CPU tensors (tests, notebooks).

    Sets ``TRITON_INTERPRET=1`` for this process (``@triton.jit`` reads it when a module is
    imported), and reloads the module if it had been imported in compiled mode.
    """
    os.environ["TRITON_INTERPRET"] = "1"
    module = importlib.import_module(f"{__name__}.{name}")
    from triton.runtime.jit import JITFunction

    if any(isinstance(v, JITFunction) for v in vars(module).values()):
        module = importlib.reload(module)
    return module
