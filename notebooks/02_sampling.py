# %% [markdown]
# # 02 — Sampling: what every knob does, and where engines disagree
#
# A language model gives one logit per vocabulary entry; *sampling* turns them into one token.
# The OpenAI-style parameters (temperature, top_p, top_k, min_p, the penalties, logit_bias,
# seed) look standard, but popular engines apply them in different orders and scopes and get
# different distributions from the same request. `nemo_ref` writes one pipeline down
# (`docs/sampling.md`) and implements it three times — the pure-Python reference
# (`nemo_ref.sampling.reference`, the executable spec), the batched torch sampler and a Triton
# kernel — all producing the same distribution. The steps, for one position of one choice:
#
# | step | what | |
# |---|---|---|
# | S0 | constrain | grammar-forbidden tokens get -inf (structured outputs, tools); raw logprobs are taken here |
# | S1 | logit_bias | `z_i += bias_i` |
# | S2 | repetition_penalty r | each distinct token of prompt + output: `z/r` if `z > 0` else `z*r` |
# | S3 | presence / frequency | generated tokens only: `z_i -= c_i * freq + (c_i > 0) * pres` |
# | S4 | temperature 0 | greedy: the top token (lowest id among ties); S5..S9 skipped |
# | S5 | temperature T | `(z - max z) / T` |
# | S6 | min_p m | drop tokens with `p_i < m * p_max` |
# | S7 | top_k k | keep exactly the k first tokens (ties: lower id first) |
# | S8 | top_p p | walk the tokens by rank, keep while the mass before is `< p` |
# | S9 | draw | `u = U(seed, choice, step)`; the first id whose running probability exceeds `u` |
#
# We look at it on a hand-made logit vector first (readable), then on the logits of the embedded
# model over the real 131,072-token vocabulary (**random weights**, shaped to look trained: a Zipf
# prior over the vocabulary plus a context term, so a few tokens take most of the mass; its text is
# still noise, and the mechanics are the same as for the real model).

# %%
import math

import matplotlib.pyplot as plt
import torch
from _helpers import md_table

import nemo_ref
from nemo_ref import SamplingParams
from nemo_ref.sampling import reference
from nemo_ref.sampling.rng import uniform

NEG_INF = -math.inf


def kept(probs):
    return sorted(i for i, q in enumerate(probs) if q > 0)


# %% [markdown]
# ## 1. One step, stage by stage
#
# A toy vocabulary of 10 words and the model's logits for the word after *"The cat sat on the"*.
# The history matters for the penalties: the prompt contains `the` and `cat`; so far this choice
# generated `mat`, `the`, `mat`. `reference.pipeline` returns the logits after every stage.

# %%
words = ["mat", "floor", "sofa", "roof", "bed", "chair", "cat", "table", "moon", "the"]
z = [4.0, 3.2, 2.9, 2.0, 1.8, 1.5, 1.2, 0.6, -0.5, -1.0]
prompt_tokens = [9, 6]  # the, cat
output_tokens = [0, 9, 0]  # mat, the, mat
params = SamplingParams(
    logit_bias={2: 1.0},  # +1 for "sofa"
    repetition_penalty=1.3,
    presence_penalty=0.4,
    frequency_penalty=0.3,
    temperature=0.8,
    min_p=0.05,
    top_k=4,
    top_p=0.9,
    seed=7,
)
stages = reference.pipeline(z, params, prompt_tokens, output_tokens)
settings = {
    "raw": "S0: softmax of the logits",
    "bias": "S1: logit_bias {sofa: +1}",
    "repetition": "S2: repetition 1.3 (the, cat, mat)",
    "presence_frequency": "S3: presence 0.4, frequency 0.3",
    "temperature": "S5: temperature 0.8",
    "min_p": "S6: min_p 0.05",
    "top_k": "S7: top_k 4",
    "top_p": "S8: top_p 0.9",
}
fig, axes = plt.subplots(2, 4, figsize=(16, 6.5), sharey=True, layout="constrained")
for ax, (name, logits) in zip(axes.flat, stages, strict=False):
    probs = reference.softmax(logits)
    alive = [x > NEG_INF for x in logits]
    ax.bar(range(10), probs, color=["C0" if a else "lightgray" for a in alive])
    for i, a in enumerate(alive):
        if not a:
            ax.text(i, 0.01, "x", ha="center", color="red")
    ax.set_title(f"{settings[name]}\n{sum(alive)} tokens left", fontsize=9)
    ax.set_xticks(range(10), words, rotation=60, fontsize=8)
