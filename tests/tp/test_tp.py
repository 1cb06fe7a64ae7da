"""Tensor parallelism in one process: which slices each rank holds, the sharded reader, the errors.

The collectives themselves run in tests/tp/test_dist.py (2 processes).
"""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from nemo_ref.checkpoint import load_model, read_safetensors_header, save_checkpoint, unpermute_from_hf
from nemo_ref.config import ModelArgs
from nemo_ref.model import Transformer
from nemo_ref.tp import TPError, check_world_size, shard_model, shard_of, valid_world_sizes
from nemo_ref.tp_load import load_model_tp, read_shard

NEMO = ModelArgs.preset("nemo-12b")
SMALL = ModelArgs.preset("nemo-tiny").replace(dim=32, head_dim=16, hidden_dim=64, n_heads=8, n_kv_heads=4)


def test_nemo_splits_over_1_2_4_8_ranks_only():
    assert valid_world_sizes(NEMO) == [1, 2, 4, 8]
    for n in (1, 2, 4, 8):
        check_world_size(NEMO, n)
    for n, culprit in ((3, "n_kv_heads (8)"), (16, "n_kv_heads (8)"), (0, "")):
        with pytest.raises(TPError, match="valid world sizes: 1, 2, 4, 8") as e:
            check_world_size(NEMO, n)
        assert culprit in str(e.value)


