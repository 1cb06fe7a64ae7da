# %% [markdown]
# # 01 — Mistral Nemo 12B, from config to logits
#
# This notebook reads the real model's architecture end to end with `nemo_ref`:
#
# 1. the config, and the one fact every port must get right (`n_heads * head_dim = 4096 != dim = 5120`);
# 2. where the 12,247,782,400 parameters live (counted from `ModelArgs` on the *meta* device: no memory);
# 3. the forward pass step by step, with the shape of every intermediate tensor — run on a small
#    Nemo-shaped model, checked against `Transformer.forward`, and evaluated for the 12B;
# 4. rotary position embeddings (RoPE) and the long-context frequency schemes;
# 5. the q/k permutation between the two published checkpoint layouts, shown numerically;
# 6. the KV cache: its memory against context length, and batched decode with rows at different positions;
# 7. an attention-probability heatmap.
#
# **Every model run here uses random weights** (`nemo_ref.demo.embedded_model`: a small
# Nemo-shaped model initialised deterministically from a seed). Shapes, parameter counts and
# memory are exact; the *values* (logits, attention patterns) are not those of the trained model.
# See `docs/architecture.md` for the same material as prose.

# %%
import math

import matplotlib.pyplot as plt
import torch
from _helpers import md_table

import nemo_ref
from nemo_ref import ModelArgs, Transformer
from nemo_ref.demo import embedded_model, notice
from nemo_ref.kv_cache import KVCache
from nemo_ref.rope import apply_rotary, inv_frequencies, rope_table

torch.manual_seed(0)
torch.set_printoptions(precision=4, sci_mode=False)


# %% [markdown]
# ## 1. The config
#
# `ModelArgs.preset("nemo-12b")` holds the values of the published `params.json`. `head_dim` is
# an explicit field: the 32 query heads of 128 features make 4096, **not** the model width 5120.
# A port that computes `head_dim = dim // n_heads` gets 160 and fails to load the weights (or,
# worse, loads something else). GQA: 32 query heads share 8 key/value heads, 4 query heads per
# KV head.

# %%
big = ModelArgs.preset("nemo-12b")
for name in (
    "dim",
    "n_layers",
    "head_dim",
    "hidden_dim",
    "n_heads",
    "n_kv_heads",
    "vocab_size",
    "norm_eps",
    "rope_theta",
    "max_seq_len",
    "tied_embeddings",
):
    print(f"{name:>16} = {getattr(big, name)}")
print(f"\nn_heads * head_dim = {big.n_heads * big.head_dim}   vs   dim = {big.dim}")
print(f"dim // n_heads     = {big.dim // big.n_heads}   (the wrong head_dim)")
print(f"query heads per KV head (n_rep) = {big.n_rep}")

# %% [markdown]
# ## 2. Where the parameters live
#
# `Transformer(args, device="meta")` builds the full 12B module tree with shapes but no storage,
# so we can count every parameter without 24.5 GB of memory. The model's parameter names are the
# mistral checkpoint's keys (`layers.3.attention.wq.weight`, ...).

# %%
meta = Transformer(big, device="meta")
sd = meta.state_dict()
print(len(sd), "tensors")
for name in [
    "tok_embeddings.weight",
    *[k for k in sd if k.startswith("layers.0.")],
    "norm.weight",
    "output.weight",
]:
    print(f"  {name:<40} {list(sd[name].shape)}")


# %%
def component(name):
    parts = name.split(".")  # layers.{i}.attention.wq.weight, layers.{i}.ffn_norm.weight, ...
    if parts[0] != "layers":
        return {"tok_embeddings": "embedding", "norm": "final norm", "output": "output (lm head)"}[parts[0]]
    return ".".join(parts[2:-1])  # attention.wq, feed_forward.w1, attention_norm, ...


counts, shapes = {}, {}
for name, p in meta.named_parameters():
    c = component(name)
    counts[c] = counts.get(c, 0) + p.numel()
    shapes.setdefault(c, list(p.shape))