axes[0, 0].set_ylabel("probability")
axes[1, 0].set_ylabel("probability")
plt.show()

final = reference.distribution(z, params, prompt_tokens, output_tokens)
print("final distribution:", {words[i]: round(final[i], 4) for i in kept(final)})

# %% [markdown]
# Reading the panels: the bias lifts `sofa`; the repetition penalty divides the positive logits of
# `mat`, `the` and `cat` (it counts the prompt too) by 1.3 and multiplies the negative one
# (`the`) by 1.3; presence/frequency then hit `mat` (generated twice) much harder than `the`
# (once), and ignore `cat` (only in the prompt). Temperature 0.8 sharpens. min_p drops
# everything below 5% of the top probability, top_k keeps four, and top_p walks
# `sofa, floor, ...` until the mass before the next token reaches 0.9. The draw then picks from
# what is left, renormalised.
#
# The same information as a table, from `nemo_ref.sampling.explain` (what `nemo-ref generate
# --explain N` prints for every step):

# %%
from nemo_ref.sampling.explain import explain

print(
    explain(
        z,
        params,
        prompt_tokens,
        output_tokens,
        step=0,
        choice=0,
        seed=7,
        top=10,
        token_str=lambda i: words[i],
    )
)

# %% [markdown]
# ### Temperature alone
#
# Temperature divides the (shifted) logits: below 1 it sharpens the distribution, above 1 it
# flattens it, and 0 means greedy. nemo_ref shifts by the maximum first, so any T > 0 is exact,
# with no clamping, however small.

# %%
fig, ax = plt.subplots(figsize=(10, 3.5))
temps = [0.25, 0.5, 1.0, 1.5, 2.0]
width = 0.8 / len(temps)
for j, t in enumerate(temps):
    q = reference.distribution(z, SamplingParams(temperature=t), [], [])
    entropy = -sum(x * math.log(x) for x in q if x > 0)
    ax.bar([i + (j - 2) * width for i in range(10)], q, width, label=f"T={t} (entropy {entropy:.2f} nats)")
ax.set_xticks(range(10), words)
ax.set_ylabel("probability")
ax.legend(fontsize=8)
plt.show()

tiny_t = reference.distribution([1.0, 0.999], SamplingParams(temperature=0.001), [], [])
print("logits [1.0, 0.999] at T = 0.001:", [round(x, 4) for x in tiny_t], " (exact: softmax([0, -1]))")


# %% [markdown]
# ## 2. Where engines disagree
#
# The worked examples of `docs/sampling.md`, each computed four ways. **nemo_ref** is
# `reference.distribution`. The other columns are the emulations of `nemo_ref.sampling.engines`,
# each engine's choices read from its source (docs/engines.md lists every choice with its file;
# notebook 04 puts all nine engines side by side on a model's logits). The choices at work here:
#
# - **HF transformers** — `generation/utils.py::_get_logits_processor` adds the warpers in the
#   order temperature, top_k, top_p, min_p; `generation/logits_process.py`: top_k keeps every
#   token tied with the k-th (`scores < topk(...)[-1]` removed), top_p sorts ascending and
#   removes tokens whose cumulative probability is `<= 1 - top_p`.
# - **vLLM** (v1) — `v1/sample/sampler.py`: temperature, then min_p (a logits processor), then
#   `ops/topk_topp_sampler.py::apply_top_k_top_p`: top_k tie-inclusive, top_p like HF's.
# - **llama.cpp** — `common/common.h` default sampler chain: penalties, dry, top_k, typical_p,
#   top_p, min_p, xtc, **temperature last**; `src/llama-sampling.cpp`: top_k keeps the first k
#   after sorting (ties in whatever order the sort leaves them), top_p keeps tokens until the
#   cumulative probability reaches p.


