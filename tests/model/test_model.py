"""The Transformer: KV-cache decoding, batched rows at different positions, the full-size architecture.

The expected names and shapes of Nemo 12B are written out here from the published facts
(docs/architecture.md "The model's facts"), independently of the model code.
"""

from __future__ import annotations

import pytest
import torch

from nemo_ref.checkpoint import mistral_to_hf_name
from nemo_ref.config import ModelArgs
from nemo_ref.model import Transformer
from tests.support import rel_err

# Small and fast, still Nemo-shaped: n_heads * head_dim = 128 != dim = 64, GQA 2:1.
SMALL = ModelArgs(
    dim=64, n_layers=2, head_dim=32, hidden_dim=160, n_heads=4, n_kv_heads=2, vocab_size=300, max_seq_len=128
)
TOL = 1e-5


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request, make_model):
    return make_model(SMALL, seed=1, attn_backend=request.param)


def seq(n: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, SMALL.vocab_size, (batch, n), generator=torch.Generator().manual_seed(seed))


def full_forward(model: Transformer, toks: torch.Tensor) -> torch.Tensor:
    return model(toks)  # no cache: the tokens attend within themselves


def test_token_by_token_decode_equals_the_full_forward(model):
    toks = seq(24, batch=2)
    full = full_forward(model, toks)
    kv = model.new_cache(2, 32)
    steps = torch.cat([model(toks[:, t : t + 1], t, cache=kv) for t in range(toks.shape[1])], dim=1)
    assert rel_err(steps, full) <= TOL


@pytest.mark.parametrize("chunks", [(5, 7, 1, 11), (1, 23), (12, 12)])
def test_chunked_prefill_equals_the_full_forward(model, chunks):
    toks = seq(24, batch=2, seed=1)
    full = full_forward(model, toks)
    kv = model.new_cache(2, 24)
    out, pos = [], 0
    for n in chunks:
        out.append(model(toks[:, pos : pos + n], pos, cache=kv))
        pos += n
    assert rel_err(torch.cat(out, dim=1), full) <= TOL


def test_last_only_returns_the_last_position(model):
    toks = seq(9)
    full = full_forward(model, toks)
    last = model(toks, last_only=True)
    assert last.shape == (1, 1, SMALL.vocab_size)
    assert torch.allclose(last[:, 0], full[:, -1], rtol=0, atol=TOL * full.abs().max().item())


def test_batched_decode_rows_at_different_positions_equal_each_row_alone(model):
    """Three sequences of different lengths in cache rows 2, 0, 1, decoded together for 6 steps."""
    prompts = [seq(5, seed=10), seq(11, seed=11), seq(2, seed=12)]
    rows = torch.tensor([2, 0, 1])
    continuation = seq(6, batch=3, seed=13)  # teacher-forced tokens, one column per step
    kv = model.new_cache(3, 32)
    for prompt, row in zip(prompts, rows, strict=True):  # prefill each alone into its own row
        model(prompt, 0, cache=kv, rows=row.view(1))
    lengths = torch.tensor([p.shape[1] for p in prompts])
    batched = []
    for step in range(6):
        batched.append(model(continuation[:, step : step + 1], lengths + step, cache=kv, rows=rows))
    batched = torch.cat(batched, dim=1)  # [3, 6, V]
    for i, prompt in enumerate(prompts):
        alone = full_forward(model, torch.cat([prompt, continuation[i : i + 1]], dim=1))
        assert rel_err(batched[i], alone[0, -6:]) <= TOL, f"row {i}"


def test_batched_prefill_with_tensor_start_pos_and_default_rows(model):
    """start_pos as a tensor without rows=: rows 0..B-1, each continuing from its own position."""
    a, b = seq(10, seed=20), seq(4, seed=21)
    kv = model.new_cache(2, 32)
    model(a[:, :6], 0, cache=kv, rows=torch.tensor([0]))
    model(b[:, :1], 0, cache=kv, rows=torch.tensor([1]))
    nxt = torch.cat([a[:, 6:9], b[:, 1:4]])
    out = model(nxt, torch.tensor([6, 1]), cache=kv)
    assert rel_err(out[0], full_forward(model, a[:, :9])[0, 6:]) <= TOL
    assert rel_err(out[1], full_forward(model, b)[0, 1:]) <= TOL


