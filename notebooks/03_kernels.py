# %% [markdown]
# # 03 — Kernels: attention and sampling in Triton, and what bounds decode speed
#
# `nemo_ref/kernels/` (the `kernels/` folder, installed as `nemo_ref.kernels`) holds three
# Triton kernels: a causal flash-attention **prefill**, a split-KV **decode** attention that
# serves the 4 query heads of a GQA group with one read of the KV cache (plus a combine
# kernel), and a sort-free **sampler** that runs the whole S0..S9 pipeline of 02_sampling in one
# program per row.
#
# This notebook runs them in **Triton's interpreter** (`TRITON_INTERPRET=1`: the kernels
# execute on CPU tensors, program after program, slowly, but with the same semantics), checks
# them against references on small inputs, then turns to the GPU side: what the compiler
# makes of them for an H100, the bandwidth floor of Nemo 12B's decode, and the benchmark
# results committed in `benchmarks/`.
#
# The interpreter must be switched on **before** the kernel modules are imported: `@triton.jit`
# reads the variable when the decorated function is defined.

# %%
import os

os.environ["TRITON_INTERPRET"] = "1"  # before importing nemo_ref.kernels

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from _helpers import md_table
from IPython.display import Markdown, display
from nemo_ref.kernels import attention as attn_kernels
from nemo_ref.kernels import sampling as sampling_kernels

from nemo_ref import ModelArgs, SamplingParams, Transformer
from nemo_ref.demo import embedded_model, notice
from nemo_ref.sampling import reference

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "pyproject.toml").exists())
torch.manual_seed(0)


# %% [markdown]
# ## 1. Attention
#
# `attn_kernels.attention(q, k, v, start_pos)` is what the model calls with
# `attn_backend="triton"`: q `[B, H, T, D]` (RoPE applied), k and v the cache slice
# `[B, Hkv, S, D]`, and `start_pos[b]` the position of row b's first query. T = 1 runs the decode
# kernel, anything longer the prefill kernel.
#
# ### The whole model on the kernels
#
# The simplest end-to-end check: a small embedded model (**random weights**) with the Triton backend
# against the plain float32 math of the `eager` backend — a prefill without cache, then a
# prefill into the cache and a decode step.

# %%
model = embedded_model("nemo-tiny", seed=0, attn_backend="eager")  # 2 layers, 4 query heads over 1 KV head
print(notice("nemo-tiny", 0))
tokens = torch.tensor([[1] + [1000 + b for b in b"The sea, the sea!"]])
nxt = torch.tensor([[1000 + ord(" ")]])
T = tokens.shape[1]
eager_prefill = model(tokens)
eager_next = model(torch.cat([tokens, nxt], 1))[:, -1]

model.set_attn_backend("triton")
t0 = time.perf_counter()
triton_prefill = model(tokens)  # prefill kernel, no cache
kv = model.new_cache(max_batch=1, max_len=64)
model(tokens, 0, cache=kv, last_only=True)  # prefill kernel, writing the cache
triton_next = model(nxt, T, cache=kv)[:, -1]  # decode kernel (T = 1) over the cache
print(f"interpreter time: {time.perf_counter() - t0:.1f} s")

for name, a, b in [
    ("prefill logits", triton_prefill, eager_prefill),
    ("decode logits", triton_next, eager_next),
]:
    print(f"{name:>15}: max |triton - eager| = {(a - b).abs().max().item():.2e}")
    assert torch.allclose(a, b, atol=1e-4)

# %% [markdown]
# ### Decode over rows at different positions, against torch's own attention
#
# A batched decode step has one query per row, each row at its own position. The reference is
# torch's `scaled_dot_product_attention` with `enable_gqa=True` and a per-row mask: an
# implementation independent of ours. Shapes use Nemo's real head geometry (32 query heads of
# 128 over 8 KV heads).

# %%
B, H, Hkv, D, S = 3, 32, 8, 128, 80
start_pos = torch.tensor([5, 41, 79])  # row b attends keys 0..start_pos[b]
q = torch.randn(B, H, 1, D)
k, v = torch.randn(B, Hkv, S, D), torch.randn(B, Hkv, S, D)

t0 = time.perf_counter()
out = attn_kernels.attention(q, k, v, start_pos)
elapsed = time.perf_counter() - t0
visible = (torch.arange(S)[None, :] <= start_pos[:, None])[:, None, None, :]  # [B, 1, 1, S]
expected = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, enable_gqa=True)
print(
    f"decode kernel ({elapsed:.2f} s in the interpreter): max |kernel - torch sdpa| = {(out - expected).abs().max().item():.2e}"
)
assert torch.allclose(out, expected, atol=1e-5)

