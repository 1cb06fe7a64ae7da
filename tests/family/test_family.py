"""The dense Mistral family: presets, the published config files of each member, parameter counts.

Parameter counts (meta device, no memory) against the published figures:

- Mistral 7B v0.1: 7,241,732,096; Mistral 7B v0.3: 7,248,023,552 (the Hugging Face repositories'
  safetensors totals, mistralai/Mistral-7B-v0.1 and mistralai/Mistral-7B-Instruct-v0.3).
- Mistral Small 2409: 22,247,282,688; Mistral Large 2407: 122,610,069,504 (the same totals for
  mistralai/Mistral-Small-Instruct-2409 and mistralai/Mistral-Large-Instruct-2407).
- Mathstral 7B: fine-tuned from Mistral 7B with the same params.json as 7B v0.3 (vocab 32768,
  theta 1e6), so 7,248,023,552; its model cards round it to "7.3B"
  (https://ai-tldr.dev/models/mathstral/, https://mistral.ai/news/mathstral).
- Codestral 22B: "22.2B parameters"
  (https://chatforest.com/reviews/mistral-codestral-22b-code-fill-in-the-middle-llm-review/,
  https://ai-tldr.dev/models/codestral-2405/): the shape of Mistral Small 2409, 22,247,282,688.

The config files below are the members' published params.json (mistral-inference) and config.json
(transformers) as far as the architecture goes.
"""

from __future__ import annotations

import json
import struct

import pytest
import torch

from nemo_ref.config import ModelArgs
from nemo_ref.family import MEMBERS, describe, identify
from nemo_ref.model import Transformer

PUBLISHED_PARAMETERS = {
    "nemo-12b": 12_247_782_400,
    "mistral-7b-v0.1": 7_241_732_096,
    "mistral-7b-v0.3": 7_248_023_552,
    "mathstral-7b": 7_248_023_552,
    "mistral-small-2409": 22_247_282_688,
    "codestral-22b": 22_247_282_688,
    "mistral-large-2407": 122_610_069_504,
}

# name: (dim, n_layers, n_heads, hidden_dim, vocab_size, rope_theta, sliding_window, max_position_embeddings)
PUBLISHED = {
    "mistral-7b-v0.1": (4096, 32, 32, 14336, 32000, 10000.0, 4096, 32768),
    "mistral-7b-v0.3": (4096, 32, 32, 14336, 32768, 1000000.0, None, 32768),
    "mathstral-7b": (4096, 32, 32, 14336, 32768, 1000000.0, None, 32768),
    "mistral-small-2409": (6144, 56, 48, 16384, 32768, 1000000.0, None, 32768),
    "codestral-22b": (6144, 56, 48, 16384, 32768, 1000000.0, None, 32768),
    "mistral-large-2407": (12288, 88, 96, 28672, 32768, 1000000.0, None, 131072),
}


def params_json(name: str) -> dict:
    dim, layers, heads, hidden, vocab, theta, window, _ = PUBLISHED[name]
    p = {
        "dim": dim,
        "n_layers": layers,
        "head_dim": 128,
        "hidden_dim": hidden,
        "n_heads": heads,
        "n_kv_heads": 8,
        "norm_eps": 1e-05,
        "vocab_size": vocab,
    }
    if window is not None:  # 7B v0.1's params.json: no rope_theta (mistral-inference's 1e4 default)
        p["sliding_window"] = window
    else:
        p["rope_theta"] = theta
    return p