# %%
from nemo_ref.sampling import engines

COLUMNS = {"HF transformers": "hf", "vLLM": "vllm", "llama.cpp": "llama.cpp"}  # column: engine name
OFF = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0}  # sent explicitly: no engine default


def run(column, z, T=1.0, **knobs):
    if column == "nemo_ref":
        return reference.distribution(z, SamplingParams(temperature=T, **knobs), [], [])
    request = {**OFF, "temperature": T, **knobs}  # the OpenAI-style request a client would send
    return engines.get(COLUMNS[column]).distribution(z, request, [], [])


examples = [
    ("logits [3, 2, 1], top_p 0.8, T 0.5", [3.0, 2.0, 1.0], dict(T=0.5, top_p=0.8)),
    ("logits [3, 1, 0], min_p 0.2, T 2", [3.0, 1.0, 0.0], dict(T=2.0, min_p=0.2)),
    (
        "probs [.5, .3, .15, .05], top_p 0.82, min_p 0.2",
        [math.log(x) for x in (0.5, 0.3, 0.15, 0.05)],
        dict(top_p=0.82, min_p=0.2),
    ),
    ("logits [2, 1, 1, 0], top_k 2", [2.0, 1.0, 1.0, 0.0], dict(top_k=2)),
]
columns = ["nemo_ref", *COLUMNS]
results = {(ex, c): run(c, zz, **kw) for ex, zz, kw in examples for c in columns}
md_table(
    ["example", *[f"{c}: kept" for c in columns]],
    [(ex, *[kept(results[ex, c]) for c in columns]) for ex, _, _ in examples],
)

# %% [markdown]
# - **Temperature before or after truncation** (rows 1–2). With temperature first, T = 0.5
#   sharpens [3, 2, 1] to probabilities [.87, .12, .02] and top_p 0.8 stops after the first token;
#   llama.cpp truncates the *unsharpened* [.67, .24, .09] and keeps two. With T = 2 the other way
#   round: the flattened distribution passes min_p 0.2 entirely, the raw one keeps only the top.
# - **Truncation order** (row 3): min_p first (vLLM, nemo_ref) removes the 0.05 token, so the
#   renormalised top two already reach 0.82; top_p first (HF, llama.cpp) keeps three.
# - **Ties at the top_k boundary** (row 4): HF and vLLM keep every token tied with the k-th, so
#   top_k 2 can keep 3 tokens; nemo_ref keeps exactly k, the lower id winning the tie
#   (llama.cpp: whatever its sort leaves first).

# %%
fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), layout="constrained")
width = 0.2
for ax, (ex, zz, _) in zip(axes, examples, strict=False):
    for j, c in enumerate(columns):
        ax.bar([i + (j - 1.5) * width for i in range(len(zz))], results[ex, c], width, label=c)
    ax.set_title(ex, fontsize=9)
    ax.set_xticks(range(len(zz)), [f"token {i}" for i in range(len(zz))])
axes[0].set_ylabel("final probability")
axes[0].legend(fontsize=8)
plt.show()

# %% [markdown]
# If transformers is installed (it is a `dev` extra), we can check the `hf` emulation against its
# real warpers, assembled the way `_get_logits_processor` assembles them (the engines' own tests do
# this for hundreds of random cases):

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, imported by transformers
try:
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )
except ImportError:
    print("transformers is not installed: skipped")
else:
    for ex, zz, kw in examples:
        chain = LogitsProcessorList([TemperatureLogitsWarper(kw.get("T", 1.0))])
        if kw.get("top_k"):
            chain.append(TopKLogitsWarper(kw["top_k"]))
        if kw.get("top_p"):
            chain.append(TopPLogitsWarper(kw["top_p"]))
        if kw.get("min_p"):
            chain.append(MinPLogitsWarper(kw["min_p"]))
        scores = torch.tensor(zz, dtype=torch.float64)[None]
        real = chain(torch.zeros(1, 1, dtype=torch.long), scores).softmax(-1)[0]
        print(
            f"{ex:<50} transformers keeps {kept(real.tolist())}; the hf emulation {kept(results[ex, 'HF transformers'])}"
        )
        assert torch.allclose(real, torch.tensor(results[ex, "HF transformers"], dtype=real.dtype))