def test_logits_are_float32_for_a_bfloat16_model(make_model):
    m = make_model(SMALL, dtype=torch.bfloat16)
    assert m(seq(3)).dtype == torch.float32


def test_positions_beyond_the_cache_are_an_error(model):
    kv = model.new_cache(1, 8)
    with pytest.raises(ValueError, match="positions"):
        model(seq(3), 6, cache=kv)


# ---- the full-size architecture, on the meta device ------------------------------------------


def nemo_12b_expected() -> dict[str, tuple[int, ...]]:
    """Mistral-layout names and shapes of Nemo 12B from the published facts (docs/architecture.md)."""
    dim, hidden, q, kv, vocab = 5120, 14336, 32 * 128, 8 * 128, 131072
    out = {"tok_embeddings.weight": (vocab, dim)}
    for i in range(40):
        p = f"layers.{i}"
        out |= {
            f"{p}.attention.wq.weight": (q, dim),
            f"{p}.attention.wk.weight": (kv, dim),
            f"{p}.attention.wv.weight": (kv, dim),
            f"{p}.attention.wo.weight": (dim, q),
            f"{p}.feed_forward.w1.weight": (hidden, dim),
            f"{p}.feed_forward.w2.weight": (dim, hidden),
            f"{p}.feed_forward.w3.weight": (hidden, dim),
            f"{p}.attention_norm.weight": (dim,),
            f"{p}.ffn_norm.weight": (dim,),
        }
    return out | {"norm.weight": (dim,), "output.weight": (vocab, dim)}


def nemo_12b_expected_hf() -> dict[str, tuple[int, ...]]:
    dim, hidden, q, kv, vocab = 5120, 14336, 32 * 128, 8 * 128, 131072
    out = {"model.embed_tokens.weight": (vocab, dim)}
    for i in range(40):
        p = f"model.layers.{i}"
        out |= {
            f"{p}.self_attn.q_proj.weight": (q, dim),
            f"{p}.self_attn.k_proj.weight": (kv, dim),
            f"{p}.self_attn.v_proj.weight": (kv, dim),
            f"{p}.self_attn.o_proj.weight": (dim, q),
            f"{p}.mlp.gate_proj.weight": (hidden, dim),
            f"{p}.mlp.down_proj.weight": (dim, hidden),
            f"{p}.mlp.up_proj.weight": (hidden, dim),
            f"{p}.input_layernorm.weight": (dim,),
            f"{p}.post_attention_layernorm.weight": (dim,),
        }
    return out | {"model.norm.weight": (dim,), "lm_head.weight": (vocab, dim)}


@pytest.fixture(scope="module")
def nemo_12b_meta() -> Transformer:
    return Transformer(ModelArgs.preset("nemo-12b"), device="meta", dtype=torch.bfloat16)


def test_nemo_12b_parameter_count_on_the_meta_device(nemo_12b_meta):
    assert nemo_12b_meta.num_parameters() == 12_247_782_400
    assert sum(p.numel() for p in nemo_12b_meta.parameters()) == 12_247_782_400
    assert sum(p.numel() * p.element_size() for p in nemo_12b_meta.parameters()) == 24_495_564_800  # 24.50 GB
    assert all(p.is_meta for p in nemo_12b_meta.parameters())


def test_nemo_12b_names_and_shapes_match_the_mistral_layout(nemo_12b_meta):
    found = {name: tuple(p.shape) for name, p in nemo_12b_meta.state_dict().items()}
    assert len(found) == 363
    assert found == nemo_12b_expected()


