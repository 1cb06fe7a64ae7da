"""ModelArgs: the published Nemo config files, RoPE-scaling blocks, presets, and clear ConfigErrors."""

from __future__ import annotations

import json

import pytest

from nemo_ref.config import PRESETS, ConfigError, ModelArgs, RopeScaling

# mistralai/Mistral-Nemo-Instruct-2407, as published.
NEMO_PARAMS_JSON = {
    "dim": 5120,
    "n_layers": 40,
    "head_dim": 128,
    "hidden_dim": 14336,
    "n_heads": 32,
    "n_kv_heads": 8,
    "norm_eps": 1e-05,
    "vocab_size": 131072,
    "rope_theta": 1000000.0,
}
NEMO_CONFIG_JSON = {
    "architectures": ["MistralForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 5120,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 1024000,
    "model_type": "mistral",
    "num_attention_heads": 32,
    "num_hidden_layers": 40,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0",
    "use_cache": True,
    "vocab_size": 131072,
}


def test_nemo_params_json():
    a = ModelArgs.from_params_json(NEMO_PARAMS_JSON)
    assert a == ModelArgs.preset("nemo-12b")
    assert (a.dim, a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim) == (5120, 4096, 1024)
    assert a.rope_scaling.rope_type == "default" and a.llama4_beta is None and not a.tied_embeddings


def test_nemo_hf_config_json_with_its_placeholder_max_position_embeddings():
    a = ModelArgs.from_hf_config(NEMO_CONFIG_JSON)
    assert a.max_seq_len == 131072  # 1024000 is a placeholder; the model supports 128k
    assert a == ModelArgs.preset("nemo-12b")
    assert a.head_dim == 128 != a.dim // a.n_heads  # never derived from dim when given


def test_from_dir_reads_either_file(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "params.json").write_text(json.dumps(NEMO_PARAMS_JSON))
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "config.json").write_text(json.dumps(NEMO_CONFIG_JSON))
    assert ModelArgs.from_dir(tmp_path / "m") == ModelArgs.from_dir(tmp_path / "h")
    with pytest.raises(ConfigError, match=r"neither params\.json"):
        ModelArgs.from_dir(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        ModelArgs.from_dir(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "params.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"params\.json is not valid JSON"):
        ModelArgs.from_dir(tmp_path / "bad")


def test_head_dim_defaults_to_dim_over_heads_only_when_absent():
    p = {k: v for k, v in NEMO_PARAMS_JSON.items() if k != "head_dim"}
    assert ModelArgs.from_params_json(p).head_dim == 160
    c = {k: v for k, v in NEMO_CONFIG_JSON.items() if k != "head_dim"}
    assert ModelArgs.from_hf_config(c).head_dim == 160


def test_params_json_yarn_block_maps_to_transformers_names():
    a = ModelArgs.from_params_json(
        NEMO_PARAMS_JSON
        | {
            "yarn": {
                "factor": 16.0,
                "original_max_position_embeddings": 8192,
                "beta": 24.0,
                "alpha": 2.0,
                "apply_scale": False,
            }
        }
    )
    assert a.rope_scaling == RopeScaling(
        rope_type="yarn",
        factor=16.0,
        original_max_position_embeddings=8192,
        beta_fast=24.0,
        beta_slow=2.0,
        attention_factor=1.0,
    )
    # apply_scale true (or absent): the attention factor is left to YaRN's mscale formula.
    b = ModelArgs.from_params_json(
        NEMO_PARAMS_JSON
        | {"yarn": {"factor": 16.0, "original_max_position_embeddings": 8192, "apply_scale": True}}
    )
    assert b.rope_scaling.attention_factor is None
    assert (b.rope_scaling.beta_fast, b.rope_scaling.beta_slow) == (32.0, 1.0)  # the paper's defaults


def test_params_json_llama_4_scaling():
    a = ModelArgs.from_params_json(
        NEMO_PARAMS_JSON | {"llama_4_scaling": {"beta": 0.1, "original_max_position_embeddings": 8192}}
    )
    assert (a.llama4_beta, a.llama4_original_max) == (0.1, 8192)
    assert ModelArgs.from_params_json(a.to_params_json()) == a
    with pytest.raises(ConfigError, match="llama_4"):
        a.to_hf_config()  # no MistralForCausalLM equivalent


def test_hf_rope_scaling_legacy_and_rope_parameters():
    legacy = ModelArgs.from_hf_config(NEMO_CONFIG_JSON | {"rope_scaling": {"type": "linear", "factor": 2.0}})
    assert legacy.rope_scaling == RopeScaling(rope_type="linear", factor=2.0)
    # transformers >= 5 writes rope_parameters, with rope_theta inside.
    c = {k: v for k, v in NEMO_CONFIG_JSON.items() if k != "rope_theta"}
    new = ModelArgs.from_hf_config(
        c
        | {
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 5e5,
                "factor": 8.0,
                "original_max_position_embeddings": 8192,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
            }
        }
    )
    assert new.rope_theta == 5e5
    assert new.rope_scaling == RopeScaling(
        rope_type="llama3",
        factor=8.0,
        original_max_position_embeddings=8192,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
    )
    default = ModelArgs.from_hf_config(c | {"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}})
    assert default == ModelArgs.preset("nemo-12b")


@pytest.mark.parametrize(
    "rope",
    [
        RopeScaling(),
        RopeScaling("linear", factor=2.0),
        RopeScaling("dynamic", factor=2.0),
        RopeScaling(
            "yarn",
            factor=4.0,
            original_max_position_embeddings=2048,
            beta_fast=8.0,
            beta_slow=0.5,
            mscale=1.0,
            mscale_all_dim=0.5,
            truncate=False,
        ),
        RopeScaling(
            "llama3",
            factor=8.0,
            original_max_position_embeddings=8192,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
        ),
    ],
)
def test_round_trips_through_both_config_files(rope):
    for name in PRESETS:
        a = ModelArgs.preset(name).replace(rope_scaling=rope)
        assert ModelArgs.from_params_json(json.loads(json.dumps(a.to_params_json()))) == a
        assert ModelArgs.from_hf_config(json.loads(json.dumps(a.to_hf_config()))) == a


def test_nemo_presets_are_nemo_shaped():
    for name, a in PRESETS.items():
        if name.startswith("nemo-"):
            assert a.n_heads * a.head_dim != a.dim, name
            assert a.vocab_size == 131072, name
    mid = ModelArgs.preset("nemo-mid")
    assert (mid.n_heads, mid.n_kv_heads, mid.head_dim, mid.n_layers, mid.dim) == (32, 8, 128, 4, 1024)
    with pytest.raises(ConfigError, match="unknown preset 'nemo-7b'"):
        ModelArgs.preset("nemo-7b")


P = NEMO_PARAMS_JSON
C = NEMO_CONFIG_JSON


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (P | {"foo": 1}, r"unknown field\(s\) \['foo'\]"),
        (
            P | {"yarn": {"factor": 4.0, "original_max_position_embeddings": 8, "gamma": 1}},
            r"'yarn'.*\['gamma'\]",
        ),
        (P | {"yarn": {"original_max_position_embeddings": 8}}, r"'yarn' is missing.*\['factor'\]"),
        (
            P | {"llama_4_scaling": {"beta": 0.1}},
            r"llama_4_scaling' is missing.*original_max_position_embeddings",
        ),
        (P | {"llama_4_scaling": {"beta": 0.1, "original_max_position_embeddings": 8, "x": 1}}, r"\['x'\]"),
        (
            P
            | {
                "yarn": {"factor": 2.0, "original_max_position_embeddings": 8},
                "rope_scaling": {"type": "linear"},
            },
            "both 'yarn' and 'rope_scaling'",
        ),
        (P | {"max_seq_len": 100, "max_position_embeddings": 200}, "max_seq_len .* disagree"),
        (P | {"sliding_window": "4096"}, "sliding_window must be an integer or null"),
        (P | {"sliding_window": 0}, "sliding_window must be a positive integer"),
        (P | {"moe": {"num_experts": 8}}, "mixture-of-experts"),
        ({k: v for k, v in P.items() if k != "vocab_size"}, "missing required field 'vocab_size'"),
        (P | {"head_dim": 127}, "head_dim must be even"),
        (P | {"n_kv_heads": 5}, r"n_heads \(32\) must be a multiple of n_kv_heads \(5\)"),
        (P | {"dim": 0}, "dim must be a positive integer"),
        (P | {"norm_eps": -1.0}, "norm_eps"),
        (P | {"rope_theta": 0.5}, "rope_theta"),
        (
            P | {"rope_scaling": {"rope_type": "longrope", "factor": 2.0}},
            "rope type 'longrope' is not supported",
        ),
    ],
)
def test_params_json_errors_name_the_field(params, message):
    with pytest.raises(ConfigError, match=message):
        ModelArgs.from_params_json(params)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (C | {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "only MistralForCausalLM"),
        (C | {"sliding_window": 4096.5}, "sliding_window must be an integer or null"),
        (C | {"sliding_window": -1}, "sliding_window must be a positive integer"),
        (C | {"hidden_act": "gelu"}, "hidden_act must be 'silu'"),
        ({k: v for k, v in C.items() if k != "hidden_size"}, "missing required field 'hidden_size'"),
        (
            C | {"rope_scaling": {"rope_type": "linear", "factor": 2.0, "foo": 1}},
            r"unknown field\(s\) \['foo'\]",
        ),
        (C | {"rope_scaling": {"rope_type": "linear"}}, "needs a 'factor'"),
        (
            C | {"rope_scaling": {"rope_type": "yarn", "factor": 2.0}},
            "needs 'original_max_position_embeddings'",
        ),
        (C | {"rope_scaling": {"rope_type": "su", "factor": 2.0}}, "rope type 'su' is not supported"),
        (
            C
            | {
                "rope_scaling": {"rope_type": "linear", "factor": 2.0},
                "rope_parameters": {"rope_type": "yarn", "factor": 2.0},
            },
            "both rope_scaling and rope_parameters",
        ),
        (C | {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}, "rope_theta .* disagree"),
        (C | {"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
        (C | {"num_key_value_heads": 3}, "multiple of n_kv_heads"),
    ],
)
def test_hf_config_errors_name_the_field(config, message):
    with pytest.raises(ConfigError, match=message):
        ModelArgs.from_hf_config(config)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("bad", [None, "8", True, [8]])
def test_non_numeric_fields_name_the_field(bad):
    base = {"dim": 8, "n_layers": 2, "hidden_dim": 4, "n_heads": 2, "n_kv_heads": 1, "vocab_size": 10}
    with pytest.raises(ConfigError, match=r"params.json: n_heads must be a number"):
        ModelArgs.from_params_json({**base, "n_heads": bad})
    hf = {"hidden_size": 8, "num_hidden_layers": 2, "intermediate_size": 4, "num_attention_heads": 2}
    with pytest.raises(ConfigError, match=r"config.json: rms_norm_eps must be a number"):
        ModelArgs.from_hf_config({**hf, "rms_norm_eps": bad})
