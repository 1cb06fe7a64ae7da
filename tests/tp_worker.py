"""One rank of the tensor-parallel checks in tests/test_tp_dist.py (started twice, with torchrun's env).

Rank 0 drives (TPDriver) and saves what it computed; rank 1 follows. Both layouts: logits without a
cache, and prefill + batched decode at mixed positions through a KV cache; greedy and seeded
generate() (n=2: the prompt's cache rows are copied); then rank 0 waits for the test to kill rank 1
and records what the next call does.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from nemo_ref.sampling.params import SamplingParams
from nemo_ref.tp import TPError, init_from_env
from nemo_ref.tp_driver import TPDriver, follow
from nemo_ref.tp_load import load_model_tp

PROMPTS = [[5, 17, 300, 42, 9, 1000, 77], [8, 8, 1500, 3, 21, 600, 2047]]
BACKENDS = {"mistral": "sdpa", "hf": "triton"}  # both attention paths, one layout each


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
    seeded = generate(
        model, tokenizer, PROMPTS[1], SamplingParams(temperature=1.0, seed=7, n=2, max_tokens=6)
    )
    return {"greedy": [c.token_ids for c in greedy.choices], "seeded": [c.token_ids for c in seeded.choices]}


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
        for name, tokens in generations(driver, load_tokenizer()).items():
            results[f"{layout}/{name}"] = tokens
        driver.shutdown()
    torch.save(results, out / f"rank{rank}.pt")
    if rank != 0:
        time.sleep(120)  # the test kills this rank
        os._exit(3)
    # Rank 1 is killed while rank 0 drives: the next call must fail at once, naming the cause.
    driver = TPDriver(model)
    (out / "ready").write_text("")
    deadline = time.monotonic() + 60
    while not (out / "killed").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    t0 = time.monotonic()
    errors = []
    for _ in range(2):  # the second call is refused without touching the group
        try:
            driver(torch.tensor(PROMPTS), 0)
            errors.append("no error")
        except TPError as e:
            errors.append(str(e))
    (out / "after_kill.txt").write_text(f"{time.monotonic() - t0:.3f}\n" + "\n".join(errors))
    os._exit(0)  # a process group with a dead peer aborts in its destructor


if __name__ == "__main__":
    main()