total = meta.num_parameters()
rows = [(c, shapes[c], f"{n:,}", f"{100 * n / total:.2f}%", f"{2 * n / 1e9:.3f}") for c, n in counts.items()]
rows.append(("**total**", "", f"**{total:,}**", "100%", f"{2 * total / 1e9:.3f}"))
md_table(["component", "shape (one layer)", "parameters (all layers)", "share", "GB in bf16"], rows)
assert total == 12_247_782_400

# %%
emb = counts["embedding"]
print(f"weights in bf16:                {2 * total / 1e9:.2f} GB")
print(
    f"read per decode step:           {2 * (total - emb) / 1e9:.2f} GB  "
    "(every matrix but the embedding table, of which one row per token is gathered)"
)
per_layer = sum(n for c, n in counts.items() if c not in ("embedding", "output (lm head)", "final norm"))
print(f"per transformer block:          {per_layer // big.n_layers:,} parameters")
print(f"matmul FLOPs per token (2 x N): {2 * (total - emb) / 1e9:.1f} GFLOP, plus attention over the context")

# %% [markdown]
# The feed-forward network (SwiGLU: three 5120 x 14336 matrices per layer) holds 72% of the
# parameters; the embedding table and the (untied) output projection are 0.67 B each because
# the Tekken vocabulary has 131,072 entries. Attention is comparatively small (17%) because of
# GQA: wk and wv are 1024 x 5120, a quarter of wq.
#
# ## 3. The forward pass, stage by stage
#
# We run the small embedded model (`nemo-small`: dim 256, 8 query heads of 64 over 2 KV heads,
# so `8 * 64 = 512 != 256` just like the real model, and the real 131,072-token vocabulary)
# and write the forward pass out with the model's own modules, recording the shape at each
# stage. At the end we check that our unrolled pass gives the same logits as `model(tokens)`.
#
# The input is `<s>` (id 1) followed by the UTF-8 bytes of a sentence as Tekken *byte tokens*
# (ids 1000 + byte; Tekken reserves ids 1000..1255 for the 256 bytes), so no tokenizer is needed.

# %%
model = embedded_model("nemo-small", seed=0, attn_backend="eager")
print(notice("nemo-small", 0))
a = model.args
text = "The sea, the sea!"
tokens = torch.tensor([[1] + [1000 + b for b in text.encode()]])
B, T = tokens.shape
print("tokens", list(tokens.shape), tokens[0, :8].tolist(), "...")

# %%
recorded = {}  # stage -> shape, for the table below


def rec(stage, t):
    recorded.setdefault(stage, list(t.shape))  # the first layer's shapes
    return t


cos_t, sin_t = rope_table(a, T)  # float32 [T, head_dim/2]
cos, sin = cos_t[None], sin_t[None]  # [1, T, head_dim/2]: one row of positions per batch row
causal = torch.ones(T, T, dtype=torch.bool).tril()


def attention(att, x, layer_probs):
    q = rec("q = wq(x), split into heads", att.wq(x).view(B, T, a.n_heads, a.head_dim))
    k = rec("k = wk(x)", att.wk(x).view(B, T, a.n_kv_heads, a.head_dim))
    v = rec("v = wv(x)", att.wv(x).view(B, T, a.n_kv_heads, a.head_dim))
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # RoPE on q and k only
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, T, head_dim]
    # GQA: the n_rep query heads that share a KV head are folded into the query axis,
    # so K and V are used as they are (never repeated per query head).
    qg = rec(
        "q folded: [B, n_kv_heads, n_rep*T, head_dim]", q.reshape(B, a.n_kv_heads, a.n_rep * T, a.head_dim)
    )
    scores = rec("scores = q k^T / sqrt(head_dim)", qg @ k.transpose(-1, -2) / math.sqrt(a.head_dim))
    scores = scores.masked_fill(~causal.repeat(a.n_rep, 1), float("-inf"))  # row (g, t) sees keys <= t
    probs = scores.softmax(-1)
    layer_probs.append(probs.view(B, a.n_heads, T, T))
    out = rec("probs @ v", probs @ v).reshape(B, a.n_heads, T, a.head_dim)
    out = rec("heads concatenated", out.transpose(1, 2).reshape(B, T, a.n_heads * a.head_dim))
    return rec("wo(...)", att.wo(out))


