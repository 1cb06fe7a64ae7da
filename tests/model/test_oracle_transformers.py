"""transformers' MistralForCausalLM as the logits oracle, on the same synthetic checkpoints.

Nobody here wrote transformers: agreement with it checks the loader (names, the q/k permutation),
the config parsing, RoPE and the whole forward at once. Both directions are covered: checkpoints
written by nemo_ref loaded by transformers, and checkpoints written by transformers' own
``save_pretrained`` loaded by nemo_ref. Float32 and transformers' "eager" attention throughout;
agreement is measured as max |diff| / max |logit|.
"""

from __future__ import annotations

import pytest
import torch

from nemo_ref.checkpoint import convert_checkpoint, load_model, permute_for_hf

transformers = pytest.importorskip("transformers")
from transformers import MistralConfig, MistralForCausalLM  # noqa: E402

from tests.support import rel_err  # noqa: E402

TOL = 1e-4


def tokens(vocab: int, shape=(2, 13), seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def hf_load(path) -> MistralForCausalLM:
    model, info = MistralForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    # Every tensor nemo_ref wrote has the name transformers expects, and nothing is left out.
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


@torch.no_grad()
def hf_logits(model: MistralForCausalLM, toks: torch.Tensor) -> torch.Tensor:
    return model(toks).logits.float()


def test_hf_checkpoint_written_by_nemo_ref_matches_transformers(tiny_model, tiny_checkpoints):
    toks = tokens(tiny_model.args.vocab_size)
    ours = load_model(tiny_checkpoints["hf"], dtype=torch.float32, progress=False)
    theirs = hf_logits(hf_load(tiny_checkpoints["hf"]), toks)
    logits = ours(toks)
    assert logits.dtype == torch.float32
    assert rel_err(logits, theirs) <= TOL
    # The same weights in memory as the model that was saved.
    assert rel_err(tiny_model(toks), theirs) <= TOL


def test_oracle_detects_a_missing_qk_unpermutation(tiny_checkpoints):
    """Negative control: the comparison above can fail. Skip the HF -> mistral un-permutation of wq/wk
    (i.e. rotate pairs (i, i + d/2) as if they were (2i, 2i+1)) and the logits must disagree."""
    toks = tokens(131072)
    model = load_model(tiny_checkpoints["hf"], dtype=torch.float32, progress=False)
    theirs = hf_logits(hf_load(tiny_checkpoints["hf"]), toks)
    a = model.args
    with torch.no_grad():
        for layer in model.layers:
            layer.attention.wq.weight.copy_(permute_for_hf(layer.attention.wq.weight, a.n_heads))
            layer.attention.wk.weight.copy_(permute_for_hf(layer.attention.wk.weight, a.n_kv_heads))
    assert rel_err(model(toks), theirs) > 100 * TOL


def test_mistral_layout_matches_transformers_on_the_converted_checkpoint(tiny_checkpoints, tmp_path):
    toks = tokens(131072, seed=1)
    from_mistral = load_model(tiny_checkpoints["mistral"], dtype=torch.float32, progress=False)
    converted = convert_checkpoint(tiny_checkpoints["mistral"], tmp_path / "hf", "hf", progress=False)
    theirs = hf_logits(hf_load(converted), toks)
    assert rel_err(from_mistral(toks), theirs) <= TOL
    # Both layouts hold the same weights, so nemo_ref computes exactly the same logits from either.
    from_hf = load_model(tiny_checkpoints["hf"], dtype=torch.float32, progress=False)
    assert torch.equal(from_mistral(toks), from_hf(toks))


# Geometries: n_heads * head_dim > dim (Nemo-like), < dim, MHA (n_kv_heads == n_heads), GQA 4:1.
GEOMETRIES = {
    "nemo-like": dict(hidden_size=96, num_attention_heads=4, head_dim=32, num_key_value_heads=1),
    "narrow-heads-mha": dict(hidden_size=64, num_attention_heads=2, head_dim=16, num_key_value_heads=2),
}
ROPES = {
    "default": {"rope_type": "default", "rope_theta": 1e6},
    "linear": {"rope_type": "linear", "rope_theta": 1e4, "factor": 3.0},
    "yarn": {
        "rope_type": "yarn",
        "rope_theta": 1e6,
        "factor": 8.0,
        "original_max_position_embeddings": 64,
        "beta_fast": 16.0,
        "beta_slow": 2.0,
    },
    "llama3": {
        "rope_type": "llama3",
        "rope_theta": 5e5,
        "factor": 8.0,
        "original_max_position_embeddings": 64,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
    },
}


def transformers_model(geometry: dict, rope: dict, seed: int = 0) -> MistralForCausalLM:
    config = MistralConfig(
        vocab_size=512,
        intermediate_size=128,
        num_hidden_layers=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        rope_parameters=dict(rope),
        sliding_window=None,
        tie_word_embeddings=False,
        **geometry,
    )
    torch.manual_seed(seed)
    model = MistralForCausalLM(config).eval()
    with torch.no_grad():  # weights large enough that attention is not uniform; random norms
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0, 0.1)
    return model


