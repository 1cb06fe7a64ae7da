"""What the probe's tests share: the endpoint, the engines, the anchor, what the endpoint has
shown so far (its `n`, whether it takes a seed, its accept/reject answers) and the report.

The tests (checks.py, order.py with penalties.py, generation.py) are functions of one `Session`;
run.py builds it once the anchor is found and runs them in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..sampling.params import ParamError
from . import likelihood, world
from .client import Endpoint
from .report import Report
from .world import Context, Prediction

RESERVE = 14  # requests kept for the seed and stop tests


def accepts(e: Any, fields: dict[str, Any]) -> bool:
    """Whether engine `e` accepts a request with `fields` (its own resolve() decides)."""
    try:
        e.resolve(fields)
        return True
    except ParamError:
        return False


@dataclass
class Session:
    endpoint: Endpoint
    engines: list[Any]  # the emulations (nemo_ref.sampling.engines.Engine) compared
    report: Report
    context: Context  # the anchor
    k: int  # top_logprobs the endpoint gives (20, else 5, else 2)
    only: tuple[str, ...]
    progress: Callable[[str, int, int], None] | None = None
    n: int = 1  # draws per request: the largest `n` the endpoint honours (capabilities finds it)
    seed_ok: bool = True  # the endpoint accepts `seed` (capabilities finds out)
    evidence_runs: list[likelihood.DesignRun] = field(default_factory=list)  # accept/reject answers

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.engines]

    def record_validation(self, fields: dict[str, Any], status: int) -> None:
        """An accept/reject answer as evidence: each engine predicts it through its resolve()."""
        if status not in (200, 400, 422):
            return
        preds = {
            e.name: Prediction(
                [world.REJECT] * len(world.OFFSETS)
                if not accepts(e, fields)
                else [np.ones(1)] * len(world.OFFSETS),
                status_known=world.knows_fields(e, fields),
            )
            for e in self.engines
        }
        self.evidence_runs.append(
            likelihood.DesignRun(
                fields, preds, np.zeros(1, dtype=np.int64), 200 if status == 200 else 400, evidence=True
            )
        )

    def matches_status(self, fields: dict[str, Any], status: int) -> list[str]:
        """The engines whose accept/reject of `fields` agrees with `status` (or that lack a field)."""
        return [
            e.name
            for e in self.engines
            if not world.knows_fields(e, fields) or accepts(e, fields) == (status == 200)
        ]


__all__ = ["RESERVE", "Session", "accepts"]