def feed_forward(ff, x):
    gate = rec("w1(x) (gate), w3(x) (up)", ff.w1(x))
    return rec("w2(silu(gate) * up)", ff.w2(torch.nn.functional.silu(gate) * ff.w3(x)))


probs_by_layer = []
with torch.no_grad():
    h = rec("embedding", model.tok_embeddings(tokens))
    for layer in model.layers:
        h = h + attention(layer.attention, rec("attention_norm(h)", layer.attention_norm(h)), probs_by_layer)
        h = h + feed_forward(layer.feed_forward, layer.ffn_norm(h))
    logits = rec("logits = output(norm(h))", model.output(model.norm(h)).float())

reference = model(tokens)  # the library's forward (eager backend)
print("max |unrolled - model(tokens)| =", (logits - reference).abs().max().item())
assert torch.allclose(logits, reference, atol=1e-5, rtol=1e-4)


# %% [markdown]
# The same stages as formulas in `ModelArgs` — checked against the shapes recorded above, then
# evaluated for the 12B model (batch 1, a 1000-token prompt):


# %%
def stage_shapes(a, B, T):
    H, K, D, r = a.n_heads, a.n_kv_heads, a.head_dim, a.n_rep
    return {
        "embedding": [B, T, a.dim],
        "attention_norm(h)": [B, T, a.dim],
        "q = wq(x), split into heads": [B, T, H, D],
        "k = wk(x)": [B, T, K, D],
        "v = wv(x)": [B, T, K, D],
        "q folded: [B, n_kv_heads, n_rep*T, head_dim]": [B, K, r * T, D],
        "scores = q k^T / sqrt(head_dim)": [B, K, r * T, T],
        "probs @ v": [B, K, r * T, D],
        "heads concatenated": [B, T, H * D],
        "wo(...)": [B, T, a.dim],
        "w1(x) (gate), w3(x) (up)": [B, T, a.hidden_dim],
        "w2(silu(gate) * up)": [B, T, a.dim],
        "logits = output(norm(h))": [B, T, a.vocab_size],
    }


assert stage_shapes(a, B, T) == recorded, "the formulas disagree with the run"
big_shapes = stage_shapes(big, 1, 1000)
md_table(
    ["stage", f"nemo-small, T={T} (ran)", "Nemo 12B, T=1000 (from ModelArgs)"],
    [(s, recorded[s], big_shapes[s]) for s in recorded],
)

# %% [markdown]
# Things to notice in the 12B column:
#
# - `q` has 32 x 128 = **4096** features while the residual stream has **5120**: `wq` is
#   [4096, 5120] and `wo` is [5120, 4096]; they are not square.
# - `k` and `v` have only 8 heads. The fold turns [1, 32, 1000, 128] queries into
#   [1, 8, 4000, 128]: each KV head meets the 4 query heads of its group in one matmul, and the
#   scores are [1, 8, 4000, 1000] — the same numbers as 32 separate [1000, 1000] matrices, with
#   no copy of K or V. In a checkpoint, query head `h` belongs to KV head `h // 4`.
# - The logits are float32 [B, T, 131072]: 512 KiB per position, which is why `last_only=True`
#   exists for prefill.
#
# ## 4. Rotary position embeddings
#
# RoPE rotates each pair of features of q and k by the angle `pos * inv_freq[i]`, with
# `inv_freq[i] = theta^(-2i / head_dim)`. Nemo uses `theta = 1e6` (Llama 2 used 1e4), which
# stretches the slowest wavelengths to millions of tokens.

