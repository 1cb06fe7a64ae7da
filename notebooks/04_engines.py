# %% [markdown]
# # 04 — One prompt, one request, every engine
#
# The same logits and the same OpenAI-style request, sent to nine engines' sampling rules, give up
# to nine different next-token distributions. This notebook takes one prompt and one request and
# shows where the engines disagree and why, with `nemo_ref.compare` (the `nemo-ref compare` command
# as a Python call) over the emulations in `nemo_ref.sampling.engines`, each of which is a set of
# named choices read from that engine's source (docs/engines.md has them all, with the files):
#
# 1. the comparison table: every engine's pipeline with its defaults filled in, and the top tokens;
# 2. how many tokens each engine keeps, and how far its distribution is from nemo_ref's;
# 3. which step dropped what, engine by engine;
# 4. the disagreements one at a time, each traced to the choice that causes it;
# 5. what each engine's `logprobs` would report for the same token.
#
# **The logits come from the embedded model, which has random weights**: its next-token
# distribution is nearly flat over the 131,072-token vocabulary and its "text" is noise. The
# engines' rules do not care where the logits come from, so every mechanism below is the one a
# trained model would meet; the sizes (how many tokens survive) would be smaller with a trained
# model's peaked logits.

# %%
import matplotlib.pyplot as plt
import numpy as np
from _helpers import md_table

from nemo_ref.compare import compare, next_token_logits
from nemo_ref.demo import embedded_model, notice
from nemo_ref.sampling import ParamError, engines
from nemo_ref.tokenizer import load_tokenizer

model = embedded_model("nemo-tiny", seed=0)  # 2 layers over the real 131,072-token vocabulary
tok = load_tokenizer()
print(notice("nemo-tiny", 0))
print("engines:", ", ".join(engines.names()))

# %% [markdown]
# ## The prompt and the request
#
# The prompt is a sentence; as history we pretend the model has been stuck in a loop, generating
# the five tokens it liked best after the prompt, three times over. That is the situation the
# penalties exist for: they push those five tokens down, and whether they survive the truncation
# that follows depends on the engine.
#
# The request is what a client would send to each engine's OpenAI-compatible route:
# `temperature 0.7, top_p 0.9, frequency_penalty 0.5`. Every field it leaves out takes each
# engine's own default.

# %%
prompt_ids = tok.encode("The cat sat on the mat, and then the cat", bos=True)
z_prompt = next_token_logits(model, prompt_ids)
loop = [int(t) for t in np.argsort(-z_prompt, kind="stable")[:5]]
output_ids = loop * 3  # the model "generated" its five favourite tokens three times
z = next_token_logits(model, prompt_ids + output_ids)  # float64 [131072]
request = {"temperature": 0.7, "top_p": 0.9, "frequency_penalty": 0.5}

print(f"{len(prompt_ids)} prompt tokens; {len(output_ids)} generated tokens: {tok.decode(output_ids)!r}")
print(f"logits: std {z.std():.3f}, max - median {z.max() - np.median(z):.3f} (random weights: nearly flat)")

c = compare(
    z,
    request,
    prompt_tokens=prompt_ids,
    output_tokens=output_ids,
    token_str=tok.token_str,
    notice=notice("nemo-tiny", 0),
)
print(c.table(top=6))

# %% [markdown]
# Reading the table: the top block lists each engine's pipeline as it runs for this request (steps
# that are off are left out; defaults are filled in), how many tokens survive (`kept`) and the total
# variation distance (TV) of its final distribution from nemo_ref's: 0 for the same distribution, 1
# for disjoint ones. Engines that refuse a field of the request show the error their server would
# answer. Below, one row per token: its final probability under each engine, or `✗ step`, the step
# that dropped it; `*` marks a cell that differs from nemo_ref's.
#
# ## 1. How many tokens survive, and how far apart the distributions are

# %%
ok = [r for r in c.results if r.ok]
rejected = [r for r in c.results if not r.ok]
names = [r.name for r in ok]
kept = [int((r.probs > 0).sum()) for r in ok]
tv = [c.total_variation(r) for r in ok]

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 3.8), layout="constrained")
ax1.barh(names, kept, color="C0")
ax1.set_xscale("log")
ax1.invert_yaxis()
ax1.set(xlabel="tokens kept (log scale)", title="size of the final distribution's support")
for i, k in enumerate(kept):
    ax1.text(k, i, f" {k:,}", va="center", fontsize=8)
ax2.barh(names, tv, color="C1")
ax2.invert_yaxis()
ax2.set(
    xlabel="total variation distance from nemo_ref", xlim=(0, 1), title="how different the distribution is"
)
plt.show()
for r in rejected:
    print(f"{r.name} rejects the request: {r.error.message}")

