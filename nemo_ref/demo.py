"""The embedded default model: Nemo-shaped, small, with deterministic RANDOM weights.

It needs no download, so the demo, the tests and the notebooks run anywhere. Its outputs are noise
over the real Tekken vocabulary; everything produced with it says so.

A plain ``init_random`` model is useless for showing what sampling does: with normal(0, 0.02)
weights its next-token distributions are nearly uniform over 131072 tokens (top token ~1e-5), so
temperature, top_p, top_k and min_p all leave practically the same soup. ``embedded_model``
therefore shapes two tensors after ``init_random`` (``shape_next_token``) so that its next-token
distributions look like a trained model's: the top token usually holds 0.2-0.9 of the mass, a few
alternatives hold most of the rest, and a long thin tail holds the remainder. It is still random:
nothing was trained, and the text is noise. The figures are measured by
``scripts/measure_embedded.py`` and recorded in docs/architecture.md ("The embedded model").
"""

from __future__ import annotations

import math

import torch

from .backends import default_attn_backend
from .config import ModelArgs
from .model import Transformer

DEFAULT_PRESET = "nemo-small"
RANDOM_WEIGHTS_NOTICE = (
    "NOTE: random weights (embedded default model '{preset}', seed {seed}); the text is noise. "
    "Use --checkpoint DIR for real weights."
)

# Tekken's id layout: 1000 control tokens, then the 256 byte tokens, then merges in rank order.
N_CONTROL = 1000
N_BYTES = 256
ZIPF_EXPONENT = 2.0  # the prior's slope: log p(rank r) = -alpha * ln r + const
CONTEXT_SCALE = 4.0  # std of the context-dependent logit term, in nats
CONTROL_PENALTY = 20.0  # nats below the tail: control tokens (EOS included) practically never sampled


# The bytes a trained Tekken model writes alone all the time: whitespace, ASCII punctuation and
# digits. They seldom merge with letters (BPE pre-splits them off words and numbers), so a lone
# `,`, `"`, `}` or `]` is as common as the top merges; a lone letter is rare (letters merge).
FREQUENT_BYTES = b" \n\t!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~0123456789"


def zipf_log_prior(vocab_size: int, alpha: float = ZIPF_EXPONENT) -> torch.Tensor:
    """A Zipf log-prior over token ids: -alpha * ln(rank) [V].

    Merges are ranked in id order (Tekken stores them by merge rank, a rough frequency order), so
    the frequent tokens are whole pieces of words. The FREQUENT_BYTES' byte tokens are interleaved
    with the top merges (ranks 1, 3, 5, ..., in byte order), as in a trained model's unigram
    frequencies, where JSON's and prose's punctuation ranks with the commonest words; without
    them, a grammar that needs a lone `}` or `]` fights a model that has never seen one (item 8
    of benchmarks/server-hardening.md). The other byte tokens and the control tokens are ranked
    last (the tail), and control tokens sit a further CONTROL_PENALTY nats below it.
    """
    ids = torch.arange(vocab_size, dtype=torch.float64)
    first_merge = N_CONTROL + N_BYTES
    frequent = torch.tensor(list(FREQUENT_BYTES)) + N_CONTROL
    frequent = frequent[frequent < vocab_size]
    # merge m (0-based) is preceded by min(m + 1, len(frequent)) frequent bytes: rank 2m + 2 up to
    # the last interleaved byte, then m + 1 + len(frequent)
    m = ids - first_merge
    merge_rank = torch.where(m < len(frequent), 2 * m + 2, m + 1 + len(frequent))
    rank = torch.where(ids >= first_merge, merge_rank, torch.full_like(ids, vocab_size))
    rank[frequent] = 2 * torch.arange(len(frequent), dtype=torch.float64) + 1
    prior = -alpha * torch.log(rank)
    prior[: min(N_CONTROL, vocab_size)] -= CONTROL_PENALTY
    return prior