# %%
inv, attn_factor = inv_frequencies(big)
wavelength = 2 * math.pi / inv
print(f"{len(inv)} frequencies per head; attention factor {attn_factor}")
print(f"fastest pair: wavelength {wavelength[0]:.2f} tokens; slowest: {wavelength[-1]:,.0f} tokens")
print(f"pairs with a wavelength longer than the 131072-token context: {(wavelength > 131072).sum().item()}")

# %% [markdown]
# The score between a rotated query at position m and a rotated key at position n depends only
# on m - n: shifting both positions by the same amount leaves it unchanged (up to float32 rounding).

# %%
D = big.head_dim
cos_big, sin_big = rope_table(big, 5000)
q1, k1 = torch.randn(1, 1, 1, D), torch.randn(1, 1, 1, D)


def score(m, n):
    qm = apply_rotary(q1, cos_big[m][None, None], sin_big[m][None, None])
    kn = apply_rotary(k1, cos_big[n][None, None], sin_big[n][None, None])
    return (qm * kn).sum().item()


for m, n in [(10, 3), (110, 103), (4010, 4003)]:
    print(f"q at {m:>4}, k at {n:>4} (distance {m - n}): score {score(m, n):+.5f}")

# %% [markdown]
# ### Long-context schemes
#
# Models trained on a short context are extended by changing the frequencies. `nemo_ref.rope`
# implements transformers' formulas (`modeling_rope_utils`): **linear** (position interpolation:
# every frequency divided by the factor), **dynamic** NTK (a larger base once the sequence
# exceeds the trained length), **YaRN** (interpolate only the slow frequencies, keep the fast
# ones, blend between; plus an attention factor), and **llama3** (the same idea with wavelength
# thresholds). Nemo itself uses none of them (its `params.json` has no scaling); below, each
# scheme extends a hypothetical 32k-token model by a factor 4, with Nemo's head_dim and theta.

# %%
from nemo_ref.config import RopeScaling

orig, factor = 32768, 4.0
schemes = {
    "default": RopeScaling(),
    "linear": RopeScaling("linear", factor=factor),
    "dynamic": RopeScaling("dynamic", factor=factor, original_max_position_embeddings=orig),
    "yarn": RopeScaling(
        "yarn", factor=factor, original_max_position_embeddings=orig, beta_fast=32.0, beta_slow=1.0
    ),
    "llama3": RopeScaling(
        "llama3",
        factor=factor,
        original_max_position_embeddings=orig,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
    ),
}
freqs = {}
for name, rs in schemes.items():
    # dynamic NTK depends on the sequence length: evaluate it at the full extended length
    freqs[name], att = inv_frequencies(big.replace(rope_scaling=rs), seq_len=int(orig * factor))
    print(f"{name:>8}: attention factor {att:.4f}")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