# %% [markdown]
# ### How split-KV decode works
#
# At batch 1 a decode step has only 8 KV heads of work: 8 programs would leave most of an
# H100's 132 SMs idle. The decode kernel therefore cuts each row's keys into **splits**; each
# program (split, KV head, row) computes the attention of the 4 query heads of its group over
# its split only — normalised output `o_s` and log-sum-exp `lse_s` — and a second kernel
# combines the splits: `o = Σ exp(lse_s - lse) o_s` with `lse = log Σ exp(lse_s)`. The same
# identity is what lets flash attention process keys tile by tile with a running maximum. In
# plain torch, on one query head:

# %%
qh, kh, vh = q[0, 0, 0], k[0, 0, :50], v[0, 0, :50]  # one query, 50 keys
scores = kh @ qh / math.sqrt(D)
full = scores.softmax(0) @ vh

parts = []
for lo, hi in [(0, 16), (16, 32), (32, 50)]:  # three splits
    s = scores[lo:hi]
    parts.append((s.softmax(0) @ vh[lo:hi], torch.logsumexp(s, 0)))  # (o_s, lse_s)
lse = torch.logsumexp(torch.stack([l for _, l in parts]), 0)
combined = sum(torch.exp(l - lse) * o for o, l in parts)
print("max |combined splits - full softmax| =", (combined - full).abs().max().item())

# %% [markdown]
# ## 2. Sampling
#
# `sampling_kernels.probabilities(...)` returns the final distribution the kernel draws from;
# `sampling_kernels.sample(...)` draws with the uniform `u` given per row. Every parameter is
# per row, so one launch serves a batch of requests with different settings. Checked against
# `reference.distribution` (the pure-Python spec, float64) on four rows with different
# settings. A vocabulary of 8192 keeps the interpreter fast (the real 131,072 works the same,
# 16 times slower here).

# %%
V = 8192
logits = torch.randn(4, V) * 3
rows = [
    SamplingParams(temperature=0.7, top_p=0.9),
    SamplingParams(temperature=1.0, top_k=40),
    SamplingParams(temperature=1.3, min_p=0.1, top_k=100, top_p=0.95),
    SamplingParams(temperature=0.0),  # greedy
]
per_row = {
    "temperature": torch.tensor([p.temperature for p in rows]),
    "top_p": torch.tensor([p.top_p for p in rows]),
    "top_k": torch.tensor([p.top_k for p in rows]),
    "min_p": torch.tensor([p.min_p for p in rows]),
}
t0 = time.perf_counter()
probs = sampling_kernels.probabilities(logits, **per_row)
print(f"interpreter time for 4 rows of {V}: {time.perf_counter() - t0:.1f} s")
table = []
for b, p in enumerate(rows):
    exact = torch.tensor(reference.distribution(logits[b], p, [], []), dtype=torch.float64)
    diff = (probs[b].double() - exact).abs().max().item()
    same_support = torch.equal(probs[b] > 0, exact > 0)
    table.append(
        (
            b,
            f"T={p.temperature:g} top_p={p.top_p:g} top_k={p.top_k} min_p={p.min_p:g}",
            int((exact > 0).sum()),
            same_support,
            f"{diff:.1e}",
        )
    )
    assert same_support and diff < 1e-5
md_table(["row", "settings", "tokens kept", "same kept set", "max abs diff vs reference"], table)

# %% [markdown]
# The engine calls its sampler as `sampler(logits, rows)`; `TritonSampler` (the kernels) and
# `TorchSampler` (the batched float64 pipeline) take the same `SampleRow`s (parameters, seed,
# choice, step, history), turn them into one `SamplingMetadata` per step, and draw the same tokens:

# %%
from nemo_ref.sampling.metadata import SampleRow
from nemo_ref.sampling.sampler import TorchSampler, TritonSampler

hist = [5, 9, 9, 700]
srows = [
    SampleRow(
        SamplingParams(temperature=0.8, top_p=0.9, repetition_penalty=1.2),
        seed=11,
        choice=0,
        step=3,
        prompt_tokens=hist,
        output_tokens=[9],
    ),
    SampleRow(
        SamplingParams(temperature=1.0, top_k=20, frequency_penalty=0.5, logprobs=True, top_logprobs=3),
        seed=12,
        choice=1,
        step=0,
        prompt_tokens=hist,
        output_tokens=[700, 700],
    ),
]
by_kernel = TritonSampler()(logits[:2], srows)
by_torch = TorchSampler()(logits[:2], srows)
for kr, tr in zip(by_kernel, by_torch, strict=False):
    print(
        f"kernel token {kr.token} (logprob {kr.logprob:.5f})   torch token {tr.token} (logprob {tr.logprob:.5f})"
    )
    assert kr.token == tr.token

