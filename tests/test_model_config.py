"""ModelConfig: defaults, validation messages, layer-wise overrides, exact JSON round trip."""

from __future__ import annotations

import dataclasses
import json
from typing import get_args, get_type_hints

import pytest

from basegpt.config import BLOCK_FIELDS, BlockOverride, ModelConfig
from basegpt.model import ATTENTION_KERNELS, BLOCKS, FEEDFORWARDS, NORMS, POSITIONALS
from basegpt.model.feedforward import ACTIVATION_KERNELS
from basegpt.model.norms import NORM_KERNELS


def test_defaults_are_the_original_design():
    cfg = ModelConfig()
    got = (cfg.norm_position, cfg.norm, cfg.positional, cfg.activation, cfg.tie_weights)
    assert got == ("post", "layernorm", "sinusoidal", "relu", False), f"defaults drifted: {got}"
    assert cfg.n_context >= 64, f"n_context={cfg.n_context} must allow the seed's context of 64"


@pytest.mark.parametrize("field, registry", [
    ("norm", NORMS), ("positional", POSITIONALS), ("activation", FEEDFORWARDS),
    ("attention", ATTENTION_KERNELS), ("norm_position", BLOCKS), ("norm_kernel", NORM_KERNELS),
    ("activation_kernel", ACTIVATION_KERNELS),
])
def test_literal_choices_match_the_component_dicts(field, registry):
    choices = set(get_args(get_type_hints(ModelConfig)[field]))
    assert choices == set(registry), f"{field}: Literal {choices} vs implementations {set(registry)}"


def test_block_override_fields_are_model_fields():
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    assert set(BLOCK_FIELDS) <= model_fields, f"override-only fields: {set(BLOCK_FIELDS) - model_fields}"


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().n_head = 8  # type: ignore[misc]


@pytest.mark.parametrize("cfg", [
    ModelConfig(),
    ModelConfig(vocab_size=1000, n_context=128, n_block=3, n_head=8, n_kv_head=2, n_k=16, n_v=24,
                norm_position="pre", norm="rmsnorm", norm_kernel="manual", positional="rope", activation="swiglu",
                attention="manual", embed_dropout=0.1, attn_dropout=0.05, resid_dropout=0.2,
                bias=False, tie_weights=True, rope_base=500000.0, norm_eps=1e-6, init_std=0.01,
                blocks=({}, {"n_head": 4, "n_kv_head": 1, "n_ff": 512}, {"activation": "gelu", "norm": "layernorm",
                                                                          "attention": "sdpa", "attn_dropout": 0.0}))
], ids=["default", "everything"])
def test_json_round_trip_is_exact(cfg):
    back = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg, f"round trip changed the config:\n{cfg}\n{back}"
    assert json.loads(json.dumps(back.to_dict())) == cfg.to_dict(), "second round trip differs"


def test_ints_for_floats_still_round_trip():
    cfg = ModelConfig(rope_base=10000, init_std=1)      # ints where floats are meant
    assert isinstance(cfg.rope_base, float) and isinstance(cfg.init_std, float), "not normalised to float"
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg, "round trip failed"


def test_block_overrides_resolve_on_top_of_model_wide_fields():
    cfg = ModelConfig(n_block=3, n_head=4, n_kv_head=2, n_ff=64,
                      blocks=[{}, {"n_head": 8, "n_ff": 128}, {"n_kv_head": 4, "activation": "gelu"}])
    b0, b1, b2 = cfg.block_configs
    assert (b0.n_head, b0.n_kv_head, b0.n_ff, b0.activation) == (4, 2, 64, "relu"), f"block 0: {b0}"
    assert (b1.n_head, b1.n_kv_head, b1.n_ff) == (8, 2, 128), f"block 1: {b1}"
    assert (b2.n_head, b2.n_kv_head, b2.activation) == (4, 4, "gelu"), f"block 2: {b2}"
    assert isinstance(cfg.blocks[1], BlockOverride), "dict overrides must become BlockOverride"


def test_plain_multi_head_follows_a_block_s_own_n_head():
    cfg = ModelConfig(n_block=2, n_head=4, blocks=[{}, {"n_head": 2}])
    assert cfg.block_config(1).n_kv_head == 2, "n_kv_head=None must mean 'as many as this block's n_head'"


