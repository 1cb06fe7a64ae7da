"""Cost of each engine emulation's `probabilities` per row at Nemo's vocabulary (131072), on the CPU.

Compares, in one run on one machine, for several requests:
- every engine of nemo_ref.sampling.engines: `engine.probabilities(logits, request, prompt, output)`,
  one row of float64 numpy logits;
- baselines: a plain numpy softmax of the row (the least any of them can do), and nemo_ref's batched
  torch sampler's `distribution_batch` for the same row and the equivalent SamplingParams.

Requests: each engine's defaults (only temperature 1 given), top_k + top_p, and the three penalties over a 1024-token
history (824 prompt + 200 output tokens). Target: <= 20 ms per row for every emulation.
Writes benchmarks/engines-cpu.md and benchmarks/engines-cpu.json.
Usage: python scripts/bench_engines.py [--repeat 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from machine_info import machine
from timing import timed

from nemo_ref.sampling import ParamError, engines
from nemo_ref.sampling.batched import SampleRow, distribution_batch
from nemo_ref.sampling.params import SamplingParams

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 131072
PROMPT_LEN, OUTPUT_LEN = 824, 200  # a 1024-token history
TARGET_MS = 20.0
REQUESTS: dict[str, tuple[dict, SamplingParams]] = {
    # mistral-inference requires a temperature; every other field takes each engine's default
    "defaults": ({"temperature": 1.0}, SamplingParams()),
    "top_k + top_p": (
        {"temperature": 0.8, "top_k": 50, "top_p": 0.9},
        SamplingParams(temperature=0.8, top_k=50, top_p=0.9),
    ),
    "penalties, 1k history": (
        {
            "temperature": 0.8,
            "top_p": 0.9,
            "repetition_penalty": 1.1,
            "presence_penalty": 0.3,
            "frequency_penalty": 0.2,
        },
        SamplingParams(
            temperature=0.8, top_p=0.9, repetition_penalty=1.1, presence_penalty=0.3, frequency_penalty=0.2
        ),
    ),
}


def workload(seed: int = 0) -> tuple[np.ndarray, list[int], list[int]]:
    rng = np.random.default_rng(seed)
    # LLM-like logits: a few strong candidates over a long tail (as scripts/bench_sampler.py).
    z = rng.standard_normal(VOCAB) * 2.5
    z[:64] += 6 * rng.random(64)
    prompt = rng.integers(0, VOCAB, PROMPT_LEN).tolist()
    output = rng.integers(0, VOCAB, OUTPUT_LEN).tolist()
    return z, prompt, output


def numpy_softmax(z: np.ndarray) -> np.ndarray:
    w = np.exp(z - z.max())
    return w / w.sum()


def bench(setting: str, repeat: int) -> dict:
    request, params = REQUESTS[setting]
    z, prompt, output = workload()
    row = [SampleRow(params, seed=7, choice=0, step=OUTPUT_LEN, prompt_tokens=prompt, output_tokens=output)]
    z_torch = torch.from_numpy(z).float()[None]  # [1, V], float32 as a model emits it
    fns: dict[str, Callable[[], object]] = {
        "baseline: numpy softmax": lambda: numpy_softmax(z),
        "baseline: nemo_ref batched torch": lambda: distribution_batch(z_torch, row),
    }
    rejected: dict[str, list[str]] = {}  # engine -> the errors of the fields left out to measure it
    for name in engines.names():
        engine = engines.get(name)
        mine = dict(request)
        while True:  # an engine that rejects a field is measured without it (and the table says so)
            try:
                engine.probabilities(z, mine, prompt, output)
                break
            except ParamError as e:
                if e.param not in mine:
                    raise
                rejected.setdefault(name, []).append(f"{e.param}: {e.message}")
                del mine[e.param]
        fns[name] = lambda engine=engine, mine=mine: engine.probabilities(z, mine, prompt, output)
    results = timed(fns, repeat, warmup=2)
    return {"setting": setting, "request": request, "timings": results, "rejected": rejected}


def write_markdown(path: Path, meta: dict, results: list[dict]) -> None:
    names = list(dict.fromkeys(n for r in results for n in r["timings"]))
    lines = [
        "# Engine emulations: `probabilities` per row, CPU",
        "",
        "Written by `scripts/bench_engines.py` (rerun it to refresh). One row of float64 numpy logits, "
        f"vocabulary {VOCAB}; history {PROMPT_LEN} prompt + {OUTPUT_LEN} output tokens. Requests "
        "(OpenAI fields; unset fields take each engine's defaults): "
        + "; ".join(f"**{r['setting']}** `{json.dumps(r['request'])}`" for r in results)
        + ".",
        "",
        f"Machine: {meta['cpu']}, {meta['cores']} cores visible, numpy {meta['numpy']}, torch "
        f"{meta['torch']} using {meta['threads']} thread(s), Python {meta['python']}. The machine is "
        "shared with other work (load average "
        f"{meta['load_average']} at the start), so timings carry noise; every column was measured in "
        "the same run, the implementations interleaved.",
        "",
        f"Median ms per row (minimum in brackets); target <= {TARGET_MS:g} ms for every emulation. On a "
        "shared machine the minimum is the closer estimate of the unloaded cost: the median also holds the "
        "time a call waited for a core.",
        "",
        "| implementation | " + " | ".join(r["setting"] for r in results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    for name in names:
        cells = []
        for r in results:
            t = r["timings"][name]
            flag = "" if name.startswith("baseline") or t["median_ms"] <= TARGET_MS else " (over)"
            left_out = [m.split(":")[0] for m in r["rejected"].get(name, [])]
            flag += f" without {', '.join(left_out)}" if left_out else ""
            cells.append(f"{t['median_ms']:.2f} ({t['min_ms']:.2f}){flag}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    emulated = [
        t["median_ms"] for r in results for n, t in r["timings"].items() if not n.startswith("baseline")
    ]
    worst = max(emulated)
    lines += [
        "",
        f"Slowest emulation: {worst:.2f} ms per row (median): target **{'met' if worst <= TARGET_MS else 'NOT met'}**.",
        "",
        "Reading it: the numpy softmax is one exp and one sum over the vocabulary in float64, the floor "
        "for anything that returns a full distribution. The batched torch sampler is what nemo_ref's "
        "engine runs per step (float32 logits converted to float64 inside, batch of one; it also converts "
        "the row's Python history lists to tensors on every call, which is most of its penalties column). "
        "An emulation's cost over the softmax is its penalties (touching only the history's ids), its "
        "truncations (none sorts the whole vocabulary: nemo_ref/sampling/engines/steps.py) and the "
        "softmaxes between its steps.",
    ]
    if any(r["rejected"] for r in results):
        lines += [
            "",
            '"without X": the engine rejects field X (its answer below, as its server gives it), so it '
            "was measured on the same request without X.",
            "",
        ]
        for r in results:
            for name, messages in r["rejected"].items():
                lines += [f"- {r['setting']}, {name}: {m}" for m in messages]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "engines-cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    meta = {
        **machine(numpy=np.__version__),
        "vocab": VOCAB,
        "history": {"prompt": PROMPT_LEN, "output": OUTPUT_LEN},
        "engines": {n: engines.get(n).version for n in engines.names()},
    }
    results = [bench(setting, args.repeat) for setting in REQUESTS]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    write_markdown(args.out.with_suffix(".md"), meta, results)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
