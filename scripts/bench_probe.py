"""The probe's proof: serve the embedded model under each --semantics and probe every endpoint.

    python scripts/bench_probe.py [--out benchmarks/probe-confusion] [--budget 200]

Every server runs in this process (uvicorn in a thread, 127.0.0.1, one Engine each over the same
model); the probe talks to them over HTTP only. The result is a confusion matrix (true engine x the
probe's answer), the requests and sampled tokens each endpoint cost, and a check that a
deliberately inconsistent engine (llama.cpp's truncation order with vLLM's penalty scopes) comes
back as "no engine fits". tests/probe/test_proof.py runs the same function.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


def serve_in_thread(
    model: Any, tokenizer: Any, semantics: str, *, max_batch: int = 32, model_name: str = "m"
):
    """Start an app with ``semantics`` on a free loopback port; returns (base_url, stop)."""
    import uvicorn

    from nemo_ref.server.app import create_app

    app = create_app(
        model, tokenizer, model_name=model_name, max_batch=max_batch, max_model_len=512, semantics=semantics
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the {semantics} server did not start")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=5)

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


TRUE_ENGINES = ("nemo_ref", "vllm", "hf", "llama.cpp", "ollama", "sglang", "tgi")
MIX = "mix:llama.cpp-order+vllm-penalties"


def inconsistent_engine():
    """llama.cpp's chain (order, defaults, validation) with vLLM's penalty scopes (repetition over
    prompt + output, presence/frequency over the output only): no real engine does this."""
    from dataclasses import replace

    from nemo_ref.sampling import engines
    from nemo_ref.sampling.engines import Cited, Engine

    base = engines.get("llama.cpp").spec
    vllm = engines.get("vllm").spec
    spec = replace(
        base,
        name=MIX,
        version="test-only mix",
        repetition_scope=Cited(vllm.repetition_scope.value, "mix"),
        penalty_scope=Cited(vllm.penalty_scope.value, "mix"),
    )
    return Engine(spec)


def run(
    budget: int = 400,
    semantics: tuple[str, ...] = (*TRUE_ENGINES, MIX),
    *,
    only: tuple[str, ...] | None = None,
    workers: int = 2,
    progress=None,
) -> dict[str, Any]:
    """Probe the embedded model served under each semantics ({semantics: probe JSON}); ``workers``
    endpoints are probed at a time (each server has its own engine thread)."""
    from concurrent.futures import ThreadPoolExecutor

    from nemo_ref.demo import embedded_model
    from nemo_ref.probe import TESTS, probe
    from nemo_ref.server.semantics import register_semantics
    from nemo_ref.tokenizer import load_tokenizer

    register_semantics(inconsistent_engine())
    model = embedded_model("nemo-tiny", seed=0)
    tok = load_tokenizer()

    def one(name: str) -> dict[str, Any]:
        url, stop = serve_in_thread(model, tok, name)
        t0 = time.monotonic()
        try:
            data = probe(url, "m", budget=budget, only=only or TESTS)
        finally:
            stop()
        data["wall_s"] = round(time.monotonic() - t0, 1)
        if progress is not None:
            progress(name, data)
        return data

    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(semantics, pool.map(one, semantics), strict=True))


def answer_of(data: dict[str, Any]) -> str:
    if data["verdict"] == "no engine fits":
        return "no engine fits"
    if data["verdict"] == "identified":
        return " = ".join(data["answer"])
    return f"inconclusive ({' = '.join(data['answer'])})"


def markdown(results: dict[str, Any], machine: str, total_s: float | None = None) -> str:
    lines = [
        "# The probe against nemo-ref serve --semantics ENGINE (confusion matrix)",
        "",
        "Produced by `python scripts/bench_probe.py` (also run by tests/probe/test_proof.py). Every",
        "endpoint is the embedded nemo-tiny model with RANDOM weights served in-process under one",
        "`--semantics`; the probe talks to it over HTTP only. 'answer' is the probe's verdict: the",
        "identified engine and the engines it cannot be told apart from on this endpoint (a tie), or",
        "'no engine fits' (every hypothesis rejected).",
        "",
        f"Machine: {machine}."
        + (f" Whole run: {total_s:.0f} s, two endpoints probed at a time." if total_s else ""),
        "",
        "| true semantics | probe's answer | verdict | requests | sampled tokens | wall s | best fit p |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, d in results.items():
        p = d["ranking"][0]["p_value"] if d["ranking"] else "-"
        lines.append(
            f"| {name} | {answer_of(d)} | {d['verdict']} | {d['requests']} | {d['sampled_tokens']} | {d['wall_s']} | {p} |"
        )
    # The matrix proper: true semantics x the engines in the probe's answer (x = named; a tie
    # names several in one row), and the two answers that name none.
    engines = [*TRUE_ENGINES, *sorted({e for d in results.values() for e in d["answer"]} - set(TRUE_ENGINES))]
    cols = [*engines, "no engine fits", "inconclusive"]
    lines += ["", "| true \\ answer | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    wrong = 0
    for name, d in results.items():
        named = set(d["answer"]) if d["verdict"] == "identified" else set()
        cells = ["x" if c in named else "" for c in engines]
        cells += [
            "x" if d["verdict"] == "no engine fits" else "",
            "x" if d["verdict"] == "inconclusive" else "",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if d["verdict"] == "identified" and name not in named:
            wrong += 1
    tokens = max(d["sampled_tokens"] for d in results.values())
    lines += [
        "",
        f"False-confident answers (identified, but not the true engine): {wrong}. Most sampled tokens"
        f" for one endpoint: {tokens} (target: identify within 3000). The mix (llama.cpp's chain with"
        " vLLM's penalty scopes) is a test-only emulation: its order fits llama.cpp and its penalties"
        " fit vLLM, so every engine is rejected.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    import argparse
    import json
    import os
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine_info import cpu_model

    ap = argparse.ArgumentParser(description="confusion matrix of nemo-ref probe over --semantics")
    ap.add_argument("--out", default="benchmarks/probe-confusion")
    ap.add_argument("--budget", type=int, default=400)
    ap.add_argument("--rewrite", action="store_true", help="rewrite the .md from the existing .json")
    args = ap.parse_args()
    if args.rewrite:
        saved = json.loads(Path(args.out + ".json").read_text())
        Path(args.out + ".md").write_text(markdown(saved["results"], saved["machine"], saved.get("total_s")))
        return

    def show(name, data):
        print(f"{name}: {answer_of(data)} ({data['requests']} requests, {data['wall_s']} s)", file=sys.stderr)

    t0 = time.monotonic()
    results = run(args.budget, progress=show)
    total = round(time.monotonic() - t0, 1)  # model and servers included
    machine = f"{cpu_model()}, {os.cpu_count()} CPUs (shared with other jobs)"
    saved = {"machine": machine, "total_s": total, "results": results}
    Path(args.out + ".json").write_text(json.dumps(saved, indent=1, default=str))
    Path(args.out + ".md").write_text(markdown(results, machine, total))
    print(markdown(results, machine, total))


if __name__ == "__main__":
    main()
