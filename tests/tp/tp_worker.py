"""One rank of the tensor-parallel checks in tests/tp/test_dist.py (started twice, with torchrun's env).

Rank 0 drives (TPDriver) and saves what it computed; rank 1 follows. Both layouts: logits without a
cache, and prefill + batched decode at mixed positions through a KV cache; greedy and seeded
generate() (n=2: the prompt's cache rows are copied) on one layout; then the test kills rank 1 while rank 0 is idle,
and rank 0 must exit with an error by itself.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from nemo_ref.sampling.params import SamplingParams
from nemo_ref.tp import init_from_env
from nemo_ref.tp_driver import TPDriver, exit_on_failure, follow
from nemo_ref.tp_load import load_model_tp

PROMPTS = [[5, 17, 300, 42, 9, 1000, 77], [8, 8, 1500, 3, 21, 600, 2047]]
BACKENDS = {"mistral": "sdpa", "hf": "triton"}  # both attention paths, one layout each
GENERATE = ("mistral",)  # generate() through the Triton interpreter would cost ~10 s more


def cases(model) -> dict[str, torch.Tensor]:
    """Logits of the same calls on any model (a TPDriver or a single-process Transformer)."""
    out = {"no_cache": model(torch.tensor(PROMPTS), 0)}
    cache = model.new_cache(4, 32)
    a, b = torch.tensor([PROMPTS[0][:5]]), torch.tensor([PROMPTS[1][:3]])
    out["prefill_a"] = model(a, 0, rows=torch.tensor([2]), cache=cache)
    model(b[:, :2], 0, rows=torch.tensor([0]), last_only=True, cache=cache)  # chunked prefill
    out["prefill_b"] = model(b[:, 2:], 2, rows=torch.tensor([0]), last_only=True, cache=cache)
    step = torch.tensor([[PROMPTS[0][5]], [PROMPTS[1][3]]])  # rows at positions 5 and 3
    out["decode_1"] = model(step, torch.tensor([5, 3]), rows=torch.tensor([2, 0]), cache=cache)
    step = torch.tensor([[PROMPTS[0][6]], [PROMPTS[1][4]]])
    out["decode_2"] = model(step, torch.tensor([6, 4]), rows=torch.tensor([2, 0]), cache=cache)
    return out


def generations(model, tokenizer) -> dict[str, list[list[int]]]:
    from nemo_ref.generate import generate

    greedy = generate(model, tokenizer, PROMPTS[0], SamplingParams(temperature=0, max_tokens=6))
    params = SamplingParams(temperature=1.0, seed=7, n=2, max_tokens=6)
    seeded = generate(model, tokenizer, PROMPTS[1], params)
    return {
        "greedy": [c.token_ids for c in greedy.choices],
        "seeded": [c.token_ids for c in seeded.choices],
        "engine": engine_run(model, tokenizer),
    }


def engine_run(model, tokenizer) -> list[list[int]]:
    """Three requests in one Engine, finishing at different steps: rows free out of order, and an
    engine that moves or clears rows must do it on every rank's cache."""
    from nemo_ref.engine import Engine, Request
    from nemo_ref.generate import make_sequences

    engine = Engine(model, max_batch=4, max_len=40, sampler="torch")
    requests = []
    for i, (max_tokens, n) in enumerate(((2, 1), (9, 1), (5, 2))):
        params = SamplingParams(temperature=0.8, seed=11 + i, n=n, max_tokens=max_tokens)
        _, seqs = make_sequences(tokenizer, PROMPTS[i % 2][: 3 + i], params, 40)
        requests.append(engine.submit(Request(seqs)))
    while not all(r.finished for r in requests):
        engine.step()
    return [list(s.output) for r in requests for s in r.sequences]


def main() -> None:
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    init_from_env("cpu")
    rank = torch.distributed.get_rank()
    (out / f"pid{rank}").write_text(str(os.getpid()))
    results: dict = {}
    for layout, backend in BACKENDS.items():
        model = load_model_tp(root / layout, dtype=torch.float32, attn_backend=backend, progress=False)
        results[f"{layout}/bytes_read"] = model.tp_bytes_read
        if rank != 0:
            follow(model)
            continue
        from nemo_ref.tokenizer import load_tokenizer

        driver = TPDriver(model)
        for name, logits in cases(driver).items():
            results[f"{layout}/{name}"] = logits
        try:  # a bad call fails on every rank alike, before any collective; the group goes on
            driver(torch.tensor(PROMPTS), 250)
        except ValueError as e:
            results[f"{layout}/bad_call"] = str(e)
        if layout in GENERATE:
            for name, tokens in generations(driver, load_tokenizer()).items():
                results[f"{layout}/{name}"] = tokens
        driver.shutdown()
    torch.save(results, out / f"rank{rank}.pt")
    if rank != 0:
        time.sleep(120)  # the test kills this rank
        os._exit(3)
    # Rank 1 is killed while rank 0 sits idle (a server between requests): the heartbeat must find
    # out, and the command line's handler must end rank 0 with an error.
    driver = TPDriver(model, on_failure=exit_on_failure, heartbeat_s=0.5)
    (out / "ready").write_text("")
    time.sleep(60)
    os._exit(4)  # not reached when the heartbeat works


if __name__ == "__main__":
    main()