def test_shards_cover_every_matrix_exactly_once_and_keep_kv_groups_together():
    for n in (1, 2, 4, 8):
        for name, dim, size in (
            ("layers.0.attention.wq.weight", 0, 4096),
            ("layers.0.attention.wk.weight", 0, 1024),
            ("layers.0.attention.wo.weight", 1, 4096),
            ("layers.0.feed_forward.w1.weight", 0, 14336),
            ("layers.0.feed_forward.w2.weight", 1, 14336),
            ("output.weight", 0, 131072),
            ("tok_embeddings.weight", 0, 131072),
        ):
            shards = [shard_of(name, NEMO, r, n) for r in range(n)]
            assert all(s.dim == dim for s in shards)
            assert [s.start for s in shards] == [r * size // n for r in range(n)]
            assert shards[-1].stop == size
        # rank r's query heads are exactly those of its KV heads (query head h uses KV head h // 4)
        for r in range(n):
            q = shard_of("layers.3.attention.wq.weight", NEMO, r, n)
            kv = shard_of("layers.3.attention.wv.weight", NEMO, r, n)
            q_heads = range(q.start // 128, q.stop // 128)
            assert {h // NEMO.n_rep for h in q_heads} == set(range(kv.start // 128, kv.stop // 128))
    assert shard_of("layers.0.attention_norm.weight", NEMO, 1, 2) is None
    assert shard_of("norm.weight", NEMO, 1, 2) is None


@pytest.mark.parametrize("heads", [NEMO.n_heads, NEMO.n_kv_heads])
def test_hf_unpermute_per_rank_equals_slicing_the_unpermuted_matrix(heads):
    """Un-permuting a rank's rows with its own head count == slicing the un-permuted full matrix."""
    w = torch.randn(heads * NEMO.head_dim, 8)
    full = unpermute_from_hf(w, heads)
    for n in (1, 2, 4, 8):
        for r in range(n):
            rows = slice(r * len(w) // n, (r + 1) * len(w) // n)
            assert torch.equal(unpermute_from_hf(w[rows], heads // n), full[rows])
    # and the permutation is not the identity, so the check has teeth
    assert not torch.equal(full, w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_read_shard_matches_safetensors(tmp_path, dtype):
    model = Transformer(SMALL).init_random(1, std=0.1)
    save_checkpoint(model, tmp_path, "mistral", dtype=dtype)
    file = tmp_path / "consolidated.safetensors"
    infos, _ = read_safetensors_header(file)
    with safe_open(str(file), framework="pt") as f:
        for name in ("layers.1.attention.wo.weight", "layers.0.feed_forward.w1.weight", "norm.weight"):
            full = f.get_tensor(name)
            for n in (2, 4):
                for r in range(n):
                    s = shard_of(name, SMALL, r, n)
                    want = full if s is None else full.narrow(s.dim, s.start, s.stop - s.start)
                    got = read_shard(infos[name], s)
                    assert got.dtype == dtype and torch.equal(got, want), (name, n, r)


@pytest.mark.parametrize("layout", ["mistral", "hf"])
def test_sharded_load_equals_slices_of_the_full_load(tmp_path, layout):
    model = Transformer(SMALL).init_random(2, std=0.1)
    path = save_checkpoint(model, tmp_path / layout, layout, dtype=torch.float32, max_shard_bytes=5_000_000)
    full = dict(load_model(path, dtype=torch.float32, progress=False).named_parameters())
    n = 4
    parts = [load_model_tp(path, torch.float32, rank=r, world_size=n, progress=False) for r in range(n)]
    for name, tensor in full.items():
        s = shard_of(name, SMALL, 0, n)
        locals_ = [dict(p.named_parameters())[name] for p in parts]
        if s is None:
            assert all(torch.equal(t, tensor) for t in locals_), name
        else:
            assert torch.equal(torch.cat(locals_, dim=s.dim), tensor), name
    per_rank = parts[0].tp_bytes_read
    assert all(p.tp_bytes_read == per_rank for p in parts)
    assert per_rank < sum(t.numel() * 4 for t in full.values()) / n * 1.05
    # local heads and a KV cache that holds only them
    assert parts[1].layers[0].attention.args.n_kv_heads == 1 and parts[1].args.n_kv_heads == 4
    assert parts[1].new_cache(2, 8).k[0].shape == (2, 1, 8, SMALL.head_dim)


def test_shard_model_of_a_built_model_equals_the_sharded_load(tmp_path):
    path = save_checkpoint(Transformer(SMALL).init_random(4), tmp_path, "mistral", dtype=torch.float32)
    a = shard_model(Transformer(SMALL).init_random(4), rank=1, world_size=2)
    b = load_model_tp(path, torch.float32, rank=1, world_size=2, progress=False)
    for (na, ta), (nb, tb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb and torch.equal(ta, tb)


def test_bad_world_size_is_refused_before_reading(tmp_path):
    path = save_checkpoint(Transformer(SMALL).init_random(0), tmp_path, "mistral", dtype=torch.float32)
    with pytest.raises(TPError, match=r"over 3 ranks .* valid world sizes: 1, 2, 4"):
        load_model_tp(path, rank=0, world_size=3, progress=False)


def test_driver_needs_a_sharded_model_on_rank_0():
    from nemo_ref.tp_driver import TPDriver

    with pytest.raises(TPError, match="needs a sharded model"):
        TPDriver(Transformer(SMALL))
    with pytest.raises(TPError, match="rank 0; this is rank 1"):
        TPDriver(shard_model(Transformer(SMALL).init_random(0), rank=1, world_size=2))


def test_other_commands_refuse_to_run_under_torchrun(monkeypatch, capsys, tmp_path):
    from nemo_ref.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["inspect", str(tmp_path)]) == 2
    assert "only generate and serve run tensor-parallel" in capsys.readouterr().err


def test_driver_refuses_model_methods_it_does_not_broadcast(monkeypatch):
    """set_attn_backend (or any method) on rank 0 alone would leave the followers behind."""
    import nemo_ref.tp_driver as tpd

    monkeypatch.setattr(tpd.TPDriver, "_beat", lambda self, interval: None)  # no process group here
    driver = tpd.TPDriver(shard_model(Transformer(SMALL).init_random(0), rank=0, world_size=2))
    assert driver.args is driver.model.args and driver.tok_embeddings.weight.shape == (
        SMALL.vocab_size // 2,
        32,
    )
    assert driver.num_parameters() == driver.model.num_parameters()
    with pytest.raises(TPError, match=r"model.set_attn_backend\(\) is not broadcast"):
        driver.set_attn_backend("eager")


def test_tied_embeddings_stay_tied_in_their_shard():
    args = SMALL.replace(tied_embeddings=True)
    model = shard_model(Transformer(args).init_random(0), rank=1, world_size=2)
    assert model.output.weight is model.tok_embeddings.weight
    assert model.tok_embeddings.start == args.vocab_size // 2
    assert (
        model.num_parameters()
        == Transformer(args, device="meta").num_parameters() // 2 + 32 * (2 * 2 + 1) // 2
    )


def test_kv_cache_row_methods_touch_only_their_row_and_prefix():
    from nemo_ref.kv_cache import KVCache

    cache = KVCache.allocate(SMALL, 3, 6, torch.float32, "cpu")
    for k, v in zip(cache.k, cache.v, strict=True):
        k.copy_(torch.randn(k.shape))
        v.copy_(torch.randn(v.shape))
    before = [t.clone() for t in (*cache.k, *cache.v)]
    cache.copy_prefix(2, 0, 4)
    cache.clear_prefix(1, 3)
    for old, new in zip(before, (*cache.k, *cache.v), strict=True):
        assert torch.equal(new[0, :, :4], old[2, :, :4]) and torch.equal(new[0, :, 4:], old[0, :, 4:])
        assert not new[1, :, :3].any() and torch.equal(new[1, :, 3:], old[1, :, 3:])
        assert torch.equal(new[2], old[2])