@torch.no_grad()
def shape_next_token(
    model: Transformer, seed: int, alpha: float = ZIPF_EXPONENT, beta: float = CONTEXT_SCALE
) -> Transformer:
    """Give ``model``'s next-token distributions a trained-looking shape; deterministic in ``seed``.

    The logits are ``output(norm(x))`` with ``x`` the last position's residual stream, which is
    dominated by the last token's embedding (every layer reads a unit-RMS input, so what it adds is
    small next to an embedding of RMS 1). Two tensors are rewritten:

    - ``tok_embeddings``: entries normal(0, 1), and coordinate 0 the constant ``sqrt(dim)`` for every
      token: a bias unit. After the final RMSNorm, h_0 ~= sqrt(dim / 2) in every context (up to a
      few per cent: the rest of x varies in length), and the rest of h has length ~sqrt(dim / 2).
    - ``output.weight``: column 0 = prior / sqrt(dim / 2), the Zipf log-prior of ``zipf_log_prior``;
      the other columns normal(0, beta / sqrt(dim / 2)), so that each token's context term
      w_t . h_rest is ~normal(0, beta) for a given context, and different contexts (mostly:
      different last tokens) draw different terms. Control tokens get no context term.

    logit_t ~= -alpha ln rank_t + beta g_t: the context picks a few winners among the frequent
    tokens (the bigger a token's prior, the less luck it needs), the rest is a thin Zipf tail.
    The model is bigram-like (the last token decides most of the distribution), which is enough to
    make every sampling knob visibly matter.
    """
    args = model.args
    if args.tied_embeddings:
        raise ValueError("shape_next_token needs untied embeddings (the output projection is rewritten)")
    dim, vocab = args.dim, args.vocab_size
    g = torch.Generator().manual_seed(seed * 1_000_003 + 17)  # apart from init_random's stream
    half = math.sqrt(dim / 2)
    emb = torch.randn(vocab, dim, generator=g, dtype=torch.float32)
    emb[:, 0] = math.sqrt(dim)
    out = torch.randn(vocab, dim, generator=g, dtype=torch.float32) * (beta / half)
    out[:, 0] = (zipf_log_prior(vocab, alpha) / half).float()
    out[: min(N_CONTROL, vocab), 1:] = 0.0
    model.tok_embeddings.weight.copy_(emb.to(model.tok_embeddings.weight.dtype))
    model.output.weight.copy_(out.to(model.output.weight.dtype))
    return model


def embedded_model(
    preset: str = DEFAULT_PRESET,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attn_backend: str | None = None,
) -> Transformer:
    """A preset model with ``init_random(seed)`` weights, next-token shape from ``shape_next_token``:
    identical on every machine, random (untrained) all the same."""
    args = ModelArgs.preset(preset)
    # Built in the target dtype: init_random draws float32 and casts per parameter (the same values
    # as a float32 model cast afterwards), so a 7B preset in bf16 never needs its float32 copy.
    backend = attn_backend or default_attn_backend(device)
    model = Transformer(args, attn_backend=backend, dtype=dtype).init_random(seed)
    shape_next_token(model, seed)
    model.random_weights = True
    return model.to(device=device).eval()


def notice(preset: str = DEFAULT_PRESET, seed: int = 0) -> str:
    return RANDOM_WEIGHTS_NOTICE.format(preset=preset, seed=seed)


@torch.no_grad()
def next_token_shape(model: Transformer, n_prompts: int = 100, seed: int = 0, length: int = 16) -> dict:
    """Statistics of the next-token distribution over ``n_prompts`` random prompts.

    Each prompt is BOS + ``length`` token ids drawn uniformly from the ordinary (non-control) ids;
    the prompts run as one batch. Returns the median and 10th/90th percentiles of the top-1
    probability and of the entropy (nats), the median number of tokens with p >= 0.02, the median
    top-5 and top-20 mass, and how many distinct top tokens the prompts have.
    """
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(N_CONTROL, model.args.vocab_size, (n_prompts, length), generator=g)
    ids = torch.cat([torch.ones(n_prompts, 1, dtype=torch.long), ids], dim=1)  # BOS is id 1
    logits = model(ids.to(model.tok_embeddings.weight.device), last_only=True)[:, -1].double().cpu()
    p = torch.softmax(logits, -1)  # [n, V]
    top = p.topk(20, dim=-1).values  # [n, 20]
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)  # [n]

    def q(x: torch.Tensor, f: float) -> float:
        return float(x.double().quantile(f))

    return {
        "prompts": n_prompts,
        "top1_median": q(top[:, 0], 0.5),
        "top1_p10": q(top[:, 0], 0.1),
        "top1_p90": q(top[:, 0], 0.9),
        "entropy_median": q(entropy, 0.5),
        "entropy_p10": q(entropy, 0.1),
        "entropy_p90": q(entropy, 0.9),
        "plausible_median": q((p >= 0.02).sum(-1), 0.5),
        "top5_mass_median": q(top[:, :5].sum(-1), 0.5),
        "top20_mass_median": q(top.sum(-1), 0.5),
        "distinct_top_tokens": len(set(p.argmax(-1).tolist())),
    }
