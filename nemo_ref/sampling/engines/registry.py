"""The engines by name: `names()` and `get(name)`, one `Engine` per definition (definitions/)."""

from __future__ import annotations

from .definitions import ENGINES
from .engine import Engine

_BY_NAME: dict[str, Engine] = {spec.name: Engine(spec) for spec in ENGINES}


def names() -> list[str]:
    """The engines, nemo_ref first."""
    return list(_BY_NAME)


def get(name: str) -> Engine:
    """The engine called `name` (see names()); an unknown name is a KeyError listing the valid ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown engine {name!r}; valid: {', '.join(_BY_NAME)}") from None


__all__ = ["get", "names"]