i = torch.arange(D // 2)
for name, f in freqs.items():
    ax1.semilogy(i, f, label=name)
    ax2.plot(i, f / freqs["default"], label=name)
ax1.set(
    xlabel="pair index i",
    ylabel="inv_freq (rad / token)",
    title="inverse frequencies (head_dim 128, theta 1e6)",
)
ax2.set(
    xlabel="pair index i",
    ylabel="inv_freq / default",
    title=f"scaled / default (factor {factor:g}, original {orig})",
)
ax2.axhline(1 / factor, color="gray", ls=":", lw=1)
for ax in (ax1, ax2):
    ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Reading the right panel: linear divides every frequency by 4 (the fast pairs too, which blurs
# nearby positions); dynamic NTK raises the base, so the fast pairs barely move and the slow ones
# shrink most; YaRN and llama3 leave the fast pairs exactly alone (ratio 1), divide the slow ones
# by exactly 4 and ramp in between. `nemo_ref` also implements Llama-4-style query scaling
# (`rope.llama4_q_scale`), which later Mistral models declare in `params.json`.
#
# ## 5. The two checkpoint layouts and the q/k permutation
#
# The mistral layout (`consolidated.safetensors`) rotates **interleaved** pairs (2i, 2i+1) of each
# head. The HF layout's code (`rotate_half` in transformers' `modeling_mistral.py`) rotates pairs
# (i, i + head_dim/2). To make the HF code produce the same attention, the conversion script
# permutes the rows of `wq` and `wk` inside each head so that feature 2i lands at i and 2i+1 at
# i + head_dim/2. It is a view, a transpose and a reshape, in `nemo_ref/checkpoint/names.py`:

# %%
import inspect

from nemo_ref.checkpoint import permute_for_hf, unpermute_from_hf

print(inspect.getsource(permute_for_hf))
print(inspect.getsource(unpermute_from_hf))
one_head = torch.arange(8)[:, None]  # one head of 8 features: which row goes where?
print("mistral rows, in HF order:", permute_for_hf(one_head, 1).flatten().tolist())

# %% [markdown]
# Now the numerical check, on real weights of a small model (layer 0 of `nemo-tiny`: 4 query
# heads of 32 over 1 KV head): queries and keys computed the mistral way (interleaved rotation on
# the original weights) and the HF way (`rotate_half` on the permuted weights, written out below
# exactly as transformers computes it) differ feature by feature, but every attention score is
# the same. `wv` and every other matrix are not permuted.

# %%
tiny = embedded_model("nemo-tiny", seed=0)
print(notice("nemo-tiny", 0))
ta = tiny.args
att = tiny.layers[0].attention
wq, wk = att.wq.weight.detach(), att.wk.weight.detach()
wq_hf, wk_hf = permute_for_hf(wq, ta.n_heads), permute_for_hf(wk, ta.n_kv_heads)  # n_kv_heads for wk!
assert torch.equal(unpermute_from_hf(wq_hf, ta.n_heads), wq)

Tn = 6
x = torch.randn(1, Tn, ta.dim)
c, s = rope_table(ta, Tn)

# mistral layout, nemo_ref's convention: interleaved pairs
q_m = apply_rotary((x @ wq.T).view(1, Tn, ta.n_heads, ta.head_dim), c[None], s[None])
k_m = apply_rotary((x @ wk.T).view(1, Tn, ta.n_kv_heads, ta.head_dim), c[None], s[None])


# HF layout, what transformers does (modeling_mistral.rotate_half / apply_rotary_pos_emb)
def rotate_half(t):
    t1, t2 = t[..., : t.shape[-1] // 2], t[..., t.shape[-1] // 2 :]
    return torch.cat((-t2, t1), dim=-1)


cos_hf, sin_hf = torch.cat((c, c), -1)[None, :, None], torch.cat((s, s), -1)[None, :, None]
q_h = (x @ wq_hf.T).view(1, Tn, ta.n_heads, ta.head_dim)
k_h = (x @ wk_hf.T).view(1, Tn, ta.n_kv_heads, ta.head_dim)
q_h, k_h = q_h * cos_hf + rotate_half(q_h) * sin_hf, k_h * cos_hf + rotate_half(k_h) * sin_hf

kv_of = torch.arange(ta.n_heads) // ta.n_rep  # query head -> its KV head
scores_m = torch.einsum("bthd,bshd->bhts", q_m, k_m[:, :, kv_of])
scores_h = torch.einsum("bthd,bshd->bhts", q_h, k_h[:, :, kv_of])
print("max |q_mistral - q_hf|          =", (q_m - q_h).abs().max().item(), "(different features)")
print("max |scores_mistral - scores_hf| =", (scores_m - scores_h).abs().max().item())
assert torch.allclose(scores_m, scores_h, atol=1e-6)
# the rotated vectors hold the same numbers, in the other order within each head
perm = permute_for_hf(torch.arange(ta.head_dim)[:, None], 1).flatten()
assert torch.allclose(q_m[..., perm], q_h, atol=1e-6)

# %% [markdown]
# `nemo_ref` keeps one internal convention (interleaved, the mistral layout) and un-permutes the
# HF layout's `wq`/`wk` when it loads them; saving in the HF layout permutes them again. A round
# trip through a real HF-layout checkpoint on disk (file names, key names and all):

# %%
import tempfile
from pathlib import Path

from safetensors import safe_open

probe = torch.tensor([[1, 1000 + ord("N"), 1000 + ord("e"), 1000 + ord("m"), 1000 + ord("o")]])
with tempfile.TemporaryDirectory() as tmp:
    nemo_ref.save_checkpoint(tiny, tmp, layout="hf", dtype=torch.float32)
    print(sorted(p.name for p in Path(tmp).iterdir()))
    shard = next(Path(tmp).glob("model-*.safetensors"))
    with safe_open(str(shard), "pt") as f:
        q_proj = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
    print("q_proj on disk == permute_for_hf(wq):", torch.equal(q_proj, wq_hf))
    reloaded = nemo_ref.load_model(tmp, dtype=torch.float32, progress=False)
    print("wq after loading == original wq:     ", torch.equal(reloaded.layers[0].attention.wq.weight, wq))
    print("same logits:", torch.equal(reloaded(probe), tiny(probe)))

    try:  # transformers (a dev extra) reads the same directory with its rotate_half code
        import warnings

        warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in Jupyter
        from transformers import MistralForCausalLM
        from transformers.utils import logging as hf_logging
    except ImportError:
        print("transformers is not installed: skipping its check")
    else:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        hf = MistralForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        with torch.no_grad():
            diff = (hf(probe).logits - tiny(probe)).abs().max().item()
        print(f"transformers MistralForCausalLM on the HF files: max |logits diff| = {diff:.2e}")
        assert diff < 1e-4

# %% [markdown]
# ## 6. The KV cache
#
# During generation each layer stores the keys and values of every past position, so a new
# token's query can attend to them without recomputing them. Per token of context that is
# `2 (K and V) x n_layers x n_kv_heads x head_dim x 2 bytes (bf16)`:

# %%
per_token = 2 * big.n_layers * big.n_kv_heads * big.head_dim * 2
print(
    f"2 x {big.n_layers} x {big.n_kv_heads} x {big.head_dim} x 2 bytes = {per_token:,} bytes = {per_token / 1024:.0f} KiB per token"
)
cache = KVCache.allocate(big, max_batch=1, max_len=1024, dtype=torch.bfloat16, device="meta")
print(
    "nemo_ref's KVCache for 1024 positions (meta device):",
    cache.nbytes() / 1024 / 1024,
    "MiB;",
    "per layer K:",
    list(cache.k[0].shape),
    "= [max_batch, n_kv_heads, max_len, head_dim]",
)
assert cache.nbytes() == per_token * 1024
print(f"full 131072-token context: {per_token * 131072 / 2**30:.0f} GiB")

# %%
ctx = torch.linspace(0, 131072, 200)
weights_gb = 2 * total / 1e9
mha_per_token = per_token * big.n_heads // big.n_kv_heads  # had every query head its own K/V
fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(ctx, ctx * per_token / 1e9, label="KV cache, GQA (8 KV heads): 160 KiB/token")
ax.plot(ctx, ctx * mha_per_token / 1e9, "--", label="KV cache if 32 KV heads (no GQA): 640 KiB/token")
ax.plot(ctx, weights_gb + ctx * per_token / 1e9, label="bf16 weights + GQA cache")
ax.axhline(weights_gb, color="gray", ls=":", label=f"bf16 weights ({weights_gb:.1f} GB)")
ax.axhline(80, color="red", ls=":", label="80 GB (H100)")
ax.set(xlabel="context length (tokens), batch 1", ylabel="GB", title="Nemo 12B memory against context length")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ### Batched decode: rows at different positions
#
# `nemo_ref`'s cache is static: `new_cache(max_batch, max_len)` preallocates
# [max_batch, n_kv_heads, max_len, head_dim] per layer, and each sequence owns one row. In a
# decode step every running sequence feeds one token, but the sequences have different lengths:
# `model(tokens [B, 1], start_pos=LongTensor[B], cache=kv, rows=...)` writes each row's new key/value at
# its own position and masks each row's keys beyond it. Below, two prompts of lengths 8 and 3 are
# prefilled into rows 0 and 1, then decoded together in one step; the result equals running each
# full sequence on its own without a cache.

# %%
p0 = [1] + [1000 + b for b in b"Nemo 12"]  # 8 tokens
p1 = [1, 1000 + ord("H"), 1000 + ord("i")]  # 3 tokens
nxt = [1000 + ord("B"), 1000 + ord("!")]  # one new token per sequence

kv = tiny.new_cache(max_batch=2, max_len=32)
for row, p in enumerate((p0, p1)):
    tiny(torch.tensor([p]), 0, cache=kv, rows=torch.tensor([row]))  # prefill each prompt into its row
positions = torch.tensor([len(p0), len(p1)])
step = tiny(torch.tensor([[nxt[0]], [nxt[1]]]), positions, cache=kv, rows=torch.tensor([0, 1]))
print("decode step logits:", list(step.shape), "at positions", [len(p0), len(p1)])

# no cache: each full sequence attends within itself
for row, p in enumerate((p0, p1)):
    alone = tiny(torch.tensor([[*p, nxt[row]]]))[0, -1]
    print(f"row {row}: max |batched decode - full forward| = {(step[row, 0] - alone).abs().max().item():.2e}")
    assert torch.allclose(step[row, 0], alone, atol=1e-5)

# %% [markdown]
# ## 7. Attention probabilities
#
# The probabilities recorded in section 3 (eager attention of `nemo-small`, whose result we
# checked against `model(tokens)`). **Random weights:** with weights of standard deviation 0.02,
# q·k is close to 0, so every allowed key gets about the same weight and each row is nearly
# uniform over positions 0..t (1/(t+1) each). What the picture shows is the *causal mask* and
# the GQA layout, not learned behaviour; a trained model's heads are sharply structured
# (attention sinks on `<s>`, previous-token heads, ...).

# %%
labels = ["<s>"] + [chr(b) if b != 32 else "␣" for b in text.encode()]
probs0 = probs_by_layer[0][0]  # layer 0: [n_heads, T, T]
fig, axes = plt.subplots(1, 4, figsize=(16, 4.6), layout="constrained")
for ax, head in zip(axes, (0, 3, 4, 7), strict=False):
    im = ax.imshow(probs0[head], cmap="viridis", vmin=0, vmax=1)
    ax.set_title(f"layer 0, query head {head} (KV head {head // a.n_rep})", fontsize=10)
    ax.set_xticks(range(T), labels, fontsize=7)
    ax.set_yticks(range(T), labels, fontsize=7)
    ax.set_xlabel("key position")
axes[0].set_ylabel("query position")
fig.colorbar(im, ax=axes, shrink=0.8)
fig.suptitle("attention probabilities (RANDOM WEIGHTS: near-uniform over the causal prefix)")
plt.show()

uniform = causal.float() / causal.float().sum(-1, keepdim=True)
print(
    "max |p - uniform causal| over all layers and heads:",
    max((p[0] - uniform).abs().max().item() for p in probs_by_layer),
)

# %% [markdown]
# ## Where to go next
#
# - `nemo_ref/model.py` is the whole transformer (about 300 lines); `docs/architecture.md`
#   describes the modules, the cache, the layouts and the numerics.
# - `02_sampling.ipynb`: what every sampling parameter does to these logits.
# - `03_kernels.ipynb`: the Triton kernels, and what bounds decode speed on an H100.
# - Real weights: `nemo_ref.load_model(path)` reads either published layout; everything above
#   then applies with `big` instead of the small model.
