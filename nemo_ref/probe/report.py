"""The probe's output: the report the tests fill in, its JSON (docs/probe.md) and a table on the
terminal."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class Report:
    """What the tests found: one property per test (observed, matching engines, evidence), the
    ranking and verdict of the likelihood test, and what could not be tested, and why."""

    endpoint: str
    model: str
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)
    ranking: list[dict[str, Any]] = field(default_factory=list)
    verdict: str = "inconclusive"
    answer: list[str] = field(default_factory=list)
    not_testable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    requests_by_test: dict[str, int] = field(default_factory=dict)
    requests: int = 0  # all requests sent, retries included (set when the run ends)

    def prop(self, name: str, observed: Any, matches: list[str], evidence: Any) -> None:
        self.properties[name] = {"observed": observed, "matches": matches, "evidence": evidence}


RANDOM_WEIGHTS_NOTE = (
    "the endpoint serves RANDOM weights (nemo-ref): these conclusions are about its sampler, "
    "on a model whose text is noise"
)


def as_json(report: Report, endpoint: Any) -> dict[str, Any]:
    return {
        "endpoint": report.endpoint,
        "model": report.model,
        "requests": endpoint.requests,
        "sampled_tokens": endpoint.sampled_tokens,
        "retries": endpoint.retries,
        "verdict": report.verdict,
        "answer": report.answer,
        "properties": report.properties,
        "ranking": report.ranking,
        "not_testable": report.not_testable,
        "notes": report.notes,
        "requests_by_test": report.requests_by_test,
    }


def _short(value: Any, width: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def print_table(data: dict[str, Any], out: TextIO = sys.stdout) -> None:
    """One row per property (observed, matching engines, evidence, requests), then the ranking."""
    w = (18, 46, 34, 8)
    line = f"{'property':<{w[0]}} {'observed':<{w[1]}} {'matches':<{w[2]}} {'requests':>{w[3]}}"
    print(f"nemo-ref probe: {data['endpoint']} (model {data['model']})", file=out)
    print(line, file=out)
    print("-" * len(line), file=out)
    per_test = data.get("requests_by_test", {})
    for name, prop in data["properties"].items():
        req = per_test.get(name if name != "order_truncation" else "order", "")
        observed = prop["observed"]
        detail = isinstance(observed, dict) and name != "anchor"
        head = f"{len(observed)} fields, below" if detail else observed
        print(
            f"{name:<{w[0]}} {_short(head, w[1]):<{w[1]}} "
            f"{_short(', '.join(prop['matches']) or '-', w[2]):<{w[2]}} {req!s:>{w[3]}}",
            file=out,
        )
        if detail:  # one line per field: these are the answers people look for
            for key, value in observed.items():
                print(f"{'':<{w[0]}}   {key}: {_short(value, 100)}", file=out)
        print(f"{'':<{w[0]}}   evidence: {_short(prop['evidence'], 110)}", file=out)
    print(file=out)
    if data["ranking"]:
        print("ranking (log-likelihood over the draws and the accept/reject answers):", file=out)
        best = data["ranking"][0]["log_likelihood"]
        for i, r in enumerate(data["ranking"]):
            tie = f"  tied with {', '.join(r['tied_with'])}" if r["tied_with"] else ""
            print(
                f"  {i + 1}. {r['engine']:<18} LL {r['log_likelihood']:>10.2f}  margin {best - r['log_likelihood']:>8.2f}"
                f"  impossible draws {r['impossible_draws']:>3}  fit p {r['p_value']:.3g}{tie}",
                file=out,
            )
    answer = " = ".join(data["answer"]) if data["answer"] else "-"
    print(f"\nverdict: {data['verdict']} ({answer})", file=out)
    print(f"requests: {data['requests']}, sampled tokens: {data['sampled_tokens']}", file=out)
    for what, why in data["not_testable"].items():
        print(f"not testable: {what}: {why}", file=out)
    for note in data["notes"]:
        print(f"note: {note}", file=out)
    if data["retries"]:
        print(f"retries: {len(data['retries'])} ({'; '.join(data['retries'][:5])})", file=out)