# %% [markdown]
# ### How the sampler avoids sorting
#
# top_k and top_p are defined by the rank order, which suggests sorting 131,072 logits per row:
# slow on a GPU. The kernel instead maps each float32 value to an int32 **key** whose integer
# order is the float order, and binary-searches the key range for the cut ("the largest key t
# with at least k tokens — or mass p — at or above it"), each step one pass over the row; the
# tokens tied at the cut are then admitted in ascending id order, which gives the spec's exact
# tie rule. The key trick in torch:

# %%
y = torch.tensor([-math.inf, -3.5, -1.0, -0.0, 0.0, 1e-30, 0.5, 2.0, 7.25])
bits = torch.where(y == 0, torch.zeros_like(y), y).view(torch.int32)
key = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
for a, b in zip(y.tolist(), key.tolist(), strict=False):
    print(f"{a:>10} -> key {b:>12}")
assert torch.all(key[1:] >= key[:-1])  # same order as the floats

# %% [markdown]
# ## 3. What the compiler makes of them for an H100
#
# No GPU is needed to *compile* for one: `triton.compile(..., target=GPUTarget("cuda", 90, 32))`
# runs the real pipeline down to sm_90 machine code with the `ptxas` bundled in the Triton
# wheel. `python -m nemo_ref.kernels._compile` does it for every kernel at its launch
# configuration and reports registers per thread, spills, shared memory and whether the
# Hopper tensor-core instruction `wgmma` is used. (It runs in a subprocess because it needs
# `TRITON_INTERPRET` unset.)

# %%
env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
run = subprocess.run(
    [sys.executable, "-m", "nemo_ref.kernels._compile"],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    cwd=ROOT,
)
print(run.stdout or run.stderr[-3000:])
print("exit status", run.returncode)

# %% [markdown]
# Reading it: the bf16 prefill uses `wgmma` with 128x64 tiles and no spills; the float32
# variants (kept for exact testing) use many more registers. Decode does not need tensor cores
# to be fast — it is bound by memory, as the next section shows.
#
# ## 4. The roofline of Nemo 12B decode
#
# Generating one token at batch 1 reads every weight matrix once (23.15 GB in bf16, section 2
# of 01_model) plus the whole KV cache of the sequence (160 KiB per token of context). Nothing
# can be faster than moving those bytes at the card's memory bandwidth. Measured copy bandwidth
# on this workplace's cards: H100 SXM ~3.0 TB/s, H200 ~4.3 TB/s.

# %%
big = ModelArgs.preset("nemo-12b")
m12 = Transformer(big, device="meta")
n_params = m12.num_parameters()
weight_bytes = 2 * (n_params - m12.tok_embeddings.weight.numel())  # embedding: one row gathered
kv_per_token = 2 * big.n_layers * big.n_kv_heads * big.head_dim * 2
print(
    f"weights read per step: {weight_bytes / 1e9:.2f} GB; KV cache: {kv_per_token / 1024:.0f} KiB per token of context"
)

cards = {"H100 (~3.0 TB/s)": 3.0e12, "H200 (~4.3 TB/s)": 4.3e12}
ctx = torch.logspace(0, math.log10(131072), 300)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.5))
for name, bw in cards.items():
    ax1.plot(ctx, bw / (weight_bytes + kv_per_token * ctx), label=name)
ax1.set_xscale("log")
ax1.set(
    xlabel="context length (tokens)",
    ylabel="tokens / s (upper bound)",
    title="batch-1 decode: bandwidth floor",
    ylim=(0, None),
)
ax1.legend()