# %% [markdown]
# ### The repetition penalty's sign rule
#
# The CTRL paper (Keskar et al. 2019) divides every seen token's logit by the penalty, which
# *raises* a negative logit (makes a repeated unlikely token more likely). HF, vLLM and nemo_ref
# divide positive logits and multiply negative ones, so a repeated token always loses:

# %%
zr = [2.0, -2.0, 0.0]
ours = dict(reference.pipeline(zr, SamplingParams(repetition_penalty=1.3), [0, 1, 2], []))["repetition"]
ctrl = [x / 1.3 for x in zr]
md_table(
    ["token", "logit", "nemo_ref (S2)", "CTRL's original (divide all)"],
    [(i, zr[i], f"{ours[i]:.4f}", f"{ctrl[i]:.4f}") for i in range(3)],
)
assert [round(x, 4) for x in ours] == [1.5385, -2.6, 0.0]

# %% [markdown]
# ## 3. Empirical against exact
#
# `reference.sample(logits, params, prompt, output, step, choice)` draws with the counter-based
# uniform `U(seed, choice, step)`. Drawing at steps 0..N-1 with the same history gives N
# independent draws from the same distribution; their histogram must match
# `reference.distribution`, which we test with Pearson's chi-square (scipy) over the tokens that
# can occur. Tokens outside the support must never appear.

# %%
from scipy.stats import chisquare

N = 20_000
draws = [reference.sample(z, params, prompt_tokens, output_tokens, step=s).token for s in range(N)]
counts = torch.bincount(torch.tensor(draws), minlength=10).tolist()
support = kept(final)
assert all(counts[i] == 0 for i in range(10) if i not in support), "a removed token was drawn"
stat, pvalue = chisquare([counts[i] for i in support], [N * final[i] for i in support])
print(f"{N} draws; chi-square {stat:.2f} on {len(support) - 1} degrees of freedom, p-value {pvalue:.3f}")

fig, ax = plt.subplots(figsize=(8, 3.2))
ax.bar([i - 0.2 for i in range(10)], final, 0.4, label="exact: reference.distribution")
ax.bar([i + 0.2 for i in range(10)], [c / N for c in counts], 0.4, label=f"empirical: {N} draws")
ax.set_xticks(range(10), words)
ax.legend()
plt.show()
assert pvalue > 1e-3

# %% [markdown]
# ## 4. The real vocabulary (random weights)
#
# The same pipeline on the logits of the embedded model (`nemo-small`, **random weights**) for a
# real Tekken-encoded prompt. Its weights are random but shaped (nemo_ref/demo.py: a Zipf prior
# plus a context term), so, as with a trained model, a handful of tokens carry most of the mass and
# the truncation stages cut a long thin tail (in the table, 0.0000 is a probability below 5e-5:
# the uniform share is 1/131072 = 7.6e-6). The batched torch sampler (the generation loop's sampler off CUDA)
# gives the same distribution as the pure-Python reference over all 131,072 tokens.

# %%
from nemo_ref.demo import embedded_model, notice
from nemo_ref.sampling.batched import SampleRow, distribution_batch

model = embedded_model("nemo-small", seed=0)
tok = nemo_ref.load_tokenizer()
print(notice("nemo-small", 0))
prompt = tok.encode("The cat sat on the", bos=True)
print("prompt ids:", prompt)
logits = model(torch.tensor([prompt]))[0, -1]  # float32 [131072]

real = SamplingParams(temperature=0.7, min_p=0.5, top_k=50, top_p=0.9, repetition_penalty=1.1, seed=1)
print(explain(logits, real, prompt, [], step=0, choice=0, seed=1, top=8, token_str=tok.token_str))

