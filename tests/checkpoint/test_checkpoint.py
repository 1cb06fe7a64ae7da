"""Checkpoints: round trips in both layouts, lossless conversion, the published file structure, and a
clear CheckpointError (asserted message) for every way a checkpoint can be broken."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import nemo_ref
from nemo_ref import checkpoint as ckpt
from nemo_ref.checkpoint import (
    CheckpointError,
    convert_checkpoint,
    detect_layout,
    inspect_checkpoint,
    load_model,
    read_safetensors_header,
    save_checkpoint,
)
from nemo_ref.checkpoint import load as ckpt_load
from nemo_ref.checkpoint import save as ckpt_save
from nemo_ref.config import ModelArgs
from nemo_ref.model import Transformer

# Tiny and fast; still n_heads * head_dim (64) != dim (32), GQA 2:1.
SMALL = ModelArgs(
    dim=32, n_layers=2, head_dim=16, hidden_dim=48, n_heads=4, n_kv_heads=2, vocab_size=64, max_seq_len=64
)
N_SMALL = 64 * 32 * 2 + 2 * (64 * 32 + 2 * 32 * 32 + 32 * 64 + 3 * 48 * 32 + 2 * 32) + 32


@pytest.fixture(scope="module")
def small(make_model) -> Transformer:
    return make_model(SMALL, seed=7)


def load(path, **kw) -> Transformer:
    return load_model(path, progress=False, **kw)


def params(model: Transformer) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())


def assert_same_weights(a: Transformer, b: Transformer, dtype: torch.dtype | None = None) -> None:
    pa, pb = params(a), params(b)
    assert list(pa) == list(pb)
    for name in pa:
        expected = pa[name].detach().to(dtype or pa[name].dtype)
        assert pb[name].dtype == expected.dtype, name
        assert torch.equal(pb[name], expected), name  # bitwise


# ---- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("layout", ["mistral", "hf"])
def test_save_then_load_is_bitwise_identical(small, tmp_path, layout, dtype):
    save_checkpoint(small, tmp_path, layout, dtype=dtype, max_shard_bytes=20_000)
    assert detect_layout(tmp_path) == layout
    loaded = load(tmp_path, dtype=None)  # as stored
    assert_same_weights(small, loaded, dtype)
    assert not any(p.is_meta for p in loaded.parameters())
    toks = torch.randint(0, 64, (1, 9))
    if dtype == torch.float32:
        assert torch.equal(loaded(toks), small(toks))


def test_the_tiny_checkpoints_round_trip(tiny_model, tiny_checkpoints):
    for layout in ("mistral", "hf"):
        assert_same_weights(tiny_model, load(tiny_checkpoints[layout], dtype=torch.float32))


@pytest.mark.parametrize("pread", [True, False])
def test_both_read_paths_give_the_same_weights(small, tmp_path, monkeypatch, pread):
    """safetensors >= 0.8 reads with pread; older versions memory-map (the fallback, forced here)."""
    save_checkpoint(small, tmp_path, "hf", dtype=torch.float32)
    monkeypatch.setattr(ckpt_load, "_PREAD", None if pread else False)
    loaded = load(tmp_path, dtype=None)
    assert ckpt_load._PREAD is pread
    assert_same_weights(small, loaded)
    with torch.no_grad():  # the parameters own their memory: writable, independent of the file
        loaded.norm.weight.add_(1)
    assert_same_weights(small, load(tmp_path, dtype=None))


def test_loading_leaves_torch_initialisers_untouched(tiny_checkpoints):
    """The meta skeleton is built with initialisers switched off (they would be discarded); they are
    restored afterwards."""
    saved = (torch.nn.init.normal_, torch.nn.init.uniform_, torch.nn.init.kaiming_uniform_)
    load(tiny_checkpoints["mistral"], dtype=torch.bfloat16)
    assert (torch.nn.init.normal_, torch.nn.init.uniform_, torch.nn.init.kaiming_uniform_) == saved
    w = torch.nn.Linear(4, 4).weight
    assert w.abs().sum() > 0


def test_load_converts_dtype_and_places_on_device(tiny_checkpoints):
    m = load(tiny_checkpoints["hf"], dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in m.parameters()} == {"cpu"}
    assert m(torch.tensor([[1, 2, 3]])).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_conversion_is_lossless_both_ways(small, tmp_path, dtype):
    save_checkpoint(small, tmp_path / "m", "mistral", dtype=dtype)
    convert_checkpoint(tmp_path / "m", tmp_path / "h", "hf", max_shard_bytes=30_000, progress=False)
    convert_checkpoint(tmp_path / "h", tmp_path / "m2", "mistral", progress=False)
    convert_checkpoint(tmp_path / "m2", tmp_path / "h2", "hf", max_shard_bytes=30_000, progress=False)
    # The writer is deterministic: a lossless round trip reproduces the files byte for byte.
    name = "consolidated.safetensors"
    assert (tmp_path / "m" / name).read_bytes() == (tmp_path / "m2" / name).read_bytes()
    shards = sorted(p.name for p in (tmp_path / "h").glob("model-*.safetensors"))
    assert len(shards) > 1
    for shard in shards:
        assert (tmp_path / "h" / shard).read_bytes() == (tmp_path / "h2" / shard).read_bytes()
    assert_same_weights(load(tmp_path / "m", dtype=None), load(tmp_path / "h", dtype=None))


def test_hf_files_hold_permuted_qk_and_hf_names(small, tmp_path):
    save_checkpoint(small, tmp_path, "hf", dtype=torch.float32)
    tensors = {}
    for f in tmp_path.glob("model-*.safetensors"):
        tensors |= load_file(f)
    wq = small.layers[1].attention.wq.weight
    wk = small.layers[1].attention.wk.weight
    assert torch.equal(tensors["model.layers.1.self_attn.q_proj.weight"], ckpt.permute_for_hf(wq, 4))
    assert torch.equal(tensors["model.layers.1.self_attn.k_proj.weight"], ckpt.permute_for_hf(wk, 2))
    assert not torch.equal(tensors["model.layers.1.self_attn.q_proj.weight"], wq)
    # v and everything else are stored as they are.
    assert torch.equal(tensors["model.layers.1.self_attn.v_proj.weight"], small.layers[1].attention.wv.weight)
    assert torch.equal(tensors["model.layers.0.mlp.gate_proj.weight"], small.layers[0].feed_forward.w1.weight)
    assert torch.equal(tensors["model.layers.0.mlp.down_proj.weight"], small.layers[0].feed_forward.w2.weight)
    assert torch.equal(tensors["model.layers.0.mlp.up_proj.weight"], small.layers[0].feed_forward.w3.weight)
    assert torch.equal(
        tensors["model.layers.0.post_attention_layernorm.weight"], small.layers[0].ffn_norm.weight
    )
    assert torch.equal(tensors["lm_head.weight"], small.output.weight)


def test_tied_embeddings_round_trip(make_model, tmp_path):
    tied = make_model(SMALL.replace(tied_embeddings=True), seed=3)
    for layout in ("mistral", "hf"):
        save_checkpoint(tied, tmp_path / layout, layout, dtype=torch.float32)
        loaded = load(tmp_path / layout, dtype=None)
        assert loaded.output.weight is loaded.tok_embeddings.weight
        assert_same_weights(tied, loaded)
    assert "output.weight" not in load_file(tmp_path / "mistral" / "consolidated.safetensors")


# ---- the published file structure ------------------------------------------------------------


def test_mistral_layout_files(small, tmp_path):
    tok = tmp_path / "tekken_240718.json"
    tok.write_text('{"config": "test"}')
    out = save_checkpoint(small, tmp_path / "ck", "mistral", tokenizer=tok)
    assert sorted(p.name for p in out.iterdir()) == ["consolidated.safetensors", "params.json", "tekken.json"]
    assert (out / "tekken.json").read_text() == '{"config": "test"}'
    assert ModelArgs.from_params_json(json.loads((out / "params.json").read_text())) == SMALL
    with safe_open(out / "consolidated.safetensors", "pt") as f:  # the reference reader accepts it
        assert f.metadata() == {"format": "pt"}
        assert sorted(f.keys()) == sorted(small.state_dict())
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118 (default dtype)


def test_hf_layout_files_shards_and_index(small, tmp_path):
    max_shard = 6_000  # smaller than the 8 KB embedding and wq: those get shards of their own
    out = save_checkpoint(small, tmp_path, "hf", dtype=torch.float32, max_shard_bytes=max_shard)
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    n = len(shards)
    assert n >= 3
    assert shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == N_SMALL * 4
    assert set(index["weight_map"]) == {ckpt.mistral_to_hf_name(k) for k in small.state_dict()}
    oversized = 0
    for shard in shards:
        header, meta = read_safetensors_header(out / shard)
        assert meta == {"format": "pt"}
        size = sum(t.nbytes for t in header.values())
        # A shard exceeds the bound only when it holds a single tensor larger than the bound.
        assert size <= max_shard or len(header) == 1, shard
        oversized += size > max_shard
        assert {index["weight_map"][k] for k in header} == {shard}
        with safe_open(out / shard, "pt") as f:
            assert sorted(f.keys()) == sorted(header)
    assert oversized >= 4  # embedding, output and each layer's wq, wo
    assert list(read_safetensors_header(out / shards[0])[0]) == ["model.embed_tokens.weight"]
    config = json.loads((out / "config.json").read_text())
    assert ModelArgs.from_hf_config(config) == SMALL
    assert config["torch_dtype"] == "float32"
    assert json.loads((out / "generation_config.json").read_text()) == {"bos_token_id": 1, "eos_token_id": 2}


def test_resaving_with_fewer_shards_removes_stale_ones(small, tmp_path):
    save_checkpoint(small, tmp_path, "hf", max_shard_bytes=10_000)
    save_checkpoint(small, tmp_path, "hf")
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["model-00001-of-00001.safetensors"]
    assert_same_weights(small, load(tmp_path, dtype=None), torch.bfloat16)


def test_save_writes_nothing_under_final_names_when_it_fails(small, tmp_path, monkeypatch):
    def boom(self, dtype):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ckpt_save._Entry, "prepared", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(small, tmp_path, "mistral")
    assert not (tmp_path / "consolidated.safetensors").exists()


def test_public_surface(small, tmp_path):
    nemo_ref.save_checkpoint(small, tmp_path, layout="hf")
    m = nemo_ref.load_model(tmp_path, dtype=torch.bfloat16, device="cpu", progress=False)
    assert isinstance(m, nemo_ref.Transformer)
    assert issubclass(CheckpointError, ValueError)


# ---- detection, inspection, progress ---------------------------------------------------------


def test_detect_layout_prefers_mistral_when_both_layouts_are_present(small, tmp_path):
    save_checkpoint(small, tmp_path, "hf", dtype=torch.float32)
    assert detect_layout(tmp_path) == "hf"
    save_checkpoint(small, tmp_path, "mistral", dtype=torch.bfloat16)  # the published repo holds both
    assert detect_layout(tmp_path) == "mistral"
    assert {p.dtype for p in load(tmp_path, dtype=None).parameters()} == {torch.bfloat16}
    assert {p.dtype for p in load(tmp_path, dtype=None, layout="hf").parameters()} == {torch.float32}
    with pytest.raises(CheckpointError, match="layout must be one of"):
        load(tmp_path, layout="gguf")


def test_single_model_safetensors_is_hf(small, tmp_path):
    save_checkpoint(small, tmp_path, "hf", dtype=torch.float32)
    (tmp_path / "model-00001-of-00001.safetensors").rename(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors.index.json").unlink()
    assert detect_layout(tmp_path) == "hf"
    assert_same_weights(small, load(tmp_path, dtype=None))


def test_inspect_checkpoint(small, tmp_path):
    save_checkpoint(
        small, tmp_path, "hf", dtype=torch.bfloat16, max_shard_bytes=25_000, metadata={"note": "x"}
    )
    info = inspect_checkpoint(tmp_path)
    assert info["layout"] == "hf" and info["config_file"] == "config.json"
    assert info["parameters"] == N_SMALL == small.num_parameters()
    assert info["tensors"] == 21
    assert info["dtypes"] == {"BF16": 21}
    assert info["bytes"] == 2 * N_SMALL
    assert info["file_bytes"] > info["bytes"]
    assert info["config"]["head_dim"] == 16 and info["config"]["dim"] == 32
    assert info["metadata"] == {"format": "pt", "note": "x"}
    assert info["random_weights"] is False and info["tokenizer"] is False
    json.dumps(info)  # serialisable


def test_progress_bar_and_summary_line(tiny_checkpoints, capsys):
    lines = []
    load_model(tiny_checkpoints["hf"], dtype=torch.bfloat16, progress=False, log=lines.append)
    assert capsys.readouterr().err == ""
    assert len(lines) == 1
    line = lines[0]
    assert "(hf layout)" in line and "25,375,200 parameters" in line and "bfloat16" in line
    assert line.endswith("GB/s") and " s, " in line
    load_model(tiny_checkpoints["mistral"], dtype=torch.float32)  # progress=True: bar and line on stderr
    err = capsys.readouterr().err
    assert "loading mistral" in err and "(mistral layout): 25,375,200 parameters, float32" in err
    load_model(tiny_checkpoints["mistral"], dtype=torch.float32, progress=False)
    assert capsys.readouterr().err == ""


# ---- errors -----------------------------------------------------------------------------------


@pytest.fixture
def mistral_dir(small, tmp_path) -> Path:
    return save_checkpoint(small, tmp_path / "mistral", "mistral", dtype=torch.float32)


@pytest.fixture
def hf_dir(small, tmp_path) -> Path:
    return save_checkpoint(small, tmp_path / "hf", "hf", dtype=torch.float32, max_shard_bytes=25_000)


def rewrite(file: Path, change) -> None:
    """Load a safetensors file, let ``change`` edit the dict of tensors, write it back."""
    tensors = load_file(file)
    change(tensors)
    save_file(tensors, file, metadata={"format": "pt"})


def raises(path, match: str, **kw) -> CheckpointError:
    with pytest.raises(CheckpointError, match=match) as e:
        load(path, **kw)
    return e.value


def test_missing_directory_file_and_empty_directory(tmp_path):
    raises(tmp_path / "nowhere", r"nowhere' does not exist")
    (tmp_path / "file").write_text("x")
    raises(tmp_path / "file", "is not a directory")
    (tmp_path / "empty").mkdir()
    raises(tmp_path / "empty", "unknown checkpoint layout")
    with pytest.raises(CheckpointError, match="unknown checkpoint layout"):
        inspect_checkpoint(tmp_path / "empty")


def test_missing_files(mistral_dir, hf_dir):
    (mistral_dir / "consolidated.safetensors").unlink()
    raises(mistral_dir, "params.json found but consolidated.safetensors is missing")
    (mistral_dir / "consolidated.00.pth").write_bytes(b"pickle")
    raises(mistral_dir, r"consolidated\.00\.pth are pickle files, not supported")
    (mistral_dir / "params.json").unlink()
    raises(mistral_dir, "unknown checkpoint layout")

    index = json.loads((hf_dir / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["model.layers.1.self_attn.q_proj.weight"]
    (hf_dir / shard).unlink()
    raises(hf_dir, rf"model\.safetensors\.index\.json: shard {shard} is missing \(it should hold \d+ tensor")
    (hf_dir / "config.json").unlink()
    raises(hf_dir, r"no params\.json \(mistral\) or config\.json \(HF\)")


def test_hf_config_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(SMALL.to_hf_config()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    raises(
        tmp_path,
        r"config\.json found but neither model\.safetensors\.index\.json nor model\.safetensors.*pickle",
    )


def test_missing_tensors_are_listed(mistral_dir, hf_dir):
    rewrite(
        mistral_dir / "consolidated.safetensors",
        lambda t: [t.pop("norm.weight"), t.pop("layers.1.ffn_norm.weight")],
    )
    raises(mistral_dir, r"missing 2 tensor\(s\): layers\.1\.ffn_norm\.weight, norm\.weight")
    # HF: named as in the HF files.
    index = json.loads((hf_dir / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["model.layers.0.self_attn.k_proj.weight"]
    del index["weight_map"]["model.layers.0.self_attn.k_proj.weight"]
    (hf_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    rewrite(hf_dir / shard, lambda t: t.pop("model.layers.0.self_attn.k_proj.weight"))
    raises(hf_dir, r"missing 1 tensor\(s\): model\.layers\.0\.self_attn\.k_proj\.weight")


def test_unexpected_tensors_are_listed(mistral_dir):
    def add(t):
        t["layers.0.attention.wq.bias"] = torch.zeros(64)
        t["vision_encoder.patch_conv.weight"] = torch.zeros(2, 2)

    rewrite(mistral_dir / "consolidated.safetensors", add)
    raises(
        mistral_dir,
        r"unexpected 2 tensor\(s\): layers\.0\.attention\.wq\.bias, vision_encoder\.patch_conv\.weight",
    )


def test_extra_layers_mean_config_and_weights_disagree(mistral_dir):
    params = json.loads((mistral_dir / "params.json").read_text())
    (mistral_dir / "params.json").write_text(json.dumps(params | {"n_layers": 1}))
    e = raises(mistral_dir, "n_layers=1 but the weights have layers 0..1: config and weights disagree")
    assert "unexpected 9 tensor(s): layers.1." in str(e)


def test_shape_mismatch_names_tensor_expected_and_found(mistral_dir, hf_dir):
    rewrite(
        mistral_dir / "consolidated.safetensors",
        lambda t: t.update({"layers.1.attention.wq.weight": torch.zeros(32, 32)}),
    )
    raises(
        mistral_dir,
        r"layers\.1\.attention\.wq\.weight in consolidated\.safetensors: expected \[64, 32\] "
        r"\(n_heads\*head_dim=64, dim=32\), found \[32, 32\]",
    )
    index = json.loads((hf_dir / "model.safetensors.index.json").read_text())
    name = "model.layers.0.mlp.down_proj.weight"
    rewrite(hf_dir / index["weight_map"][name], lambda t: t.update({name: torch.zeros(48, 32)}))
    raises(
        hf_dir,
        r"model\.layers\.0\.mlp\.down_proj\.weight \(= layers\.0\.feed_forward\.w2\.weight\) in model-",
    )


def test_config_and_weights_disagree_on_vocab_and_dim(mistral_dir, hf_dir):
    params = json.loads((mistral_dir / "params.json").read_text())
    (mistral_dir / "params.json").write_text(json.dumps(params | {"vocab_size": 100}))
    e = raises(mistral_dir, "config and weights disagree")
    assert (
        "tok_embeddings.weight in consolidated.safetensors: expected [100, 32] (vocab_size=100, dim=32), found [64, 32]"
        in str(e)
    )
    assert "output.weight" in str(e)
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps(config | {"hidden_size": 48}))
    e = raises(hf_dir, r"shape mismatch between config\.json and the weights")
    assert "model.embed_tokens.weight (= tok_embeddings.weight)" in str(e) and "dim=48" in str(e)


def test_bad_config_files_name_the_file(mistral_dir, hf_dir):
    params = json.loads((mistral_dir / "params.json").read_text())
    (mistral_dir / "params.json").write_text(json.dumps(params | {"rope_skaling": 1}))
    raises(mistral_dir, r"params\.json: params\.json has unknown field\(s\) \['rope_skaling'\]")
    (mistral_dir / "params.json").write_text("{")
    raises(mistral_dir, r"params\.json: not valid JSON")
    (hf_dir / "model.safetensors.index.json").write_text("[1, 2")
    raises(hf_dir, r"model\.safetensors\.index\.json: not valid JSON")
    (hf_dir / "model.safetensors.index.json").write_text('{"metadata": {}}')
    raises(hf_dir, "needs a non-empty 'weight_map'")
    (hf_dir / "model.safetensors.index.json").write_text(
        '{"weight_map": {"lm_head.weight": "../x.safetensors"}}'
    )
    raises(hf_dir, "outside the directory")


def test_index_that_disagrees_with_the_shards(hf_dir):
    index_file = hf_dir / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    good = dict(index["weight_map"])
    first = good["model.embed_tokens.weight"]
    index["weight_map"]["lm_head.weight"] = first
    index_file.write_text(json.dumps(index))
    raises(hf_dir, rf"says 'lm_head\.weight' is in {first}, but {first} does not hold it")
    # The same tensor in two shards.
    index["weight_map"] = good
    index_file.write_text(json.dumps(index))
    rewrite(hf_dir / first, lambda t: t.update({"model.norm.weight": torch.ones(32)}))
    raises(hf_dir, r"tensor 'model\.norm\.weight' is in both")


@pytest.mark.parametrize(
    ("dtype", "message"),
    [
        (torch.int64, "has dtype I64: not floating point"),
        (torch.uint8, "has dtype U8: not floating point"),
        (torch.float8_e4m3fn, "has dtype F8_E4M3: FP8"),
    ],
)
def test_non_floating_dtypes_are_refused(mistral_dir, dtype, message):
    rewrite(
        mistral_dir / "consolidated.safetensors",
        lambda t: t.update({"norm.weight": torch.ones(32).to(dtype)}),
    )
    raises(mistral_dir, rf"consolidated\.safetensors: tensor 'norm\.weight' {message}")


def test_mixed_dtypes_need_an_explicit_dtype(mistral_dir):
    rewrite(
        mistral_dir / "consolidated.safetensors", lambda t: t.update({"norm.weight": t["norm.weight"].half()})
    )
    raises(mistral_dir, r"several dtypes \{'F32': 20, 'F16': 1\}; pass dtype=", dtype=None)
    assert load(mistral_dir, dtype=torch.float32).norm.weight.dtype == torch.float32


# Byte-level corruption: written by hand, so that the reader must catch it before mapping the file.


def test_truncated_data_names_the_tensor(mistral_dir):
    f = mistral_dir / "consolidated.safetensors"
    data = f.read_bytes()
    header, _ = read_safetensors_header(f)
    last = max(header.values(), key=lambda t: t.end)
    f.write_bytes(data[:-100])
    e = raises(mistral_dir, "the file is truncated")
    assert f"tensor {last.key!r}" in str(e) and "consolidated.safetensors" in str(e)


def test_truncated_inside_the_header(mistral_dir):
    f = mistral_dir / "consolidated.safetensors"
    f.write_bytes(f.read_bytes()[:200])
    raises(mistral_dir, r"the header claims \d+ bytes but the file has only 192 .* truncated")
    f.write_bytes(b"\x01\x02")
    raises(mistral_dir, "2 bytes is too short for a safetensors file")


def test_header_that_is_not_json(mistral_dir):
    f = mistral_dir / "consolidated.safetensors"
    data = bytearray(f.read_bytes())
    data[8:20] = b"\xff" * 12
    f.write_bytes(bytes(data))
    raises(mistral_dir, r"consolidated\.safetensors: the safetensors header is not valid JSON")


def write_raw(path: Path, header: dict, data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_data_offsets_beyond_the_end_of_the_file(mistral_dir):
    f = mistral_dir / "consolidated.safetensors"
    header, _ = read_safetensors_header(f)
    tensors = load_file(f)
    raw_header = {
        t.key: {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [t.begin, t.end]}
        for t in header.values()
    }
    data = b"".join(
        tensors[k].contiguous().view(torch.uint8).numpy().tobytes()
        for k in sorted(raw_header, key=lambda k: raw_header[k]["data_offsets"][0])
    )
    size = len(data)
    raw_header["norm.weight"]["data_offsets"] = [size + 1000, size + 1000 + 128]
    write_raw(f, raw_header, data)
    raises(mistral_dir, rf"tensor 'norm\.weight': its data ends at byte {size + 1128} .* only {size} bytes")
    raw_header["norm.weight"]["data_offsets"] = [0, 64]  # 64 bytes for 32 float32s
    write_raw(f, raw_header, data)
    raises(mistral_dir, r"'norm\.weight': data_offsets \[0, 64\] span 64 bytes but F32 \[32\] needs 128")
    raw_header["norm.weight"] = {"dtype": "F32", "shape": [32]}
    write_raw(f, raw_header, data)
    raises(mistral_dir, "needs dtype, shape and data_offsets")
    raw_header["norm.weight"] = {"dtype": "Q4", "shape": [32], "data_offsets": [0, 128]}
    write_raw(f, raw_header, data)
    raises(mistral_dir, "unknown safetensors dtype 'Q4'")


def test_nothing_is_read_before_everything_is_validated(mistral_dir, monkeypatch):
    """A problem in the *last* tensor is found before the first tensor's data is touched."""
    calls = []
    real = ckpt_load.safe_open
    monkeypatch.setattr(ckpt_load, "safe_open", lambda *a, **k: calls.append(a) or real(*a, **k))
    rewrite(
        mistral_dir / "consolidated.safetensors", lambda t: t.update({"output.weight": torch.zeros(63, 32)})
    )
    raises(mistral_dir, r"output\.weight in consolidated\.safetensors: expected \[64, 32\]")
    assert calls == []


def test_a_failure_while_loading_propagates(mistral_dir, monkeypatch):
    real, calls = ckpt_load.safe_open, []

    def flaky(*a, **k):
        calls.append(a)
        if len(calls) == 5:
            raise OSError("I/O error")
        return real(*a, **k)

    monkeypatch.setattr(ckpt_load, "safe_open", flaky)
    with pytest.raises(OSError, match="I/O error"):
        load(mistral_dir)


def test_save_refuses_a_meta_model_and_bad_arguments(small, tmp_path):
    with pytest.raises(CheckpointError, match="meta device"):
        save_checkpoint(Transformer(SMALL, device="meta"), tmp_path)
    with pytest.raises(CheckpointError, match="layout must be one of"):
        save_checkpoint(small, tmp_path, layout="gguf")
    with pytest.raises(CheckpointError, match="dtype must be one of"):
        save_checkpoint(small, tmp_path, dtype=torch.int8)
    with pytest.raises(CheckpointError, match=r"tokenizer file 'nope\.json' not found"):
        save_checkpoint(small, tmp_path, tokenizer="nope.json")
    with pytest.raises(CheckpointError, match="metadata must map strings to strings"):
        save_checkpoint(small, tmp_path, metadata={"seed": 1})