@pytest.mark.parametrize(
    ("geometry", "rope"),
    [("nemo-like", r) for r in ROPES] + [("narrow-heads-mha", "default")],
)
def test_checkpoint_saved_by_transformers_loads_in_nemo_ref(geometry, rope, tmp_path):
    theirs = transformers_model(GEOMETRIES[geometry], ROPES[rope])
    theirs.save_pretrained(tmp_path, max_shard_size="100KB")  # several shards + index
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ours = load_model(tmp_path, dtype=torch.float32, progress=False)
    assert ours.args.head_dim == GEOMETRIES[geometry]["head_dim"]
    toks = tokens(512, shape=(2, 40))  # 40 positions: past yarn/llama3's original 64 / factor
    assert rel_err(ours(toks), hf_logits(theirs, toks)) <= TOL


def test_single_file_save_pretrained_loads(tmp_path):
    theirs = transformers_model(GEOMETRIES["nemo-like"], ROPES["default"], seed=3)
    theirs.save_pretrained(tmp_path)  # small enough for one model.safetensors, no index
    assert (tmp_path / "model.safetensors").is_file()
    assert not (tmp_path / "model.safetensors.index.json").exists()
    ours = load_model(tmp_path, dtype=torch.float32, progress=False)
    toks = tokens(512, seed=2)
    assert rel_err(ours(toks), hf_logits(theirs, toks)) <= TOL


def test_kv_cache_decode_matches_transformers_generate(tiny_checkpoints):
    """Greedy decoding with nemo_ref's KV cache picks the same tokens as transformers' generate."""
    model = load_model(tiny_checkpoints["hf"], dtype=torch.float32, progress=False)
    hf = hf_load(tiny_checkpoints["hf"])
    prompt = tokens(131072, shape=(1, 7), seed=5)
    with torch.no_grad():
        expected = hf.generate(
            prompt, max_new_tokens=8, do_sample=False, attention_mask=torch.ones_like(prompt), pad_token_id=0
        )[0, 7:]
    kv = model.new_cache(1, 64)
    out, logits = [], model(prompt, cache=kv)
    for step in range(8):
        nxt = int(logits[0, -1].argmax())
        out.append(nxt)
        logits = model(torch.tensor([[nxt]]), 7 + step, cache=kv)
    assert out == expected.tolist()


def test_eager_and_sdpa_backends_agree(tiny_checkpoints):
    toks = tokens(131072, shape=(3, 21), seed=4)
    sdpa = load_model(tiny_checkpoints["mistral"], dtype=torch.float32, attn_backend="sdpa", progress=False)
    eager = load_model(tiny_checkpoints["mistral"], dtype=torch.float32, attn_backend="eager", progress=False)
    assert eager.attn_backend == "eager" and sdpa.attn_backend == "sdpa"
    assert rel_err(sdpa(toks), eager(toks)) <= 1e-5
