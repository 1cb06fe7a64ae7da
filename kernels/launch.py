"""One kernel launch as the launchers build it (so `_compile` can compile exactly what runs)."""

from __future__ import annotations

from dataclasses import dataclass, field
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