# Batch B: the weights are read once per step for all B rows, each row reads its own cache,
# and the caches must fit in the card's memory next to the weights.
capacity = {"H100 (~3.0 TB/s)": 80e9, "H200 (~4.3 TB/s)": 141e9}
peak = 790e12  # bf16 dense matmul FLOP/s, measured on an H100
rows = []
for context in (4096, 32768):
    flops_per_token = (
        2 * (n_params - m12.tok_embeddings.weight.numel())
        + 4 * big.n_layers * big.n_heads * big.head_dim * context
    )
    for name, bw in cards.items():
        max_batch = int((capacity[name] - 2 * n_params) // (kv_per_token * context))
        batch = torch.arange(1, max_batch + 1, dtype=torch.float64)
        t_mem = (weight_bytes + batch * kv_per_token * context) / bw
        t_compute = batch * flops_per_token / peak
        step = torch.maximum(t_mem, t_compute)
        (line,) = ax2.plot(batch, batch / step, label=f"{name}, context {context}")
        ax2.plot(batch[-1:], (batch / step)[-1:], "o", color=line.get_color())
        rows.append(
            (
                f"{context:,}",
                name,
                max_batch,
                f"{(batch / step)[-1]:.0f}",
                f"{1e3 * t_mem[-1]:.1f} ms",
                f"{1e3 * t_compute[-1]:.1f} ms",
            )
        )
ax2.set_xscale("log", base=2)
ax2.set(
    xlabel="batch size (sequences decoded together)",
    ylabel="tokens / s, all rows (upper bound)",
    title="batched decode, up to the largest batch that fits (dot)",
)
ax2.legend(fontsize=8)
plt.tight_layout()
plt.show()

md_table(
    ["context", "card", "largest batch that fits", "tok/s there", "step: memory time", "step: compute time"],
    rows,
)
md_table(
    ["context", *cards],
    [
        (f"{c:,}", *[f"{bw / (weight_bytes + kv_per_token * c):.0f} tok/s" for bw in cards.values()])
        for c in (1, 4096, 32768, 131072)
    ],
)

# %% [markdown]
# At short context the weights dominate: at most ~130 tokens/s on an H100 and ~186 on an H200,
# however good the kernels. At 128k the KV cache (20 GiB) nearly doubles the bytes per step.
# Batching is the way up: B sequences share one read of the weights, so throughput grows almost
# linearly at first; then the KV caches, which grow with B, dominate the bytes, and memory
# *capacity* ends the curve. Even at the largest batch that fits, a step's matmuls take a few
# milliseconds against tens of milliseconds of memory traffic: decode is memory-bound at every
# batch an 80 GB card can hold (prefill, with thousands of tokens per weight read, is the
# compute-bound phase). The decode attention kernel's job is to read the KV cache at close to
# full bandwidth; the sampler's is to cost next to nothing.
#
# ## 5. Benchmark results in `benchmarks/`
#
# Kernel timings are taken only on a GPU, by one script (`scripts/gpu_bench.py`, which checks
# every kernel against its reference before timing anything), and committed as
# `benchmarks/gpu-<card>.json` with the card's name; other scripts record CPU results (the
# sampler, the model against transformers). Whatever is committed is rendered below.

# %%
bench = ROOT / "benchmarks"
documents = (
    {f.name: json.loads(f.read_text()) for f in sorted(bench.glob("*.json"))} if bench.is_dir() else {}
)
gpu_reports = {
    n: d
    for n, d in documents.items()
    if isinstance(d, dict) and "card" in d and not d.get("dry_run") and "cpu" not in str(d["card"]).lower()
}
print(f"{bench.relative_to(ROOT)}/: {', '.join(documents) or 'no JSON results'}")
if gpu_reports:
    display(
        Markdown(
            "GPU runs: "
            + ", ".join(f"`{n}` ({d['card']}, {d.get('date', '?')})" for n, d in gpu_reports.items())
        )
    )
else:
    display(
        Markdown(
            "**No GPU run exists yet.** No file in `benchmarks/` holds timings from a GPU, so this "
            "notebook has no measured kernel speed to show: the roofline of section 4 is the only "
            "speed information here. Results from CPU runs, if any, follow."
        )
    )


# %% [markdown]
# ### GPU runs
#
# For each GPU report: the correctness checks that gated the timings, then prefill throughput
# against torch's SDPA, decode attention's bandwidth against the card's measured copy bandwidth
# (the bound of section 4), the sampler against a sort-based torch sampler, and batch-1 decode of
# the full-size architecture against the `copy bandwidth / 23.15 GB` floor.


# %%
def show_table(records, title):
    if not records:
        return
    cols = list(dict.fromkeys(k for r in records for k in r))
    fmt = lambda x: f"{x:.4g}" if isinstance(x, float) else str(x)  # noqa: E731
    display(Markdown(f"**{title}**"))
    md_table(cols, [[fmt(r.get(c, "")) for c in cols] for r in records])


def lines(ax, records, x, ys, **kw):
    for y in ys:
        pts = sorted((r[x], r[y]) for r in records if isinstance(r.get(y), (int, float)))
        if pts:
            ax.plot(*zip(*pts, strict=False), "o-", label=y, **kw)


for name, rep in gpu_reports.items():
    display(Markdown(f"#### `{name}`: {rep['card']}"))
    checks = rep.get("checks", [])
    print(
        f"torch {rep.get('torch')}, triton {rep.get('triton')}, {rep.get('date')}; "
        f"copy bandwidth {rep.get('copy_gb_s', float('nan')):.0f} GB/s; "
        f"checks passed: {sum(c['ok'] for c in checks)} of {len(checks)}"
    )
    panels = [k for k in ("prefill", "decode", "sampler") if rep.get(k)]
    if panels:
        fig, axes = plt.subplots(
            1, len(panels) + ("decode" in panels), figsize=(5.5 * (len(panels) + 1), 4), squeeze=False
        )
        axes = list(axes[0])
        if "prefill" in panels:
            ax = axes.pop(0)
            lines(ax, rep["prefill"], "seq_len", ["triton_tflops", "sdpa_tflops"])
            ax.set(
                xscale="log", xlabel="sequence length (causal, batch 1)", ylabel="TFLOP/s", title="prefill"
            )
            ax.legend(fontsize=8)
        if "decode" in panels:
            for ax, (x, fixed) in zip(axes[:2], [("context", "batch"), ("batch", "context")], strict=False):
                # one series: the other variable at its most common value (batch 1; context 4k)
                values = [r[fixed] for r in rep["decode"]]
                common = max(set(values), key=values.count)
                recs = [r for r in rep["decode"] if r[fixed] == common]
                lines(ax, recs, x, ["triton_gb_s", "sdpa_gb_s"])
                ax.axhline(rep.get("copy_gb_s", float("nan")), color="gray", ls=":", label="copy bandwidth")
                ax.set(
                    xscale="log",
                    xlabel=x,
                    ylabel="GB/s of KV read",
                    title=f"decode attention, {fixed} {common}",
                )
                ax.legend(fontsize=8)
            axes = axes[2:]
        if "sampler" in panels:
            ax = axes.pop(0)
            for setting in dict.fromkeys(r["setting"] for r in rep["sampler"]):
                recs = [r for r in rep["sampler"] if r["setting"] == setting]
                for y, style in (("triton_ms", "o-"), ("torch_sort_ms", "x--")):
                    pts = sorted((r["batch"], r[y]) for r in recs)
                    ax.plot(*zip(*pts, strict=False), style, label=f"{y[:-3]}, {setting}")
            ax.set(
                xscale="log",
                yscale="log",
                xlabel="batch (rows of 131072 logits)",
                ylabel="ms",
                title="sampler",
            )
            ax.legend(fontsize=7)
        plt.tight_layout()
        plt.show()
    for key in ("prefill", "decode", "sampler", "e2e"):
        show_table(rep.get(key, []), key)
    failed = [c for c in checks if not c["ok"]]
    if failed:
        show_table(failed, "FAILED checks")


# %% [markdown]
# ### Other results
#
# Every other result file, with the Markdown summary its script wrote next to it (if any), and
# a plot of its timings against batch size or length where it has them.


# %%
def flatten(record, prefix=""):
    # {"impl": {"median_ms": 1.2}} -> {"impl.median_ms": 1.2}
    out = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def record_lists(obj):
    if isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from record_lists(v)


X_NAMES = ("batch", "context", "seq_len", "tokens", "vocab")
others = {n: d for n, d in documents.items() if n not in gpu_reports}
for name, doc in others.items():
    summary = bench / (Path(name).stem + ".md")
    display(Markdown(f"#### `{name}`"))
    if summary.exists():
        text = summary.read_text()
        if text.startswith("# "):  # its title, as a caption
            title, _, text = text.partition("\n")
            text = f"**{title[2:]}**\n" + text
        display(Markdown(text.replace("\n# ", "\n##### ").replace("\n## ", "\n##### ")))
    for records in record_lists(doc):
        flat = [flatten(r) for r in records]

        def numeric(k, flat=flat):
            return all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) for r in flat)

        x = next((k for k in X_NAMES if numeric(k)), None)
        times = [k for k in flat[0] if numeric(k) and k.endswith("median_ms")] or [
            k for k in flat[0] if numeric(k) and k.endswith("_ms")
        ]
        if x is None or not times:
            continue
        fig, ax = plt.subplots(figsize=(7, 3.8))
        lines(ax, flat, x, times)
        ax.set(xlabel=x, ylabel="ms", yscale="log", title=name)
        if len({r[x] for r in flat}) > 2:
            ax.set_xscale("log", base=2)
        ax.legend(fontsize=8)
        plt.show()
if not others:
    print("no other results")
