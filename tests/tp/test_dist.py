"""Tensor parallelism across 2 real processes (gloo, CPU), against the single-process model.

One spawned job (tests/tp/tp_worker.py, 2 ranks; one test function, so that xdist runs it once) covers:
logits in both layouts, with and without a KV cache, prefill and batched decode at mixed positions,
the sdpa and Triton attention paths; greedy and seeded generate() (n=2) and an Engine whose rows
free out of order; each rank's bytes read; killing the follower makes an idle rank 0 exit with an
error (its heartbeat finds out).
A second job runs ``torchrun -m nemo_ref serve`` and asks it with the official openai client, then
kills rank 0 and checks that the follower exits with an error by itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nemo_ref.checkpoint import load_model, save_checkpoint
from nemo_ref.config import ModelArgs
from nemo_ref.model import Transformer
from tests.support import rel_err
from tests.tp import tp_worker

pytestmark = pytest.mark.slow

# Two KV heads (so 2 ranks), n_heads * head_dim != dim as in Nemo, Tekken's vocabulary (the server
# test sends text); small elsewhere.
ARGS = ModelArgs.preset("nemo-tiny").replace(
    dim=32, head_dim=16, hidden_dim=64, n_kv_heads=2, max_seq_len=256
)
REL_TOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tp_checkpoints")
    model = Transformer(ARGS).init_random(3, std=0.1)
    save_checkpoint(
        model, root / "mistral", "mistral", dtype=torch.float32, metadata={"nemo_ref.random_weights": "true"}
    )
    save_checkpoint(model, root / "hf", "hf", dtype=torch.float32, max_shard_bytes=10_000_000)
    return root


def _env(rank: int, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
        "NEMO_REF_TP_TIMEOUT": "30",
    }


def _run_workers(checkpoints: Path, out: Path) -> tuple[int, float, str]:
    """Both ranks of tests/tp/tp_worker.py, started as torchrun would (env), without a supervisor;
    once their checks are done, rank 1 is killed. Returns rank 0's (exit code, seconds it lived
    after the kill, output)."""
    port = _free_port()
    worker = Path(__file__).with_name("tp_worker.py")
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(checkpoints), str(out)],
            env=_env(rank, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        deadline = time.monotonic() + 150
        while not (out / "ready").exists():
            assert time.monotonic() < deadline, "the workers did not finish their checks in time"
            for p in procs:
                assert p.poll() is None, p.communicate()[0]
            time.sleep(0.1)
        procs[1].kill()
        killed = time.monotonic()
        procs[0].wait(timeout=30)
        exited_after = time.monotonic() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        logs = [p.communicate(timeout=10)[0] for p in procs]
    assert (out / "rank0.pt").exists(), logs[0]
    return procs[0].returncode, exited_after, logs[0]


def _reference(checkpoints: Path, tok) -> dict:
    """The same calls on the single-process model loaded by checkpoint.load_model."""
    ref = {}
    for layout, backend in tp_worker.BACKENDS.items():
        model = load_model(checkpoints / layout, dtype=torch.float32, attn_backend=backend, progress=False)
        for name, logits in tp_worker.cases(model).items():
            ref[f"{layout}/{name}"] = logits
        if layout in tp_worker.GENERATE:
            for name, tokens in tp_worker.generations(model, tok).items():
                ref[f"{layout}/{name}"] = tokens
    return ref


def test_two_ranks_compute_what_one_process_does_and_fail_together(checkpoints, tok, tmp_path):
    """One job (so that xdist never runs it twice): every check of tests/tp/tp_worker.py."""
    from nemo_ref.checkpoint import inspect_checkpoint

    returncode, seconds, log = _run_workers(checkpoints, tmp_path)
    got, ref = torch.load(tmp_path / "rank0.pt"), _reference(checkpoints, tok)

    # logits, both layouts (sdpa on one, Triton on the other): no cache, chunked prefill, decode
    # of two rows at different positions
    for layout in ("mistral", "hf"):
        for name in ("no_cache", "prefill_a", "prefill_b", "decode_1", "decode_2"):
            key = f"{layout}/{name}"
            assert got[key].shape == ref[key].shape, key
            assert rel_err(got[key], ref[key]) <= REL_TOL, key
    # tokens: greedy, seeded n=2 (copied prompt rows), an engine whose rows free out of order
    for layout in tp_worker.GENERATE:
        for name in ("greedy", "seeded", "engine"):
            assert got[f"{layout}/{name}"] == ref[f"{layout}/{name}"], name
        assert got[f"{layout}/seeded"][0] != got[f"{layout}/seeded"][1]
    # a bad call fails on every rank alike and the group goes on (generation followed it)
    assert "positions must lie in [0, 256)" in got["mistral/bad_call"]
    # each rank read its half of every matrix and all of the (replicated) norms
    norms = 4 * ARGS.dim * (2 * ARGS.n_layers + 1)
    for layout in ("mistral", "hf"):
        total = inspect_checkpoint(checkpoints / layout)["bytes"]
        assert got[f"{layout}/bytes_read"] == (total - norms) // 2 + norms, layout
    # the follower killed while rank 0 sat idle: rank 0's heartbeat found out and it exited
    assert returncode == 1, log
    assert seconds < 10
    assert "error: tensor parallelism failed on rank 0" in log and "a rank died" in log


def test_torchrun_serve_answers_openai_then_a_dead_rank_0_stops_the_follower(checkpoints, tok, tmp_path):
    openai = pytest.importorskip("openai")
    httpx = pytest.importorskip("httpx")
    from nemo_ref.generate import generate
    from nemo_ref.sampling.params import SamplingParams

    port = _free_port()
    log = tmp_path / "torchrun.log"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
        "--monitor-interval", "60",  # torchrun must not be the one that stops the follower
        "-m", "nemo_ref", "serve", "--checkpoint", str(checkpoints / "mistral"), "--port", str(port),
        "--max-batch", "2", "--max-model-len", "64", "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "NEMO_REF_TP_TIMEOUT": "30"}
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
        messages = [{"role": "user", "content": "Say hello"}]
        r = client.chat.completions.create(model="mistral", messages=messages, max_tokens=5, temperature=0)
        expected = generate(
            load_model(checkpoints / "mistral", dtype=torch.float32, progress=False),
            tok,
            messages,
            SamplingParams(temperature=0, max_tokens=5),
        )
        assert r.choices[0].message.content == expected.text
        assert r.usage.completion_tokens == 5
        both = client.chat.completions.create(model="mistral", messages=messages, max_tokens=4, n=2, seed=3)
        assert len(both.choices) == 2

        text = log.read_text()
        pids = {rank: int(text.split(f"rank {rank}: ")[1].split("(pid ")[1].split(")")[0]) for rank in (0, 1)}
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _alive(pids[1]):
            assert time.monotonic() < deadline, "the follower outlived rank 0:\n" + log.read_text()
            time.sleep(0.1)
        assert "rank 1: lost rank 0" in log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by torchrun) counts as gone
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"