# %% [markdown]
# ## 2. The top tokens under each engine
#
# The 10 tokens with the highest logits and the five tokens of the loop (marked: the penalties act
# on them), with the probability each engine gives them (log scale; a missing bar is a dropped
# token).

# %%
top = sorted({*np.argsort(-z, kind="stable")[:10].tolist(), *loop}, key=lambda t: -z[t])
width = 0.8 / len(ok)
fig, ax = plt.subplots(figsize=(14, 4.2), layout="constrained")
for j, r in enumerate(ok):
    ax.bar(np.arange(len(top)) + (j - len(ok) / 2 + 0.5) * width, r.probs[top], width, label=r.name)
ax.set_yscale("log")
# ascii(): the plot font lacks most scripts of the Tekken vocabulary
labels = [ascii(tok.token_str(t)) + ("\n(loop)" if t in loop else "") for t in top]
ax.set_xticks(range(len(top)), labels, fontsize=8)
ax.set(
    ylabel="final probability (log)",
    title="the highest raw logits and the loop, after each engine's pipeline",
)
ax.legend(fontsize=8, ncol=4)
plt.show()

# %% [markdown]
# ## 3. Which step dropped what
#
# Every token an engine removes is removed by one step of its pipeline (`Trace.dropped_by`). Here
# is the whole vocabulary, per engine, split by the step that removed it.

# %%
fig, ax = plt.subplots(figsize=(12, 3.8), layout="constrained")
colors = {}
for i, r in enumerate(ok):
    left = 0
    for s, (step, _setting) in enumerate(r.steps):
        n = int((r.dropped_by == s).sum())
        if n:
            color = colors.setdefault(step, f"C{len(colors) % 10}")
            ax.barh(
                i,
                n,
                left=left,
                color=color,
                label=step if step not in ax.get_legend_handles_labels()[1] else None,
            )
            left += n
    ax.barh(i, int((r.probs > 0).sum()), left=left, color="lightgray", label="kept" if i == 0 else None)
ax.set_yticks(range(len(ok)), names)
ax.invert_yaxis()
ax.set(xlabel=f"tokens of the {len(z):,}-token vocabulary", title="dropped by step (gray: kept)")
ax.legend(fontsize=8, loc="lower right")
plt.show()

# %% [markdown]
# ## 4. The disagreements, one at a time
#
# Each difference above comes from one of a handful of choices in which engines differ (docs/engines.md
# lists them all, with the source file behind each). Three are at work here: the defaults, where
# temperature sits in the order, and which history the penalties count. A fourth shows in what the
# engines refuse.

# %%
trace = {r.name: r for r in ok}


def support(name, req=request, prompt=prompt_ids, output=output_ids):
    return int((engines.get(name).probabilities(z, req, prompt, output) > 0).sum())


def unset(name):
    """What the engine runs with when the client sends only a temperature (mistral-inference needs one)."""
    knobs = engines.get(name).resolve({"temperature": 1.0})
    return ", ".join(f"{k} {knobs[k]}" for k in ("top_k", "top_p", "min_p"))


def kept_or_error(name):
    try:
        return f"{support(name):,}"
    except ParamError as e:
        return f"rejects {e.param}"


md_table(
    ["engine", "unset top_k, top_p, min_p become", "tokens kept for this request"],
    [(name, unset(name), kept_or_error(name)) for name in engines.names()],
)


# %% [markdown]
# **Defaults.** llama.cpp's server fills in `top_k 40, top_p 0.95, min_p 0.05, temperature 0.8`
# for every field the client leaves out; Ollama its own (`top_k 40`, which its OpenAI route cannot
# switch off, `top_k` not being an OpenAI field; it does not read `min_p` there either);
# transformers `top_k 50`; mistral-inference fixes `top_p` at 0.8 and refuses the field. vLLM,
# SGLang, TGI and nemo_ref add nothing. On the same request, these logits keep about a hundred
# thousand tokens in one engine and a few dozen in another: the defaults alone decide. (A deployment can
# move them again: vLLM's server overlays the model's `generation_config.json`,
# vllm-project/vllm#15281; GGUF metadata can replace llama.cpp's.)
#
# **Refusals.** transformers has no `frequency_penalty` (its `generate()` fails on the unknown
# argument); mistral-inference's `generate()` takes no `top_p`; the OpenAI API has no
# `repetition_penalty`, `top_k` or `min_p`. A client that sends the same request everywhere gets
# errors from some engines, and from others (Ollama's `min_p`) silence.