def test_nemo_12b_names_and_shapes_match_the_hf_layout(nemo_12b_meta):
    found = {mistral_to_hf_name(n): tuple(p.shape) for n, p in nemo_12b_meta.state_dict().items()}
    assert len(found) == 363
    assert found == nemo_12b_expected_hf()


def test_nemo_12b_kv_cache_is_160_kib_per_token():
    a = ModelArgs.preset("nemo-12b")
    per_token = 2 * a.n_layers * a.n_kv_heads * a.head_dim * 2  # k and v, bf16
    assert per_token == 160 * 1024


@pytest.mark.parametrize(
    ("dim", "n_heads", "head_dim", "n_kv_heads"),
    [(96, 4, 32, 1), (64, 2, 16, 2), (40, 4, 8, 4)],  # 128 > 96; 32 < 64; 32 < 40 (MHA)
)
def test_n_heads_times_head_dim_differs_from_dim(dim, n_heads, head_dim, n_kv_heads):
    a = ModelArgs(
        dim=dim,
        n_layers=1,
        head_dim=head_dim,
        hidden_dim=48,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        vocab_size=50,
        max_seq_len=64,
    )
    m = Transformer(a, dtype=torch.float32).init_random(0)
    att = m.layers[0].attention
    assert tuple(att.wq.weight.shape) == (n_heads * head_dim, dim)
    assert tuple(att.wk.weight.shape) == (n_kv_heads * head_dim, dim)
    assert tuple(att.wo.weight.shape) == (dim, n_heads * head_dim)
    toks = torch.randint(0, 50, (2, 7))
    out = m(toks)
    assert out.shape == (2, 7, 50) and torch.isfinite(out).all()
    m.set_attn_backend("eager")
    assert rel_err(m(toks), out) <= TOL


def test_tied_embeddings_share_one_tensor():
    a = SMALL.replace(tied_embeddings=True)
    m = Transformer(a, dtype=torch.float32).init_random(0)
    assert m.output.weight is m.tok_embeddings.weight
    assert m.num_parameters() == Transformer(SMALL).num_parameters() - SMALL.vocab_size * SMALL.dim


def test_llama4_query_scaling_changes_only_positions_past_the_original_length(make_model):
    plain = make_model(SMALL, seed=2)
    scaled = make_model(SMALL.replace(llama4_beta=0.5, llama4_original_max=8), seed=2)
    toks = seq(16, seed=3)
    a, b = plain(toks), scaled(toks)
    assert rel_err(b[:, :8], a[:, :8]) <= TOL  # floor(pos / 8) = 0: scale 1
    assert rel_err(b[:, 8:], a[:, 8:]) > 1e-3


# ---- the decode hot path: no gathered cache copy, no host syncs, a capturable step ----------


class HostReads(torch.overrides.TorchFunctionMode):
    """Records every tensor -> host read (``.item()``, ``int(t)``, ``bool(t)``, ``.tolist()``...):
    on a GPU each one is a device-to-host sync that stalls the CPU and breaks graph capture."""

    READS = ("item", "tolist", "__bool__", "__int__", "__index__", "__float__", "nonzero")

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", ["sdpa", "triton"])
def test_a_decode_step_reads_nothing_back_from_the_device(make_model, backend):
    m = make_model(SMALL, seed=1, attn_backend=backend)
    cache = m.new_cache(3, 32)
    for row, n in enumerate((5, 9, 2)):
        m(seq(n, seed=row), 0, rows=[row], cache=cache)
    tokens = seq(1, batch=3, seed=7).reshape(3, 1)
    with HostReads() as host:
        m(tokens, [5, 9, 2], rows=[0, 1, 2], cache=cache)  # host ints, as the engine passes them
    assert host.reads == []
    with HostReads() as host:
        m.decode_step(tokens, torch.tensor([6, 10, 3]), cache)  # the capturable step
    assert host.reads == []
    with HostReads() as host:  # tensors are read back once per call, before any layer
        m(tokens, torch.tensor([7, 11, 4]), rows=torch.tensor([0, 1, 2]), cache=cache)
    assert host.reads == ["tolist", "tolist"]