@pytest.mark.parametrize("kwargs, expected", [
    ({"n_haed": 4}, "unknown key 'n_haed'; did you mean 'n_head'?"),
    ({"blocks": [{"n_fff": 3}, {}, {}, {}]}, "blocks[0]: unknown key 'n_fff'; did you mean 'n_ff'?"),
    ({"n_head": 3, "n_kv_head": 2}, "n_head=3: n_head=3 must be divisible by n_kv_head=2"),
    ({"n_block": 3, "n_kv_head": 2, "blocks": [{}, {}, {"n_head": 3}]},
     "blocks[2].n_head=3: n_head=3 must be divisible by n_kv_head=2"),
    ({"n_block": 2, "blocks": [{}, {"n_kv_head": 3}]},
     "blocks[1].n_kv_head=3: n_head=4 must be divisible by n_kv_head=3"),
    ({"positional": "rope", "n_k": 15}, "n_k=15: positional='rope'"),
    ({"positional": "rope", "n_block": 2, "blocks": [{"n_k": 7}, {}]}, "blocks[0].n_k=7"),
    ({"norm": "layer_norm"}, "norm='layer_norm': choose one of 'layernorm', 'rmsnorm' (did you mean 'layernorm'?)"),
    ({"n_block": 2, "blocks": [{}, {"activation": "tanh"}]}, "blocks[1].activation='tanh'"),
    ({"attn_dropout": 1.0}, "attn_dropout=1.0: a dropout probability must be in [0, 1)"),
    ({"n_block": 2, "blocks": [{}, {"resid_dropout": -0.1}]}, "blocks[1].resid_dropout=-0.1"),
    ({"n_embed": 0}, "n_embed=0: must be a positive integer"),
    ({"n_head": 2.0}, "n_head=2.0: must be a positive integer"),
    ({"bias": "yes"}, "bias='yes': must be true or false"),
    ({"n_block": 3, "blocks": [{}, {}]}, "blocks has 2 entries but n_block=3"),
    ({"norm_eps": 0}, "norm_eps=0.0: must be a finite positive number"),
    ({"init_std": float("inf")}, "init_std=inf: must be a finite positive number"),
    ({"norm_kernel": "triton"}, "norm_kernel='triton': choose one of 'manual', 'fused'"),
])
def test_bad_configs_raise_value_errors_naming_the_field(kwargs, expected):
    with pytest.raises(ValueError) as info:
        ModelConfig.from_dict(kwargs)
    assert expected in str(info.value), f"message {str(info.value)!r} lacks {expected!r}"


@pytest.mark.parametrize("field", ["n_embed", "positional", "norm_position", "bias"])
def test_a_block_cannot_override_a_model_wide_field(field):
    with pytest.raises(ValueError) as info:
        ModelConfig.from_dict({"n_block": 2, "blocks": [{}, {field: ModelConfig().to_dict()[field]}]})
    message = str(info.value)
    expected = (f"blocks[1]: {field!r} is a model-wide field that a block cannot override",
                "set it at the top level", "A block may set: " + ", ".join(BLOCK_FIELDS))
    for part in expected:
        assert part in message, f"message {message!r} lacks {part!r}"
    assert "did you mean" not in message, f"a model-wide field is not a typo: {message!r}"


def test_calling_the_dataclass_directly_rejects_unknown_keys_as_readme_says():
    """README: from_dict / B2lM(...) / replace suggest the field; the bare dataclass call is
    Python's TypeError, which still names the key."""
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_haed'"):
        ModelConfig(n_haed=4)
    with pytest.raises(ValueError, match="did you mean 'n_head'"):
        ModelConfig.from_dict({"n_haed": 4})


def test_replace_validates_and_suggests():
    cfg = ModelConfig()
    assert cfg.replace(n_head=8).n_head == 8, "replace did not change the field"
    with pytest.raises(ValueError, match="did you mean 'n_head'"):
        cfg.replace(n_heads=8)
    with pytest.raises(ValueError, match="divisible"):
        cfg.replace(n_kv_head=3)