# %%
for name in ("vllm", "llama.cpp"):
    r = trace[name]
    print(f"{name:>10}: " + " > ".join(f"{s}" for s, setting in r.steps if setting != "off"))
# temperature first or last: llama.cpp's own chain with its defaults pinned off, against vLLM
pinned = {**request, "top_k": -1, "min_p": 0.0}  # -1: off, in all three
sweep = np.linspace(0.2, 1.6, 8)
fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
for name, style in (("vllm", "o-"), ("sglang", "x--"), ("llama.cpp", "s-")):
    ax.plot(sweep, [support(name, {**pinned, "temperature": float(t)}) for t in sweep], style, label=name)
ax.set(
    xlabel="temperature",
    ylabel="tokens kept by top_p 0.9",
    yscale="log",
    title="top_p before or after temperature",
)
ax.legend()
plt.show()

# %% [markdown]
# **Temperature first or last.** vLLM, HF, SGLang, TGI and nemo_ref divide by the temperature and
# *then* truncate, so top_p 0.9 measures the sharpened (T < 1) or flattened (T > 1) distribution:
# the kept set grows with T (vLLM and SGLang coincide here, one line over the other). llama.cpp's
# default chain puts temperature *last*: top_p and min_p see the untempered logits, so its kept set
# does not move with T at all; the temperature only reshapes the survivors
# (ggml-org/llama.cpp#4091). With T = 0.7 this is why, in the table, llama.cpp's few dozen survivors get
# their probabilities from `softmax(z / 0.7)` over those 36 alone.

# %%
PENALTIES = ("repetition", "presence_frequency", "normalised_frequency")


def penalty_shift(name):
    """How much the engine's penalty steps moved each loop token's logit (before temperature)."""
    t = engines.get(name).trace(z, request, prompt_ids, output_ids)
    ran = [i for i, (step, setting) in enumerate(t.steps) if step in PENALTIES and setting != "off"]
    return t.stage_logits[ran[-1]][loop] - t.input_logits[loop] if ran else np.zeros(len(loop))


md_table(
    ["engine", "counts", *[repr(tok.token_str(t)) for t in loop]],
    [
        (r.name, engines.get(r.name).spec.penalty_scope.value, *[f"{d:+.3f}" for d in penalty_shift(r.name)])
        for r in ok
    ],
)


# %% [markdown]
# **Which history the penalties count, and how.** Each loop token was generated three times.
# OpenAI's formula subtracts `count * frequency_penalty = 3 * 0.5 = 1.5` from its logit. vLLM,
# SGLang and nemo_ref count the generated tokens only; llama.cpp and Ollama count the last 64 tokens
# of prompt *and* output (the server feeds the prompt through the same sampler): here the whole
# history is shorter than 64 tokens and the loop tokens are not in the prompt, so they count the
# same three. TGI divides the count by the sequence length: `0.5 * 3 / len(history)`, which barely
# moves anything, so in the plot of section 2 TGI alone keeps the loop tokens that the others'
# top_p (or top_k) dropped.

# %% [markdown]
# ## 5. What `logprobs` report
#
# Asking an engine for `logprobs` does not say which distribution they describe. Some report the
# model's raw log-softmax (vLLM's default, llama.cpp), some the distribution after penalties and
# temperature but before truncation (SGLang), some the final one (TGI, transformers'
# `output_scores`). For reinforcement learning from sampled text this matters:
# huggingface/trl#4163, vllm-project/vllm#9453.

# %%
best = int(np.argmax(trace["nemo_ref"].probs))
md_table(
    ["engine", "logprobs mode", f"logprob of {tok.token_str(best)!r}", "log of its final probability"],
    [
        (
            r.name,
            r.logprobs_mode,
            f"{engines.get(r.name).logprobs(z, request, prompt_ids, output_ids)[best]:.4f}",
            f"{np.log(r.probs[best]):.4f}" if r.probs[best] > 0 else "-inf (dropped)",
        )
        for r in ok
    ],
)


# %% [markdown]
# The raw-mode engines report the same logprob whatever the request (it is the model's
# log-softmax); SGLang's includes the penalties and the temperature; TGI's is the log of the final
# probability, truncation included. None of them is "wrong", but a logprob copied from one engine's
# response is not comparable with another's.
#
# ## Try it yourself
#
# The same comparison from a shell, for any prompt, request and engines (with `--checkpoint DIR`
# for real weights, `--json` for scripts, `--save-logits` / `--logits` to replay one position):
#
# ```
# nemo-ref compare "The cat sat on the" --temperature 0.7 --top-p 0.9 --engines vllm,llama.cpp,sglang
# ```