def config_json(name: str) -> dict:
    dim, layers, heads, hidden, vocab, theta, window, max_pos = PUBLISHED[name]
    c = {
        "architectures": ["MistralForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": dim,
        "initializer_range": 0.02,
        "intermediate_size": hidden,
        "max_position_embeddings": max_pos,
        "model_type": "mistral",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05,
        "rope_theta": theta,
        "sliding_window": window,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": vocab,
    }
    if name != "mistral-7b-v0.1":  # the 7B v0.1 config predates head_dim in configs
        c["head_dim"] = 128
    return c


@pytest.mark.parametrize("name", list(PUBLISHED_PARAMETERS))
def test_meta_parameter_count_equals_the_published_one(name):
    model = Transformer(ModelArgs.preset(name), device="meta")
    assert model.num_parameters() == PUBLISHED_PARAMETERS[name] == MEMBERS[name].parameters
    assert all(p.is_meta for p in model.parameters())


def test_codestral_rounds_to_its_published_size():
    assert round(PUBLISHED_PARAMETERS["codestral-22b"] / 1e9, 1) == 22.2


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_both_published_config_files_parse_to_the_preset(name):
    preset = ModelArgs.preset(name)
    from_hf = ModelArgs.from_hf_config(config_json(name))
    assert from_hf == preset
    # params.json states no context length: mistral-inference's default stands in.
    from_params = ModelArgs.from_params_json(params_json(name))
    assert from_params == preset.replace(max_seq_len=from_params.max_seq_len)
    assert identify(from_params) == identify(from_hf) and name in identify(from_hf)
    # And back: the files nemo_ref writes parse to the same model.
    assert ModelArgs.from_hf_config(json.loads(json.dumps(preset.to_hf_config()))) == preset
    assert ModelArgs.from_params_json(json.loads(json.dumps(preset.to_params_json()))) == preset


def test_what_differs_between_members():
    v01, v03 = ModelArgs.preset("mistral-7b-v0.1"), ModelArgs.preset("mistral-7b-v0.3")
    assert (v01.sliding_window, v01.rope_theta, v01.vocab_size) == (4096, 1e4, 32000)
    assert (v03.sliding_window, v03.rope_theta, v03.vocab_size) == (None, 1e6, 32768)
    for name in ("mistral-small-2409", "codestral-22b"):
        a = ModelArgs.preset(name)
        assert (a.dim, a.n_layers, a.n_heads, a.n_kv_heads, a.hidden_dim) == (6144, 56, 48, 8, 16384)
    large = ModelArgs.preset("mistral-large-2407")
    assert (large.dim, large.n_layers, large.n_heads, large.n_kv_heads, large.hidden_dim) == (
        12288,
        88,
        96,
        8,
        28672,
    )
    # Every member but Nemo has n_heads * head_dim == dim.
    for name in PUBLISHED:
        a = ModelArgs.preset(name)
        assert a.n_heads * a.head_dim == a.dim and a.head_dim == 128, name


def test_identify_names_members_and_their_twins():
    assert identify(ModelArgs.preset("mistral-7b-v0.3")) == ["mistral-7b-v0.3", "mathstral-7b"]
    assert identify(ModelArgs.preset("codestral-22b")) == ["mistral-small-2409", "codestral-22b"]
    assert identify(ModelArgs.preset("mistral-large-2407")) == ["mistral-large-2407"]
    assert describe(ModelArgs.preset("mistral-7b-v0.1")) == "Mistral 7B v0.1"
    assert describe(ModelArgs.preset("mathstral-7b")) == (
        "Mistral 7B v0.3 or Mathstral 7B v0.1 (same architecture)"
    )
    assert describe(ModelArgs.preset("nemo-tiny")) == "no published family member (a custom shape)"
    # One field off is another model.
    assert identify(ModelArgs.preset("mistral-7b-v0.3").replace(rope_theta=1e4)) == []


def _header_only_checkpoint(path, name: str) -> None:
    """The mistral layout of a full-size member with every tensor's bytes left as a hole.

    The safetensors header is real; the file is extended (sparsely) to its full length, so the
    loader's validation -- names, shapes, dtypes, sizes -- runs exactly as on the published files.
    """
    args = ModelArgs.preset(name)
    model = Transformer(args, device="meta", dtype=torch.bfloat16)
    header, offset = {}, 0
    for key, p in model.named_parameters():
        n = p.numel() * 2
        header[key] = {"dtype": "BF16", "shape": list(p.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path / "consolidated.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    (path / "params.json").write_text(json.dumps(params_json(name)))


def test_inspect_names_the_family_member(tmp_path, capsys):
    from nemo_ref.cli import main

    _header_only_checkpoint(tmp_path, "mistral-7b-v0.3")
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Mistral 7B v0.3 or Mathstral 7B v0.1 (same architecture)" in out
    assert "7,248,023,552" in out
    assert main(["inspect", "--json", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == ["mistral-7b-v0.3", "mathstral-7b"]
    assert info["parameters"] == 7_248_023_552
