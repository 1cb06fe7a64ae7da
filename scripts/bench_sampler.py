"""Per-step sampler cost at Nemo's vocabulary (131072), batch 1 and 8, every knob on.

Compares, in one run on one machine:
- nemo_ref's batched torch sampler (nemo_ref.sampling.sampler.TorchSampler, float64, as the engine
  calls it: the step's metadata built from the rows, then the pipeline);
- transformers' logits-processor chain (bias, repetition, OpenAI presence/frequency, temperature,
  top_k, top_p, min_p; transformers' order) + softmax + torch.multinomial, float32 as HF runs it;
  the chain is nemo_ref.sampling.transformers_chain's, the oracle of the parity tests;
- the pure-Python reference (nemo_ref.sampling.reference.sample), per row, for scale.

Writes benchmarks/sampler-cpu.md and benchmarks/sampler-cpu.json.
Usage: python scripts/bench_sampler.py [--repeat 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
import transformers
from machine_info import machine  # scripts/ is on sys.path when a script runs
from timing import timed

from nemo_ref.sampling import reference
from nemo_ref.sampling.metadata import SampleRow
from nemo_ref.sampling.params import SamplingParams
from nemo_ref.sampling.sampler import TorchSampler
from nemo_ref.sampling.transformers_chain import TRANSFORMERS_ORDER, processors

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 131072
PROMPT_LEN, OUTPUT_LEN = 1000, 200
EVERY_KNOB = SamplingParams(
    temperature=0.8, top_p=0.9, top_k=50, min_p=0.05, repetition_penalty=1.1,
    presence_penalty=0.3, frequency_penalty=0.2, logit_bias={11: -100, 1000: 5.0, 1234: 2.0},
)  # fmt: skip


def workload(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # LLM-like logits: a few strong candidates over a long tail.
    logits = torch.randn(batch, VOCAB, generator=g) * 2.5
    logits[:, :64] += 6 * torch.rand(batch, 64, generator=g)
    prompt = torch.randint(0, VOCAB, (batch, PROMPT_LEN), generator=g)
    output = torch.randint(0, VOCAB, (batch, OUTPUT_LEN), generator=g)
    return logits, prompt, output


def bench(batch: int, repeat: int, reference_repeat: int) -> dict[str, object]:
    logits, prompt, output = workload(batch)
    rows = [
        SampleRow(EVERY_KNOB, seed=7, choice=b, step=OUTPUT_LEN, prompt_tokens=prompt[b].tolist(),
                  output_tokens=output[b].tolist())
        for b in range(batch)
    ]  # fmt: skip
    # the histories as the generation loop holds them: Python lists, converted every step
    input_ids = torch.cat([prompt, output], dim=1)
    chain = processors(EVERY_KNOB, output, TRANSFORMERS_ORDER)  # every knob on: all seven

    def hf_step() -> torch.Tensor:
        scores = logits.clone()
        for processor in chain:
            scores = processor(input_ids, scores)
        return torch.multinomial(torch.softmax(scores, -1), 1)

    plain_rows = [SampleRow(SamplingParams(), 7, b, 0, [], []) for b in range(batch)]
    with_logprobs = dataclasses.replace(EVERY_KNOB, logprobs=True, top_logprobs=5)
    logprob_rows = [dataclasses.replace(row, params=with_logprobs) for row in rows]
    sampler = TorchSampler()  # what the engine calls off CUDA
    t = timed(
        {
            "nemo_ref_batched": lambda: sampler(logits, rows),
            "transformers_chain_multinomial": hf_step,
            "nemo_ref_batched_all_knobs_off": lambda: sampler(logits, plain_rows),
            "nemo_ref_batched_with_raw_logprobs": lambda: sampler(logits, logprob_rows),
        },
        repeat,
        warmup=3,
    )

    def reference_step() -> None:
        for b, row in enumerate(rows):
            reference.sample(logits[b], EVERY_KNOB, row.prompt_tokens, row.output_tokens, 0, b, 7)

    t.update(timed({"nemo_ref_reference_python": reference_step}, reference_repeat, warmup=1))
    ours, theirs = t["nemo_ref_batched"], t["transformers_chain_multinomial"]
    return {
        "batch": batch,
        **t,
        "speedup_vs_transformers": theirs["median_ms"] / ours["median_ms"],
        "speedup_vs_transformers_min": theirs["min_ms"] / ours["min_ms"],
    }


def write_markdown(path: Path, meta: dict, results: list[dict]) -> None:
    lines = [
        "# Sampler cost per decode step, CPU",
        "",
        "Written by `scripts/bench_sampler.py` (rerun it to refresh). Vocabulary "
        f"{VOCAB}, prompt {PROMPT_LEN} + output {OUTPUT_LEN} tokens of history per row, every "
        "knob on: `" + meta["params"] + "`.",
        "",
        f"Machine: {meta['cpu']}, {meta['cores']} cores visible, torch {meta['torch']} using "
        f"{meta['threads']} thread(s), transformers {meta['transformers']}, Python {meta['python']}. "
        "The machine is shared with other work, so timings carry noise; the comparison is made in "
        "one run, back to back.",
        "",
        "| batch | nemo_ref batched (ms) | transformers chain + multinomial (ms) | speed-up "
        "(medians; minima) | pure-Python reference (ms) | batched, all knobs off (ms) | "
        "batched, every knob + raw logprobs, top 5 (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['batch']} | {r['nemo_ref_batched']['median_ms']:.2f} "
            f"| {r['transformers_chain_multinomial']['median_ms']:.2f} "
            f"| {r['speedup_vs_transformers']:.1f}x; {r['speedup_vs_transformers_min']:.1f}x "
            f"| {r['nemo_ref_reference_python']['median_ms']:.0f} "
            f"| {r['nemo_ref_batched_all_knobs_off']['median_ms']:.2f} "
            f"| {r['nemo_ref_batched_with_raw_logprobs']['median_ms']:.2f} |"
        )
    met = all(r["speedup_vs_transformers"] >= 3 for r in results)
    by_batch = {r["batch"]: r for r in results}

    def ratio(key: str) -> float:
        return by_batch[max(by_batch)][key]["median_ms"] / by_batch[min(by_batch)][key]["median_ms"]

    lines += [
        "",
        "Medians over the repetitions, which interleave the samplers so that they share the "
        "machine's load (`.json` has minima too). Target: batched >= 3x faster than "
        f"the transformers chain at every batch size: **{'met' if met else 'NOT met'}**.",
        "",
        "What differs: the transformers chain sorts the whole vocabulary for top_p (and computes "
        "full softmaxes for min_p and the draw) in float32. nemo_ref works in float64 (the "
        "conversion is one of its few dense passes), finds the k-th value with a block-wise "
        "`torch.topk`, sorts and walks only the candidates for top_p, touches only the history's "
        "ids for the penalties, and draws from the packed survivors. Neither computes logprobs "
        "in the comparison (`logprobs=False`; the last column shows their cost). The pure-Python reference is the readable oracle, not meant for "
        "serving; its cost is per step for the whole batch (one row after another).",
        "",
        "Batch 8 over batch 1 (per step): every knob on "
        f"{ratio('nemo_ref_batched'):.1f}x, all knobs off {ratio('nemo_ref_batched_all_knobs_off'):.1f}x, "
        f"transformers {ratio('transformers_chain_multinomial'):.1f}x. With every knob off the "
        "sampler draws over the whole vocabulary: a float64 exp and cumulative sum per row. With "
        "every knob on, the dense work is the float64 copy, the max, S5 and a block maximum; the "
        "rest runs on a few dozen packed candidates. Raw logprobs add a full-vocabulary "
        "normaliser per row that asks for them. The machine's load average was "
        f"{meta['load_average']} at the start of this run.",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--reference-repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "sampler-cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    meta = {**machine(transformers=transformers.__version__), "vocab": VOCAB, "params": repr(EVERY_KNOB)}
    results = []
    for batch in (1, 8):
        results.append(bench(batch, args.repeat, args.reference_repeat))
        print(json.dumps(results[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    write_markdown(args.out.with_suffix(".md"), meta, results)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