def test_the_capturable_decode_step_gives_the_same_logits(make_model):
    """decode_step (every row, whole-cache shapes, device-side positions: what a CUDA graph
    captures) against the ordinary forward on the same cache state: the Triton kernels give the
    same bits (a row's splits depend on its own length only), the torch paths the same values."""
    prompts = [seq(5, seed=10), seq(11, seed=11), seq(2, seed=12)]
    nxt = seq(1, batch=3, seed=13).reshape(3, 1)
    for backend in ("triton", "sdpa", "eager"):
        m = make_model(SMALL, seed=1, attn_backend=backend)
        outs = []
        for step in ("forward", "decode_step"):
            cache = m.new_cache(3, 32)
            for row, prompt in enumerate(prompts):
                m(prompt, 0, rows=[row], cache=cache)
            lengths = [p.shape[1] for p in prompts]
            if step == "forward":
                outs.append(m(nxt, lengths, rows=[0, 1, 2], cache=cache)[:, -1])
            else:
                outs.append(m.decode_step(nxt, torch.tensor(lengths), cache))
        if backend == "triton":
            assert torch.equal(outs[0], outs[1])
        else:
            assert rel_err(outs[1], outs[0]) <= TOL, backend


def test_contiguous_rows_are_read_in_place_and_scattered_rows_by_index(make_model, monkeypatch):
    """Rows forming a run of the cache reach attention as views of the cache (no gathered copy);
    any other order still works (an indexed read)."""
    import nemo_ref.model as M

    m = make_model(SMALL, seed=1)
    cache = m.new_cache(4, 32)
    prompts = [seq(4, seed=20), seq(7, seed=21)]
    seen = []
    read = M._read_cache

    def spy(c, p):
        k, v = read(c, p)
        seen.append(k.untyped_storage().data_ptr() == c[0].untyped_storage().data_ptr())
        return k, v

    monkeypatch.setattr(M, "_read_cache", spy)
    outs = {}
    for rows in ([1, 2], [3, 0]):
        for row, prompt in zip(rows, prompts, strict=True):
            m(prompt, 0, rows=[row], cache=cache)
        seen.clear()
        outs[tuple(rows)] = m(seq(1, batch=2, seed=22).reshape(2, 1), [4, 7], rows=rows, cache=cache)
        assert seen == [rows == [1, 2]] * SMALL.n_layers
    assert rel_err(outs[(3, 0)], outs[(1, 2)]) <= TOL


def test_sliding_window_field_is_validated():
    with pytest.raises(ValueError, match="sliding_window"):
        SMALL.replace(sliding_window=0)


def test_sliding_window_matches_transformers_past_the_window(tiny_model, tiny_checkpoints):
    """transformers' MistralForCausalLM with ``sliding_window`` set is the oracle: a prompt longer
    than the window, then decoding from the KV cache, on every attention backend."""
    from transformers import MistralForCausalLM

    window = 5
    hf = MistralForCausalLM.from_pretrained(
        tiny_checkpoints["hf"], dtype=torch.float32, attn_implementation="eager"
    )
    hf.config.sliding_window = window
    toks = torch.randint(0, 131072, (1, 16), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        want = hf.eval()(toks).logits.float()
    assert rel_err(tiny_model(toks), want) > 1e-3  # the window matters past position 5
    for backend in ("sdpa", "eager", "triton"):
        m = Transformer(tiny_model.args.replace(sliding_window=window), attn_backend=backend)
        m.load_state_dict(tiny_model.state_dict())
        assert rel_err(m(toks), want) <= 1e-4, backend  # no cache: the chunk attends within itself
        cache = m.new_cache(1, 32)
        steps = [m(toks[:, :11], 0, cache=cache)]  # prompt past the window, then decode
        steps += [m(toks[:, t : t + 1], t, cache=cache) for t in range(11, 16)]
        assert rel_err(torch.cat(steps, dim=1), want) <= 1e-4, backend
