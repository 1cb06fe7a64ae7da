"""Triton kernels (installed as ``nemo_ref.kernels``): attention (prefill, decode) and sampling."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any


@dataclass
class Launch:
    """One kernel launch, as the launchers make it: ``fn[grid](*args, **kwargs)``.

    Launchers build their launches first and run them second, so ``_compile`` can compile each
    kernel from exactly the arguments a real launch passes (and so Triton's own launch-time
    specialisation: ints equal to 1 become constexprs, divisibility-by-16 hints).
    """

    fn: Any  # a triton JITFunction
    grid: tuple[int, ...]
    args: tuple
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> None:
        self.fn[self.grid](*self.args, **self.kwargs)


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