exact = torch.tensor(reference.distribution(logits, real, prompt, []), dtype=torch.float64)
batched = distribution_batch(logits[None], [SampleRow(real, 1, 0, 0, prompt, [])])[0]
print("\nmax |batched torch - reference| over the vocabulary:", (batched - exact).abs().max().item())
assert torch.allclose(batched, exact, atol=1e-12)

# %% [markdown]
# ## 5. Seeds: reproducible, and independent of the batch
#
# The draw for step s of choice c is `U(seed, choice, step)`, a pure function (SHA-256 of the
# three numbers). There is no generator state, so a seeded completion does not depend on what
# else shares the batch, on logprobs settings, or on earlier requests.

# %%
for seed, choice, step in [(42, 0, 0), (42, 0, 0), (42, 0, 1), (42, 1, 0), (43, 0, 0)]:
    print(f"U(seed={seed}, choice={choice}, step={step}) = {uniform(seed, choice, step):.12f}")

# %%
import dataclasses

from nemo_ref.generate import generate  # nemo_ref.generate(...) is the same function

gen = SamplingParams(temperature=0.9, top_k=40, seed=42, max_tokens=6)
a = generate(model, tok, "Once upon a time", gen)
b = generate(model, tok, "Once upon a time", gen)
print("run 1:", a.token_ids)
print("run 2:", b.token_ids, "(identical)" if a.token_ids == b.token_ids else "(DIFFERENT)")
print("text (random weights, noise):", repr(a.text))
assert a.token_ids == b.token_ids

three = generate(model, tok, "Once upon a time", dataclasses.replace(gen, n=3))
for c in three.choices:
    print(f"n=3, choice {c.index}:", c.token_ids)
assert three.choices[0].token_ids == a.token_ids  # choice 0 of n=3 is the n=1 completion

unseeded = generate(model, tok, "Once upon a time", SamplingParams(max_tokens=6))
again = generate(model, tok, "Once upon a time", SamplingParams(max_tokens=6, seed=unseeded.seed))
print(
    f"\nno seed given: the response reports seed {unseeded.seed}; replaying it reproduces the tokens:",
    again.token_ids == unseeded.token_ids,
)
assert again.token_ids == unseeded.token_ids

# %% [markdown]
# Batch independence, with the engine the server uses: the same seeded request decoded alongside
# two others (different prompts and settings, admitted in the same steps) produces the same tokens
# as alone.

# %%
from nemo_ref.engine import Engine, Request
from nemo_ref.generate import make_sequences

engine = Engine(model, max_batch=4, max_len=64)
requests = []
for text, p in [
    ("Once upon a time", gen),
    ("Hello there", SamplingParams(temperature=1.5, top_k=5, seed=3, max_tokens=6)),
    ("A B C", SamplingParams(temperature=0.0, max_tokens=6)),
]:
    _, seqs = make_sequences(tok, tok.encode(text, bos=True), p, context=64)
    requests.append(engine.submit(Request(seqs)))
while not all(r.finished for r in requests):
    engine.step()
in_batch = list(requests[0].sequences[0].output)
print("alone:       ", a.token_ids)
print("in a batch:  ", in_batch)
assert in_batch == a.token_ids

# %% [markdown]
# ## 6. Logprobs: raw by default
#
# The logprobs a response reports are, by default, those of the model (`raw`: log-softmax after the
# grammar mask only), unaffected by temperature, penalties or truncation — what OpenAI-style
# clients expect. `logprobs_mode="processed"` reports the final distribution's instead.

# %%
for mode in ("raw", "processed"):
    p = SamplingParams(temperature=0.8, top_k=4, logprobs=True, top_logprobs=5, logprobs_mode=mode, seed=7)
    r = reference.sample(z, p, prompt_tokens, output_tokens, step=0)
    tops = ", ".join(f"{words[i]} {lp:.3f}" for i, lp in r.top)
    print(f"{mode:>9}: drew {words[r.token]!r} with logprob {r.logprob:.3f}; top: {tops}")
