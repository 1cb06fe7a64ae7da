"""Writes the educational notebooks in ``notebooks/`` from the cell sources below.

This script is the source of the notebooks: edit a cell here, then run

    python scripts/make_notebooks.py          # rewrite notebooks/*.ipynb (no outputs)
    python scripts/make_notebooks.py --check  # exit 1 if a committed notebook differs

The notebooks are written without outputs and with fixed cell ids, so the files are reproducible
byte for byte and diffs stay readable. ``tests/test_notebooks.py`` executes every notebook top to
bottom and checks that the committed files are exactly what this script writes.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"

Cell = tuple[str, str]  # ("md" | "code", source)


def md(src: str) -> Cell:
    return ("md", textwrap.dedent(src).strip("\n"))


def code(src: str) -> Cell:
    return ("code", textwrap.dedent(src).strip("\n"))


# ------------------------------------------------------------------------------------------------
# 01_model: Nemo from config to logits
# ------------------------------------------------------------------------------------------------

NB01: list[Cell] = [
    md(
        r"""
        # 01 — Mistral Nemo 12B, from config to logits

        This notebook reads the real model's architecture end to end with `nemo_ref`:

        1. the config, and the one fact every port must get right (`n_heads * head_dim = 4096 != dim = 5120`);
        2. where the 12,247,782,400 parameters live (counted from `ModelArgs` on the *meta* device: no memory);
        3. the forward pass step by step, with the shape of every intermediate tensor — run on a small
           Nemo-shaped model, checked against `Transformer.forward`, and evaluated for the 12B;
        4. rotary position embeddings (RoPE) and the long-context frequency schemes;
        5. the q/k permutation between the two published checkpoint layouts, shown numerically;
        6. the KV cache: its memory against context length, and batched decode with rows at different positions;
        7. an attention-probability heatmap.

        **Every model run here uses random weights** (`nemo_ref.demo.embedded_model`: a small
        Nemo-shaped model initialised deterministically from a seed). Shapes, parameter counts and
        memory are exact; the *values* (logits, attention patterns) are not those of the trained model.
        See `docs/architecture.md` for the same material as prose.
        """
    ),
    code(
        r"""
        import math

        import matplotlib.pyplot as plt
        import torch
        from IPython.display import Markdown, display

        import nemo_ref
        from nemo_ref import ModelArgs, Transformer
        from nemo_ref.demo import embedded_model, notice
        from nemo_ref.model import KVCache
        from nemo_ref.rope import apply_rotary, inv_frequencies, rope_table

        torch.manual_seed(0)
        torch.set_printoptions(precision=4, sci_mode=False)


        def md_table(header, rows):
            # Render a list of rows as a Markdown table.
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
            display(Markdown("\n".join(lines)))
        """
    ),
    md(
        r"""
        ## 1. The config

        `ModelArgs.preset("nemo-12b")` holds the values of the published `params.json`. `head_dim` is
        an explicit field: the 32 query heads of 128 features make 4096, **not** the model width 5120.
        A port that computes `head_dim = dim // n_heads` gets 160 and fails to load the weights (or,
        worse, loads something else). GQA: 32 query heads share 8 key/value heads, 4 query heads per
        KV head.
        """
    ),
    code(
        r"""
        big = ModelArgs.preset("nemo-12b")
        for name in ("dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads", "vocab_size",
                     "norm_eps", "rope_theta", "max_seq_len", "tied_embeddings"):
            print(f"{name:>16} = {getattr(big, name)}")
        print(f"\nn_heads * head_dim = {big.n_heads * big.head_dim}   vs   dim = {big.dim}")
        print(f"dim // n_heads     = {big.dim // big.n_heads}   (the wrong head_dim)")
        print(f"query heads per KV head (n_rep) = {big.n_rep}")
        """
    ),
    md(
        r"""
        ## 2. Where the parameters live

        `Transformer(args, device="meta")` builds the full 12B module tree with shapes but no storage,
        so we can count every parameter without 24.5 GB of memory. The model's parameter names are the
        mistral checkpoint's keys (`layers.3.attention.wq.weight`, ...).
        """
    ),
    code(
        r"""
        meta = Transformer(big, device="meta")
        sd = meta.state_dict()
        print(len(sd), "tensors")
        for name in ["tok_embeddings.weight", *[k for k in sd if k.startswith("layers.0.")], "norm.weight", "output.weight"]:
            print(f"  {name:<40} {list(sd[name].shape)}")
        """
    ),
    code(
        r"""
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
        rows = [
            (c, shapes[c], f"{n:,}", f"{100 * n / total:.2f}%", f"{2 * n / 1e9:.3f}")
            for c, n in counts.items()
        ]
        rows.append(("**total**", "", f"**{total:,}**", "100%", f"{2 * total / 1e9:.3f}"))
        md_table(["component", "shape (one layer)", "parameters (all layers)", "share", "GB in bf16"], rows)
        assert total == 12_247_782_400
        """
    ),
    code(
        r"""
        emb = counts["embedding"]
        print(f"weights in bf16:                {2 * total / 1e9:.2f} GB")
        print(f"read per decode step:           {2 * (total - emb) / 1e9:.2f} GB  "
              "(every matrix but the embedding table, of which one row per token is gathered)")
        per_layer = sum(n for c, n in counts.items() if c not in ("embedding", "output (lm head)", "final norm"))
        print(f"per transformer block:          {per_layer // big.n_layers:,} parameters")
        print(f"matmul FLOPs per token (2 x N): {2 * (total - emb) / 1e9:.1f} GFLOP, plus attention over the context")
        """
    ),
    md(
        r"""
        The feed-forward network (SwiGLU: three 5120 x 14336 matrices per layer) holds 72% of the
        parameters; the embedding table and the (untied) output projection are 0.67 B each because
        the Tekken vocabulary has 131,072 entries. Attention is comparatively small (17%) because of
        GQA: wk and wv are 1024 x 5120, a quarter of wq.

        ## 3. The forward pass, stage by stage

        We run the small embedded model (`nemo-small`: dim 256, 8 query heads of 64 over 2 KV heads,
        so `8 * 64 = 512 != 256` just like the real model, and the real 131,072-token vocabulary)
        and write the forward pass out with the model's own modules, recording the shape at each
        stage. At the end we check that our unrolled pass gives the same logits as `model(tokens)`.

        The input is `<s>` (id 1) followed by the UTF-8 bytes of a sentence as Tekken *byte tokens*
        (ids 1000 + byte; Tekken reserves ids 1000..1255 for the 256 bytes), so no tokenizer is needed.
        """
    ),
    code(
        r"""
        model = embedded_model("nemo-small", seed=0, attn_backend="eager")
        print(notice("nemo-small", 0))
        a = model.args
        text = "The sea, the sea!"
        tokens = torch.tensor([[1] + [1000 + b for b in text.encode()]])
        B, T = tokens.shape
        print("tokens", list(tokens.shape), tokens[0, :8].tolist(), "...")
        """
    ),
    code(
        r"""
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
            qg = rec("q folded: [B, n_kv_heads, n_rep*T, head_dim]", q.reshape(B, a.n_kv_heads, a.n_rep * T, a.head_dim))
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
        """
    ),
    md(
        r"""
        The same stages as formulas in `ModelArgs` — checked against the shapes recorded above, then
        evaluated for the 12B model (batch 1, a 1000-token prompt):
        """
    ),
    code(
        r"""
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
        """
    ),
    md(
        r"""
        Things to notice in the 12B column:

        - `q` has 32 x 128 = **4096** features while the residual stream has **5120**: `wq` is
          [4096, 5120] and `wo` is [5120, 4096]; they are not square.
        - `k` and `v` have only 8 heads. The fold turns [1, 32, 1000, 128] queries into
          [1, 8, 4000, 128]: each KV head meets the 4 query heads of its group in one matmul, and the
          scores are [1, 8, 4000, 1000] — the same numbers as 32 separate [1000, 1000] matrices, with
          no copy of K or V. In a checkpoint, query head `h` belongs to KV head `h // 4`.
        - The logits are float32 [B, T, 131072]: 512 KiB per position, which is why `last_only=True`
          exists for prefill.

        ## 4. Rotary position embeddings

        RoPE rotates each pair of features of q and k by the angle `pos * inv_freq[i]`, with
        `inv_freq[i] = theta^(-2i / head_dim)`. Nemo uses `theta = 1e6` (Llama 2 used 1e4), which
        stretches the slowest wavelengths to millions of tokens.
        """
    ),
    code(
        r"""
        inv, attn_factor = inv_frequencies(big)
        wavelength = 2 * math.pi / inv
        print(f"{len(inv)} frequencies per head; attention factor {attn_factor}")
        print(f"fastest pair: wavelength {wavelength[0]:.2f} tokens; slowest: {wavelength[-1]:,.0f} tokens")
        print(f"pairs with a wavelength longer than the 131072-token context: {(wavelength > 131072).sum().item()}")
        """
    ),
    md(
        r"""
        The score between a rotated query at position m and a rotated key at position n depends only
        on m - n: shifting both positions by the same amount leaves it unchanged (up to float32 rounding).
        """
    ),
    code(
        r"""
        D = big.head_dim
        cos_big, sin_big = rope_table(big, 5000)
        q1, k1 = torch.randn(1, 1, 1, D), torch.randn(1, 1, 1, D)


        def score(m, n):
            qm = apply_rotary(q1, cos_big[m][None, None], sin_big[m][None, None])
            kn = apply_rotary(k1, cos_big[n][None, None], sin_big[n][None, None])
            return (qm * kn).sum().item()


        for m, n in [(10, 3), (110, 103), (4010, 4003)]:
            print(f"q at {m:>4}, k at {n:>4} (distance {m - n}): score {score(m, n):+.5f}")
        """
    ),
    md(
        r"""
        ### Long-context schemes

        Models trained on a short context are extended by changing the frequencies. `nemo_ref.rope`
        implements transformers' formulas (`modeling_rope_utils`): **linear** (position interpolation:
        every frequency divided by the factor), **dynamic** NTK (a larger base once the sequence
        exceeds the trained length), **YaRN** (interpolate only the slow frequencies, keep the fast
        ones, blend between; plus an attention factor), and **llama3** (the same idea with wavelength
        thresholds). Nemo itself uses none of them (its `params.json` has no scaling); below, each
        scheme extends a hypothetical 32k-token model by a factor 4, with Nemo's head_dim and theta.
        """
    ),
    code(
        r"""
        from nemo_ref.config import RopeScaling

        orig, factor = 32768, 4.0
        schemes = {
            "default": RopeScaling(),
            "linear": RopeScaling("linear", factor=factor),
            "dynamic": RopeScaling("dynamic", factor=factor, original_max_position_embeddings=orig),
            "yarn": RopeScaling("yarn", factor=factor, original_max_position_embeddings=orig,
                                beta_fast=32.0, beta_slow=1.0),
            "llama3": RopeScaling("llama3", factor=factor, original_max_position_embeddings=orig,
                                  low_freq_factor=1.0, high_freq_factor=4.0),
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
        ax1.set(xlabel="pair index i", ylabel="inv_freq (rad / token)", title="inverse frequencies (head_dim 128, theta 1e6)")
        ax2.set(xlabel="pair index i", ylabel="inv_freq / default", title=f"scaled / default (factor {factor:g}, original {orig})")
        ax2.axhline(1 / factor, color="gray", ls=":", lw=1)
        for ax in (ax1, ax2):
            ax.legend()
        plt.tight_layout()
        plt.show()
        """
    ),
    md(
        r"""
        Reading the right panel: linear divides every frequency by 4 (the fast pairs too, which blurs
        nearby positions); dynamic NTK raises the base, so the fast pairs barely move and the slow ones
        shrink most; YaRN and llama3 leave the fast pairs exactly alone (ratio 1), divide the slow ones
        by exactly 4 and ramp in between. `nemo_ref` also implements Llama-4-style query scaling
        (`rope.llama4_q_scale`), which later Mistral models declare in `params.json`.

        ## 5. The two checkpoint layouts and the q/k permutation

        The mistral layout (`consolidated.safetensors`) rotates **interleaved** pairs (2i, 2i+1) of each
        head. The HF layout's code (`rotate_half` in transformers' `modeling_mistral.py`) rotates pairs
        (i, i + head_dim/2). To make the HF code produce the same attention, the conversion script
        permutes the rows of `wq` and `wk` inside each head so that feature 2i lands at i and 2i+1 at
        i + head_dim/2. It is a view, a transpose and a reshape, in `nemo_ref/checkpoint.py`:
        """
    ),
    code(
        r"""
        import inspect

        from nemo_ref.checkpoint import permute_for_hf, unpermute_from_hf

        print(inspect.getsource(permute_for_hf))
        print(inspect.getsource(unpermute_from_hf))
        one_head = torch.arange(8)[:, None]  # one head of 8 features: which row goes where?
        print("mistral rows, in HF order:", permute_for_hf(one_head, 1).flatten().tolist())
        """
    ),
    md(
        r"""
        Now the numerical check, on real weights of a small model (layer 0 of `nemo-tiny`: 4 query
        heads of 32 over 1 KV head): queries and keys computed the mistral way (interleaved rotation on
        the original weights) and the HF way (`rotate_half` on the permuted weights, written out below
        exactly as transformers computes it) differ feature by feature, but every attention score is
        the same. `wv` and every other matrix are not permuted.
        """
    ),
    code(
        r"""
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
        """
    ),
    md(
        r"""
        `nemo_ref` keeps one internal convention (interleaved, the mistral layout) and un-permutes the
        HF layout's `wq`/`wk` when it loads them; saving in the HF layout permutes them again. A round
        trip through a real HF-layout checkpoint on disk (file names, key names and all):
        """
    ),
    code(
        r"""
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
        """
    ),
    md(
        r"""
        ## 6. The KV cache

        During generation each layer stores the keys and values of every past position, so a new
        token's query can attend to them without recomputing them. Per token of context that is
        `2 (K and V) x n_layers x n_kv_heads x head_dim x 2 bytes (bf16)`:
        """
    ),
    code(
        r"""
        per_token = 2 * big.n_layers * big.n_kv_heads * big.head_dim * 2
        print(f"2 x {big.n_layers} x {big.n_kv_heads} x {big.head_dim} x 2 bytes = {per_token:,} bytes = {per_token / 1024:.0f} KiB per token")
        cache = KVCache.allocate(big, max_batch=1, max_len=1024, dtype=torch.bfloat16, device="meta")
        print("nemo_ref's KVCache for 1024 positions (meta device):", cache.nbytes() / 1024 / 1024, "MiB;",
              "per layer K:", list(cache.k[0].shape), "= [max_batch, n_kv_heads, max_len, head_dim]")
        assert cache.nbytes() == per_token * 1024
        print(f"full 131072-token context: {per_token * 131072 / 2**30:.0f} GiB")
        """
    ),
    code(
        r"""
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
        """
    ),
    md(
        r"""
        ### Batched decode: rows at different positions

        `nemo_ref`'s cache is static: `setup_cache(max_batch, max_len)` preallocates
        [max_batch, n_kv_heads, max_len, head_dim] per layer, and each sequence owns one row. In a
        decode step every running sequence feeds one token, but the sequences have different lengths:
        `model(tokens [B, 1], start_pos=LongTensor[B], rows=...)` writes each row's new key/value at
        its own position and masks each row's keys beyond it. Below, two prompts of lengths 8 and 3 are
        prefilled into rows 0 and 1, then decoded together in one step; the result equals running each
        full sequence on its own without a cache.
        """
    ),
    code(
        r"""
        p0 = [1] + [1000 + b for b in b"Nemo 12"]  # 8 tokens
        p1 = [1, 1000 + ord("H"), 1000 + ord("i")]  # 3 tokens
        nxt = [1000 + ord("B"), 1000 + ord("!")]  # one new token per sequence

        tiny.setup_cache(max_batch=2, max_len=32)
        for row, p in enumerate((p0, p1)):
            tiny(torch.tensor([p]), 0, rows=torch.tensor([row]))  # prefill each prompt into its row
        step = tiny(torch.tensor([[nxt[0]], [nxt[1]]]), torch.tensor([len(p0), len(p1)]), rows=torch.tensor([0, 1]))
        print("decode step logits:", list(step.shape), "at positions", [len(p0), len(p1)])

        tiny.cache = None  # no cache: each full sequence attends within itself
        for row, p in enumerate((p0, p1)):
            alone = tiny(torch.tensor([p + [nxt[row]]]))[0, -1]
            print(f"row {row}: max |batched decode - full forward| = {(step[row, 0] - alone).abs().max().item():.2e}")
            assert torch.allclose(step[row, 0], alone, atol=1e-5)
        """
    ),
    md(
        r"""
        ## 7. Attention probabilities

        The probabilities recorded in section 3 (eager attention of `nemo-small`, whose result we
        checked against `model(tokens)`). **Random weights:** with weights of standard deviation 0.02,
        q·k is close to 0, so every allowed key gets about the same weight and each row is nearly
        uniform over positions 0..t (1/(t+1) each). What the picture shows is the *causal mask* and
        the GQA layout, not learned behaviour; a trained model's heads are sharply structured
        (attention sinks on `<s>`, previous-token heads, ...).
        """
    ),
    code(
        r"""
        labels = ["<s>"] + [chr(b) if b != 32 else "␣" for b in text.encode()]
        probs0 = probs_by_layer[0][0]  # layer 0: [n_heads, T, T]
        fig, axes = plt.subplots(1, 4, figsize=(16, 4.6), layout="constrained")
        for ax, head in zip(axes, (0, 3, 4, 7)):
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
        print("max |p - uniform causal| over all layers and heads:",
              max((p[0] - uniform).abs().max().item() for p in probs_by_layer))
        """
    ),
    md(
        r"""
        ## Where to go next

        - `nemo_ref/model.py` is the whole transformer (about 300 lines); `docs/architecture.md`
          describes the modules, the cache, the layouts and the numerics.
        - `02_sampling.ipynb`: what every sampling parameter does to these logits.
        - `03_kernels.ipynb`: the Triton kernels, and what bounds decode speed on an H100.
        - Real weights: `nemo_ref.load_model(path)` reads either published layout; everything above
          then applies with `big` instead of the small model.
        """
    ),
]


# ------------------------------------------------------------------------------------------------
# 02_sampling: what every sampling knob does
# ------------------------------------------------------------------------------------------------

NB02: list[Cell] = [
    md(
        r"""
        # 02 — Sampling: what every knob does, and where engines disagree

        A language model gives one logit per vocabulary entry; *sampling* turns them into one token.
        The OpenAI-style parameters (temperature, top_p, top_k, min_p, the penalties, logit_bias,
        seed) look standard, but popular engines apply them in different orders and scopes and get
        different distributions from the same request. `nemo_ref` writes one pipeline down
        (`docs/sampling.md`) and implements it three times — the pure-Python reference
        (`nemo_ref.sampling.reference`, the executable spec), the batched torch sampler and a Triton
        kernel — all producing the same distribution. The steps, for one position of one choice:

        | step | what | |
        |---|---|---|
        | S0 | constrain | grammar-forbidden tokens get -inf (structured outputs, tools); raw logprobs are taken here |
        | S1 | logit_bias | `z_i += bias_i` |
        | S2 | repetition_penalty r | each distinct token of prompt + output: `z/r` if `z > 0` else `z*r` |
        | S3 | presence / frequency | generated tokens only: `z_i -= c_i * freq + (c_i > 0) * pres` |
        | S4 | temperature 0 | greedy: the top token (lowest id among ties); S5..S9 skipped |
        | S5 | temperature T | `(z - max z) / T` |
        | S6 | min_p m | drop tokens with `p_i < m * p_max` |
        | S7 | top_k k | keep exactly the k first tokens (ties: lower id first) |
        | S8 | top_p p | walk the tokens by rank, keep while the mass before is `< p` |
        | S9 | draw | `u = U(seed, choice, step)`; the first id whose running probability exceeds `u` |

        We look at it on a hand-made logit vector first (readable), then on the logits of the embedded
        model over the real 131,072-token vocabulary (**random weights**: its distribution is nearly
        flat and its text is noise; the mechanics are the same as for the real model).
        """
    ),
    code(
        r"""
        import math

        import matplotlib.pyplot as plt
        import torch
        from IPython.display import Markdown, display

        import nemo_ref
        from nemo_ref import SamplingParams
        from nemo_ref.sampling import reference
        from nemo_ref.sampling.rng import uniform

        NEG_INF = -math.inf


        def kept(probs):
            return sorted(i for i, q in enumerate(probs) if q > 0)


        def md_table(header, rows):
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
            display(Markdown("\n".join(lines)))
        """
    ),
    md(
        r"""
        ## 1. One step, stage by stage

        A toy vocabulary of 10 words and the model's logits for the word after *"The cat sat on the"*.
        The history matters for the penalties: the prompt contains `the` and `cat`; so far this choice
        generated `mat`, `the`, `mat`. `reference.pipeline` returns the logits after every stage.
        """
    ),
    code(
        r"""
        words = ["mat", "floor", "sofa", "roof", "bed", "chair", "cat", "table", "moon", "the"]
        z = [4.0, 3.2, 2.9, 2.0, 1.8, 1.5, 1.2, 0.6, -0.5, -1.0]
        prompt_tokens = [9, 6]  # the, cat
        output_tokens = [0, 9, 0]  # mat, the, mat
        params = SamplingParams(
            logit_bias={2: 1.0},  # +1 for "sofa"
            repetition_penalty=1.3, presence_penalty=0.4, frequency_penalty=0.3,
            temperature=0.8, min_p=0.05, top_k=4, top_p=0.9, seed=7,
        )
        stages = reference.pipeline(z, params, prompt_tokens, output_tokens)
        settings = {
            "raw": "S0: softmax of the logits", "bias": "S1: logit_bias {sofa: +1}",
            "repetition": "S2: repetition 1.3 (the, cat, mat)",
            "presence_frequency": "S3: presence 0.4, frequency 0.3",
            "temperature": "S5: temperature 0.8", "min_p": "S6: min_p 0.05",
            "top_k": "S7: top_k 4", "top_p": "S8: top_p 0.9",
        }
        fig, axes = plt.subplots(2, 4, figsize=(16, 6.5), sharey=True, layout="constrained")
        for ax, (name, logits) in zip(axes.flat, stages):
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
        """
    ),
    md(
        r"""
        Reading the panels: the bias lifts `sofa`; the repetition penalty divides the positive logits of
        `mat`, `the` and `cat` (it counts the prompt too) by 1.3 and multiplies the negative one
        (`the`) by 1.3; presence/frequency then hit `mat` (generated twice) much harder than `the`
        (once), and ignore `cat` (only in the prompt). Temperature 0.8 sharpens. min_p drops
        everything below 5% of the top probability, top_k keeps four, and top_p walks
        `sofa, floor, ...` until the mass before the next token reaches 0.9. The draw then picks from
        what is left, renormalised.

        The same information as a table, from `nemo_ref.sampling.explain` (what `nemo-ref generate
        --explain N` prints for every step):
        """
    ),
    code(
        r"""
        from nemo_ref.sampling.explain import explain

        print(explain(z, params, prompt_tokens, output_tokens, step=0, choice=0, seed=7, top=10,
                      token_str=lambda i: words[i]))
        """
    ),
    md(
        r"""
        ### Temperature alone

        Temperature divides the (shifted) logits: below 1 it sharpens the distribution, above 1 it
        flattens it, and 0 means greedy. nemo_ref shifts by the maximum first, so any T > 0 is exact,
        with no clamping, however small.
        """
    ),
    code(
        r"""
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
        """
    ),
    md(
        r"""
        ## 2. Where engines disagree

        The worked examples of `docs/sampling.md`, each computed four ways. **nemo_ref** is
        `reference.distribution`. The other columns are *our transcription* of what each engine does,
        written out explicitly below with the file it comes from; they are small enough to check by eye.

        - **HF transformers** — `generation/utils.py::_get_logits_processor` adds the warpers in the
          order temperature, top_k, top_p, min_p; `generation/logits_process.py`: top_k keeps every
          token tied with the k-th (`scores < topk(...)[-1]` removed), top_p sorts ascending and
          removes tokens whose cumulative probability is `<= 1 - top_p`.
        - **vLLM** (v1) — `v1/sample/sampler.py`: temperature, then min_p (a logits processor), then
          `ops/topk_topp_sampler.py::apply_top_k_top_p`: top_k tie-inclusive, top_p like HF's.
        - **llama.cpp** — `common/common.h` default sampler chain: penalties, dry, top_k, typical_p,
          top_p, min_p, xtc, **temperature last**; `src/llama-sampling.cpp`: top_k keeps the first k
          after sorting (ties in whatever order the sort leaves them), top_p keeps tokens until the
          cumulative probability reaches p.
        """
    ),
    code(
        r"""
        def _t(z):
            return torch.tensor(z, dtype=torch.float64)


        def hf_transformers(z, T=1.0, top_k=0, top_p=1.0, min_p=0.0):
            # temperature -> top_k -> top_p -> min_p (transformers generation/utils.py)
            z = _t(z) / T
            if top_k > 0:
                z[z < z.topk(top_k).values[-1]] = NEG_INF  # every tie with the k-th survives
            if top_p < 1:
                s, idx = z.sort()  # ascending
                remove = s.softmax(0).cumsum(0) <= 1 - top_p
                remove[-1] = False  # min_tokens_to_keep = 1
                z[idx[remove]] = NEG_INF
            if min_p > 0:
                p = z.softmax(0)
                z[p < min_p * p.max()] = NEG_INF
            return z.softmax(0).tolist()


        def vllm(z, T=1.0, top_k=0, top_p=1.0, min_p=0.0):
            # temperature -> min_p -> top_k -> top_p (vllm v1 sampler)
            z = _t(z) / T
            if min_p > 0:
                p = z.softmax(0)
                z[p < min_p * p.max()] = NEG_INF
            s, idx = z.sort()  # ascending
            if top_k > 0:
                s[s < s[-top_k]] = NEG_INF  # tie-inclusive
            if top_p < 1:
                remove = s.softmax(0).cumsum(0) <= 1 - top_p
                remove[-1] = False
                s[remove] = NEG_INF
            return torch.empty_like(z).scatter_(0, idx, s).softmax(0).tolist()


        def llama_cpp(z, T=1.0, top_k=0, top_p=1.0, min_p=0.0):
            # top_k -> top_p -> min_p -> temperature LAST (llama.cpp default chain)
            z = _t(z)
            order = sorted(range(len(z)), key=lambda i: -z[i])  # a stable sort stands in for std::sort
            if top_k > 0:
                z[order[top_k:]] = NEG_INF
            if top_p < 1:
                p, cum, keep = z.softmax(0), 0.0, []
                for i in order:
                    keep.append(i)
                    cum += p[i].item()
                    if cum >= top_p:
                        break
                z[[i for i in order if i not in keep]] = NEG_INF
            if min_p > 0:
                p = z.softmax(0)
                z[p < min_p * p.max()] = NEG_INF
            return (z / T).softmax(0).tolist()


        def nemo_ref_dist(z, T=1.0, top_k=0, top_p=1.0, min_p=0.0):
            return reference.distribution(z, SamplingParams(temperature=T, top_k=top_k, top_p=top_p, min_p=min_p), [], [])


        engines = {"nemo_ref": nemo_ref_dist, "HF transformers": hf_transformers, "vLLM": vllm, "llama.cpp": llama_cpp}
        examples = [
            ("logits [3, 2, 1], top_p 0.8, T 0.5", [3.0, 2.0, 1.0], dict(T=0.5, top_p=0.8)),
            ("logits [3, 1, 0], min_p 0.2, T 2", [3.0, 1.0, 0.0], dict(T=2.0, min_p=0.2)),
            ("probs [.5, .3, .15, .05], top_p 0.82, min_p 0.2", [math.log(x) for x in (0.5, 0.3, 0.15, 0.05)],
             dict(top_p=0.82, min_p=0.2)),
            ("logits [2, 1, 1, 0], top_k 2", [2.0, 1.0, 1.0, 0.0], dict(top_k=2)),
        ]
        results = {(ex, e): f(zz, **kw) for ex, zz, kw in examples for e, f in engines.items()}
        md_table(["example", *[f"{e}: kept" for e in engines]],
                 [(ex, *[kept(results[ex, e]) for e in engines]) for ex, _, _ in examples])
        """
    ),
    md(
        r"""
        - **Temperature before or after truncation** (rows 1–2). With temperature first, T = 0.5
          sharpens [3, 2, 1] to probabilities [.87, .12, .02] and top_p 0.8 stops after the first token;
          llama.cpp truncates the *unsharpened* [.67, .24, .09] and keeps two. With T = 2 the other way
          round: the flattened distribution passes min_p 0.2 entirely, the raw one keeps only the top.
        - **Truncation order** (row 3): min_p first (vLLM, nemo_ref) removes the 0.05 token, so the
          renormalised top two already reach 0.82; top_p first (HF, llama.cpp) keeps three.
        - **Ties at the top_k boundary** (row 4): HF and vLLM keep every token tied with the k-th, so
          top_k 2 can keep 3 tokens; nemo_ref keeps exactly k, the lower id winning the tie
          (llama.cpp: whatever its sort leaves first).
        """
    ),
    code(
        r"""
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), layout="constrained")
        width = 0.2
        for ax, (ex, zz, _) in zip(axes, examples):
            for j, e in enumerate(engines):
                ax.bar([i + (j - 1.5) * width for i in range(len(zz))], results[ex, e], width, label=e)
            ax.set_title(ex, fontsize=9)
            ax.set_xticks(range(len(zz)), [f"token {i}" for i in range(len(zz))])
        axes[0].set_ylabel("final probability")
        axes[0].legend(fontsize=8)
        plt.show()
        """
    ),
    md(
        r"""
        If transformers is installed (it is a `dev` extra), we can check our transcription of its order
        against its real warpers, assembled the way `_get_logits_processor` assembles them:
        """
    ),
    code(
        r"""
        import warnings

        warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, imported by transformers
        try:
            from transformers.generation.logits_process import (
                LogitsProcessorList, MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
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
                real = chain(torch.zeros(1, 1, dtype=torch.long), _t(zz)[None]).softmax(-1)[0]
                print(f"{ex:<50} transformers keeps {kept(real.tolist())}; ours-for-HF {kept(results[ex, 'HF transformers'])}")
                assert torch.allclose(real, torch.tensor(results[ex, "HF transformers"], dtype=real.dtype))
        """
    ),
    md(
        r"""
        ### The repetition penalty's sign rule

        The CTRL paper (Keskar et al. 2019) divides every seen token's logit by the penalty, which
        *raises* a negative logit (makes a repeated unlikely token more likely). HF, vLLM and nemo_ref
        divide positive logits and multiply negative ones, so a repeated token always loses:
        """
    ),
    code(
        r"""
        zr = [2.0, -2.0, 0.0]
        ours = dict(reference.pipeline(zr, SamplingParams(repetition_penalty=1.3), [0, 1, 2], []))["repetition"]
        ctrl = [x / 1.3 for x in zr]
        md_table(["token", "logit", "nemo_ref (S2)", "CTRL's original (divide all)"],
                 [(i, zr[i], f"{ours[i]:.4f}", f"{ctrl[i]:.4f}") for i in range(3)])
        assert [round(x, 4) for x in ours] == [1.5385, -2.6, 0.0]
        """
    ),
    md(
        r"""
        ## 3. Empirical against exact

        `reference.sample(logits, params, prompt, output, step, choice)` draws with the counter-based
        uniform `U(seed, choice, step)`. Drawing at steps 0..N-1 with the same history gives N
        independent draws from the same distribution; their histogram must match
        `reference.distribution`, which we test with Pearson's chi-square (scipy) over the tokens that
        can occur. Tokens outside the support must never appear.
        """
    ),
    code(
        r"""
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
        """
    ),
    md(
        r"""
        ## 4. The real vocabulary (random weights)

        The same pipeline on the logits of the embedded model (`nemo-small`, **random weights**) for a
        real Tekken-encoded prompt. With random weights the logits are nearly flat, so the truncation
        stages have a lot to remove; a trained model's distribution is far more peaked and top_p 0.9
        typically keeps a handful of tokens (in the table, 0.0000 is a probability below 5e-5: the
        uniform share is 1/131072 = 7.6e-6). The batched torch sampler (the generation loop's default)
        gives the same distribution as the pure-Python reference over all 131,072 tokens.
        """
    ),
    code(
        r"""
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
        """
    ),
    md(
        r"""
        ## 5. Seeds: reproducible, and independent of the batch

        The draw for step s of choice c is `U(seed, choice, step)`, a pure function (SHA-256 of the
        three numbers). There is no generator state, so a seeded completion does not depend on what
        else shares the batch, on logprobs settings, or on earlier requests.
        """
    ),
    code(
        r"""
        for seed, choice, step in [(42, 0, 0), (42, 0, 0), (42, 0, 1), (42, 1, 0), (43, 0, 0)]:
            print(f"U(seed={seed}, choice={choice}, step={step}) = {uniform(seed, choice, step):.12f}")
        """
    ),
    code(
        r"""
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
        print(f"\nno seed given: the response reports seed {unseeded.seed}; replaying it reproduces the tokens:",
              again.token_ids == unseeded.token_ids)
        assert again.token_ids == unseeded.token_ids
        """
    ),
    md(
        r"""
        Batch independence, with the engine the server uses: the same seeded request decoded alongside
        two others (different prompts and settings, admitted in the same steps) produces the same tokens
        as alone.
        """
    ),
    code(
        r"""
        from nemo_ref.engine import Engine, Request
        from nemo_ref.generate import make_sequences

        engine = Engine(model, max_batch=4, max_len=64)
        requests = []
        for text, p in [("Once upon a time", gen),
                        ("Hello there", SamplingParams(temperature=1.5, top_k=5, seed=3, max_tokens=6)),
                        ("A B C", SamplingParams(temperature=0.0, max_tokens=6))]:
            _, seqs = make_sequences(tok, tok.encode(text, bos=True), p, context=64)
            requests.append(engine.submit(Request(seqs)))
        while not all(r.finished for r in requests):
            engine.step()
        in_batch = list(requests[0].sequences[0].output)
        print("alone:       ", a.token_ids)
        print("in a batch:  ", in_batch)
        assert in_batch == a.token_ids
        """
    ),
    md(
        r"""
        ## 6. Logprobs: raw by default

        The logprobs a response reports are, by default, those of the model (`raw`: log-softmax after the
        grammar mask only), unaffected by temperature, penalties or truncation — what OpenAI-style
        clients expect. `logprobs_mode="processed"` reports the final distribution's instead.
        """
    ),
    code(
        r"""
        for mode in ("raw", "processed"):
            p = SamplingParams(temperature=0.8, top_k=4, logprobs=True, top_logprobs=5, logprobs_mode=mode, seed=7)
            r = reference.sample(z, p, prompt_tokens, output_tokens, step=0)
            tops = ", ".join(f"{words[i]} {lp:.3f}" for i, lp in r.top)
            print(f"{mode:>9}: drew {words[r.token]!r} with logprob {r.logprob:.3f}; top: {tops}")
        """
    ),
]


# ------------------------------------------------------------------------------------------------
# 03_kernels: the Triton kernels, the roofline, the benchmarks
# ------------------------------------------------------------------------------------------------

NB03: list[Cell] = [
    md(
        r"""
        # 03 — Kernels: attention and sampling in Triton, and what bounds decode speed

        `nemo_ref/kernels/` (the `kernels/` folder, installed as `nemo_ref.kernels`) holds three
        Triton kernels: a causal flash-attention **prefill**, a split-KV **decode** attention that
        serves the 4 query heads of a GQA group with one read of the KV cache (plus a combine
        kernel), and a sort-free **sampler** that runs the whole S0..S9 pipeline of 02_sampling in one
        program per row.

        This notebook runs them in **Triton's interpreter** (`TRITON_INTERPRET=1`: the kernels
        execute on CPU tensors, program after program, slowly, but with the same semantics), checks
        them against references on small inputs, then turns to the GPU side: what the compiler
        makes of them for an H100, the bandwidth floor of Nemo 12B's decode, and the benchmark
        results committed in `benchmarks/`.

        The interpreter must be switched on **before** the kernel modules are imported: `@triton.jit`
        reads the variable when the decorated function is defined.
        """
    ),
    code(
        r"""
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
        from IPython.display import Markdown, display

        from nemo_ref.kernels import attention as attn_kernels
        from nemo_ref.kernels import sampling as sampling_kernels
        from nemo_ref import ModelArgs, SamplingParams, Transformer
        from nemo_ref.demo import embedded_model, notice
        from nemo_ref.sampling import reference

        ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "pyproject.toml").exists())
        torch.manual_seed(0)


        def md_table(header, rows):
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
            display(Markdown("\n".join(lines)))
        """
    ),
    md(
        r"""
        ## 1. Attention

        `attn_kernels.attention(q, k, v, start_pos)` is what the model calls with
        `attn_backend="triton"`: q `[B, H, T, D]` (RoPE applied), k and v the cache slice
        `[B, Hkv, S, D]`, and `start_pos[b]` the position of row b's first query. T = 1 runs the decode
        kernel, anything longer the prefill kernel.

        ### The whole model on the kernels

        The simplest end-to-end check: a small embedded model (**random weights**) with the Triton backend
        against the plain float32 math of the `eager` backend — a prefill without cache, then a
        prefill into the cache and a decode step.
        """
    ),
    code(
        r"""
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
        model.setup_cache(max_batch=1, max_len=64)
        model(tokens, 0, last_only=True)  # prefill kernel, writing the cache
        triton_next = model(nxt, T)[:, -1]  # decode kernel (T = 1) over the cache
        print(f"interpreter time: {time.perf_counter() - t0:.1f} s")
        model.cache = None

        for name, a, b in [("prefill logits", triton_prefill, eager_prefill), ("decode logits", triton_next, eager_next)]:
            print(f"{name:>15}: max |triton - eager| = {(a - b).abs().max().item():.2e}")
            assert torch.allclose(a, b, atol=1e-4)
        """
    ),
    md(
        r"""
        ### Decode over rows at different positions, against torch's own attention

        A batched decode step has one query per row, each row at its own position. The reference is
        torch's `scaled_dot_product_attention` with `enable_gqa=True` and a per-row mask: an
        implementation independent of ours. Shapes use Nemo's real head geometry (32 query heads of
        128 over 8 KV heads).
        """
    ),
    code(
        r"""
        B, H, Hkv, D, S = 3, 32, 8, 128, 80
        start_pos = torch.tensor([5, 41, 79])  # row b attends keys 0..start_pos[b]
        q = torch.randn(B, H, 1, D)
        k, v = torch.randn(B, Hkv, S, D), torch.randn(B, Hkv, S, D)

        t0 = time.perf_counter()
        out = attn_kernels.attention(q, k, v, start_pos)
        elapsed = time.perf_counter() - t0
        visible = (torch.arange(S)[None, :] <= start_pos[:, None])[:, None, None, :]  # [B, 1, 1, S]
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, enable_gqa=True)
        print(f"decode kernel ({elapsed:.2f} s in the interpreter): max |kernel - torch sdpa| = {(out - expected).abs().max().item():.2e}")
        assert torch.allclose(out, expected, atol=1e-5)
        """
    ),
    md(
        r"""
        ### How split-KV decode works

        At batch 1 a decode step has only 8 KV heads of work: 8 programs would leave most of an
        H100's 132 SMs idle. The decode kernel therefore cuts each row's keys into **splits**; each
        program (split, KV head, row) computes the attention of the 4 query heads of its group over
        its split only — normalised output `o_s` and log-sum-exp `lse_s` — and a second kernel
        combines the splits: `o = Σ exp(lse_s - lse) o_s` with `lse = log Σ exp(lse_s)`. The same
        identity is what lets flash attention process keys tile by tile with a running maximum. In
        plain torch, on one query head:
        """
    ),
    code(
        r"""
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
        """
    ),
    md(
        r"""
        ## 2. Sampling

        `sampling_kernels.probabilities(...)` returns the final distribution the kernel draws from;
        `sampling_kernels.sample(...)` draws with the uniform `u` given per row. Every parameter is
        per row, so one launch serves a batch of requests with different settings. Checked against
        `reference.distribution` (the pure-Python spec, float64) on four rows with different
        settings. A vocabulary of 8192 keeps the interpreter fast (the real 131,072 works the same,
        16 times slower here).
        """
    ),
    code(
        r"""
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
            table.append((b, f"T={p.temperature:g} top_p={p.top_p:g} top_k={p.top_k} min_p={p.min_p:g}",
                          int((exact > 0).sum()), same_support, f"{diff:.1e}"))
            assert same_support and diff < 1e-5
        md_table(["row", "settings", "tokens kept", "same kept set", "max abs diff vs reference"], table)
        """
    ),
    md(
        r"""
        The engine's hook, `sample_rows(logits, rows)`, takes the same `SampleRow`s as the batched
        torch sampler (parameters, seed, choice, step, history) and draws the same tokens:
        """
    ),
    code(
        r"""
        from nemo_ref.sampling.batched import SampleRow, sample_batch

        hist = [5, 9, 9, 700]
        srows = [
            SampleRow(SamplingParams(temperature=0.8, top_p=0.9, repetition_penalty=1.2), seed=11, choice=0, step=3,
                      prompt_tokens=hist, output_tokens=[9]),
            SampleRow(SamplingParams(temperature=1.0, top_k=20, frequency_penalty=0.5, logprobs=True, top_logprobs=3),
                      seed=12, choice=1, step=0, prompt_tokens=hist, output_tokens=[700, 700]),
        ]
        by_kernel = sampling_kernels.sample_rows(logits[:2], srows)
        by_torch = sample_batch(logits[:2], srows)
        for kr, tr in zip(by_kernel, by_torch):
            print(f"kernel token {kr.token} (logprob {kr.logprob:.5f})   torch token {tr.token} (logprob {tr.logprob:.5f})")
            assert kr.token == tr.token
        """
    ),
    md(
        r"""
        ### How the sampler avoids sorting

        top_k and top_p are defined by the rank order, which suggests sorting 131,072 logits per row:
        slow on a GPU. The kernel instead maps each float32 value to an int32 **key** whose integer
        order is the float order, and binary-searches the key range for the cut ("the largest key t
        with at least k tokens — or mass p — at or above it"), each step one pass over the row; the
        tokens tied at the cut are then admitted in ascending id order, which gives the spec's exact
        tie rule. The key trick in torch:
        """
    ),
    code(
        r"""
        y = torch.tensor([-math.inf, -3.5, -1.0, -0.0, 0.0, 1e-30, 0.5, 2.0, 7.25])
        bits = torch.where(y == 0, torch.zeros_like(y), y).view(torch.int32)
        key = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
        for a, b in zip(y.tolist(), key.tolist()):
            print(f"{a:>10} -> key {b:>12}")
        assert torch.all(key[1:] >= key[:-1])  # same order as the floats
        """
    ),
    md(
        r"""
        ## 3. What the compiler makes of them for an H100

        No GPU is needed to *compile* for one: `triton.compile(..., target=GPUTarget("cuda", 90, 32))`
        runs the real pipeline down to sm_90 machine code with the `ptxas` bundled in the Triton
        wheel. `python -m nemo_ref.kernels._compile` does it for every kernel at its launch
        configuration and reports registers per thread, spills, shared memory and whether the
        Hopper tensor-core instruction `wgmma` is used. (It runs in a subprocess because it needs
        `TRITON_INTERPRET` unset.)
        """
    ),
    code(
        r"""
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        run = subprocess.run([sys.executable, "-m", "nemo_ref.kernels._compile"], env=env, capture_output=True,
                             text=True, timeout=600, cwd=ROOT)
        print(run.stdout or run.stderr[-3000:])
        print("exit status", run.returncode)
        """
    ),
    md(
        r"""
        Reading it: the bf16 prefill uses `wgmma` with 128x64 tiles and no spills; the float32
        variants (kept for exact testing) use many more registers. Decode does not need tensor cores
        to be fast — it is bound by memory, as the next section shows.

        ## 4. The roofline of Nemo 12B decode

        Generating one token at batch 1 reads every weight matrix once (23.15 GB in bf16, section 2
        of 01_model) plus the whole KV cache of the sequence (160 KiB per token of context). Nothing
        can be faster than moving those bytes at the card's memory bandwidth. Measured copy bandwidth
        on this workplace's cards: H100 SXM ~3.0 TB/s, H200 ~4.3 TB/s.
        """
    ),
    code(
        r"""
        big = ModelArgs.preset("nemo-12b")
        m12 = Transformer(big, device="meta")
        n_params = m12.num_parameters()
        weight_bytes = 2 * (n_params - m12.tok_embeddings.weight.numel())  # embedding: one row gathered
        kv_per_token = 2 * big.n_layers * big.n_kv_heads * big.head_dim * 2
        print(f"weights read per step: {weight_bytes / 1e9:.2f} GB; KV cache: {kv_per_token / 1024:.0f} KiB per token of context")

        cards = {"H100 (~3.0 TB/s)": 3.0e12, "H200 (~4.3 TB/s)": 4.3e12}
        ctx = torch.logspace(0, math.log10(131072), 300)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.5))
        for name, bw in cards.items():
            ax1.plot(ctx, bw / (weight_bytes + kv_per_token * ctx), label=name)
        ax1.set_xscale("log")
        ax1.set(xlabel="context length (tokens)", ylabel="tokens / s (upper bound)",
                title="batch-1 decode: bandwidth floor", ylim=(0, None))
        ax1.legend()

        # Batch B: the weights are read once per step for all B rows, each row reads its own cache,
        # and the caches must fit in the card's memory next to the weights.
        capacity = {"H100 (~3.0 TB/s)": 80e9, "H200 (~4.3 TB/s)": 141e9}
        peak = 790e12  # bf16 dense matmul FLOP/s, measured on an H100
        rows = []
        for context in (4096, 32768):
            flops_per_token = 2 * (n_params - m12.tok_embeddings.weight.numel()) + 4 * big.n_layers * big.n_heads * big.head_dim * context
            for name, bw in cards.items():
                max_batch = int((capacity[name] - 2 * n_params) // (kv_per_token * context))
                batch = torch.arange(1, max_batch + 1, dtype=torch.float64)
                t_mem = (weight_bytes + batch * kv_per_token * context) / bw
                t_compute = batch * flops_per_token / peak
                step = torch.maximum(t_mem, t_compute)
                line, = ax2.plot(batch, batch / step, label=f"{name}, context {context}")
                ax2.plot(batch[-1:], (batch / step)[-1:], "o", color=line.get_color())
                rows.append((f"{context:,}", name, max_batch, f"{(batch / step)[-1]:.0f}",
                             f"{1e3 * t_mem[-1]:.1f} ms", f"{1e3 * t_compute[-1]:.1f} ms"))
        ax2.set_xscale("log", base=2)
        ax2.set(xlabel="batch size (sequences decoded together)", ylabel="tokens / s, all rows (upper bound)",
                title="batched decode, up to the largest batch that fits (dot)")
        ax2.legend(fontsize=8)
        plt.tight_layout()
        plt.show()

        md_table(["context", "card", "largest batch that fits", "tok/s there", "step: memory time", "step: compute time"], rows)
        md_table(["context", *cards], [
            (f"{c:,}", *[f"{bw / (weight_bytes + kv_per_token * c):.0f} tok/s" for bw in cards.values()])
            for c in (1, 4096, 32768, 131072)
        ])
        """
    ),
    md(
        r"""
        At short context the weights dominate: at most ~130 tokens/s on an H100 and ~186 on an H200,
        however good the kernels. At 128k the KV cache (20 GiB) nearly doubles the bytes per step.
        Batching is the way up: B sequences share one read of the weights, so throughput grows almost
        linearly at first; then the KV caches, which grow with B, dominate the bytes, and memory
        *capacity* ends the curve. Even at the largest batch that fits, a step's matmuls take a few
        milliseconds against tens of milliseconds of memory traffic: decode is memory-bound at every
        batch an 80 GB card can hold (prefill, with thousands of tokens per weight read, is the
        compute-bound phase). The decode attention kernel's job is to read the KV cache at close to
        full bandwidth; the sampler's is to cost next to nothing.

        ## 5. Benchmark results in `benchmarks/`

        Kernel timings are taken only on a GPU, by one script (`scripts/gpu_bench.py`, which checks
        every kernel against its reference before timing anything), and committed as
        `benchmarks/gpu-<card>.json` with the card's name; other scripts record CPU results (the
        sampler, the model against transformers). Whatever is committed is rendered below.
        """
    ),
    code(
        r"""
        bench = ROOT / "benchmarks"
        documents = {f.name: json.loads(f.read_text()) for f in sorted(bench.glob("*.json"))} if bench.is_dir() else {}
        gpu_reports = {n: d for n, d in documents.items()
                       if isinstance(d, dict) and "card" in d and not d.get("dry_run") and "cpu" not in str(d["card"]).lower()}
        print(f"{bench.relative_to(ROOT)}/: {', '.join(documents) or 'no JSON results'}")
        if gpu_reports:
            display(Markdown("GPU runs: " + ", ".join(f"`{n}` ({d['card']}, {d.get('date', '?')})" for n, d in gpu_reports.items())))
        else:
            display(Markdown("**No GPU run exists yet.** No file in `benchmarks/` holds timings from a GPU, so this "
                             "notebook has no measured kernel speed to show: the roofline of section 4 is the only "
                             "speed information here. Results from CPU runs, if any, follow."))
        """
    ),
    md(
        r"""
        ### GPU runs

        For each GPU report: the correctness checks that gated the timings, then prefill throughput
        against torch's SDPA, decode attention's bandwidth against the card's measured copy bandwidth
        (the bound of section 4), the sampler against a sort-based torch sampler, and batch-1 decode of
        the full-size architecture against the `copy bandwidth / 23.15 GB` floor.
        """
    ),
    code(
        r"""
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
                    ax.plot(*zip(*pts), "o-", label=y, **kw)


        for name, rep in gpu_reports.items():
            display(Markdown(f"#### `{name}`: {rep['card']}"))
            checks = rep.get("checks", [])
            print(f"torch {rep.get('torch')}, triton {rep.get('triton')}, {rep.get('date')}; "
                  f"copy bandwidth {rep.get('copy_gb_s', float('nan')):.0f} GB/s; "
                  f"checks passed: {sum(c['ok'] for c in checks)} of {len(checks)}")
            panels = [k for k in ("prefill", "decode", "sampler") if rep.get(k)]
            if panels:
                fig, axes = plt.subplots(1, len(panels) + ("decode" in panels), figsize=(5.5 * (len(panels) + 1), 4), squeeze=False)
                axes = list(axes[0])
                if "prefill" in panels:
                    ax = axes.pop(0)
                    lines(ax, rep["prefill"], "seq_len", ["triton_tflops", "sdpa_tflops"])
                    ax.set(xscale="log", xlabel="sequence length (causal, batch 1)", ylabel="TFLOP/s", title="prefill")
                    ax.legend(fontsize=8)
                if "decode" in panels:
                    for ax, (x, fixed) in zip(axes[:2], [("context", "batch"), ("batch", "context")]):
                        # one series: the other variable at its most common value (batch 1; context 4k)
                        values = [r[fixed] for r in rep["decode"]]
                        common = max(set(values), key=values.count)
                        recs = [r for r in rep["decode"] if r[fixed] == common]
                        lines(ax, recs, x, ["triton_gb_s", "sdpa_gb_s"])
                        ax.axhline(rep.get("copy_gb_s", float("nan")), color="gray", ls=":", label="copy bandwidth")
                        ax.set(xscale="log", xlabel=x, ylabel="GB/s of KV read", title=f"decode attention, {fixed} {common}")
                        ax.legend(fontsize=8)
                    axes = axes[2:]
                if "sampler" in panels:
                    ax = axes.pop(0)
                    for setting in dict.fromkeys(r["setting"] for r in rep["sampler"]):
                        recs = [r for r in rep["sampler"] if r["setting"] == setting]
                        for y, style in (("triton_ms", "o-"), ("torch_sort_ms", "x--")):
                            pts = sorted((r["batch"], r[y]) for r in recs)
                            ax.plot(*zip(*pts), style, label=f"{y[:-3]}, {setting}")
                    ax.set(xscale="log", yscale="log", xlabel="batch (rows of 131072 logits)", ylabel="ms", title="sampler")
                    ax.legend(fontsize=7)
                plt.tight_layout()
                plt.show()
            for key in ("prefill", "decode", "sampler", "e2e"):
                show_table(rep.get(key, []), key)
            failed = [c for c in checks if not c["ok"]]
            if failed:
                show_table(failed, "FAILED checks")
        """
    ),
    md(
        r"""
        ### Other results

        Every other result file, with the Markdown summary its script wrote next to it (if any), and
        a plot of its timings against batch size or length where it has them.
        """
    ),
    code(
        r"""
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
                numeric = lambda k: all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) for r in flat)  # noqa: E731
                x = next((k for k in X_NAMES if numeric(k)), None)
                times = [k for k in flat[0] if numeric(k) and k.endswith("median_ms")] or [
                    k for k in flat[0] if numeric(k) and k.endswith("_ms")]
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
        """
    ),
]


NOTEBOOKS: dict[str, list[Cell]] = {
    "01_model.ipynb": NB01,
    "02_sampling.ipynb": NB02,
    "03_kernels.ipynb": NB03,
}


def build(cells: list[Cell]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, (kind, src) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        cell.id = f"c{i:02d}"  # fixed ids: reproducible files
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(cells: list[Cell]) -> str:
    return nbformat.writes(build(cells)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    args = parser.parse_args(argv)
    stale = []
    for name, cells in NOTEBOOKS.items():
        path = NOTEBOOK_DIR / name
        text = render(cells)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"out of date (run python scripts/make_notebooks.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
