"""B2lM as a whole: the seed's call, construction, train(mode), layer-wise configs,
initialisation, weight tying, and the parameter / FLOP accounting against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from basegpt.config import ModelConfig
from basegpt.model import B2lM, LayerNorm, MLP, PostNormBlock, PreNormBlock
from basegpt.model.feedforward import relu
from basegpt.model.positional import Sinusoidal


class _Tokenizer:
    """Stands in for the trained tokenizer of the seed snippet: only len() is used."""

    def __len__(self) -> int:
        return 500


def test_the_seed_constructor_call_works_verbatim():
    tokenizer = _Tokenizer()
    model = B2lM(vocab_size=len(tokenizer), n_embed=128, n_block=4,
                 n_k=32, n_v=32, n_head=4, n_ff=256)
    ids = torch.randint(0, 500, (32, 64))                # the seed's batch_size=32, n_context=64
    logits = model(ids)
    assert logits.shape == (32, 64, 500), f"logits shape {tuple(logits.shape)}"
    # The original design: sinusoidal positions, post-LN LayerNorm blocks, Linear -> ReLU -> Linear.
    assert isinstance(model.positional, Sinusoidal), f"positional {type(model.positional).__name__}"
    assert len(model.blocks) == 4 and all(type(b) is PostNormBlock for b in model.blocks), "post-LN blocks"
    block = model.blocks[0]
    assert isinstance(block.attn_norm, LayerNorm) and isinstance(block.ff, MLP), "LayerNorm + MLP"
    h = torch.randn(5, 7)
    assert torch.equal(block.ff.activation(h), relu(h)), "the activation is ReLU"
    assert block.ff.up.out_features == 256, "MLP of width n_ff"
    assert block.attn.qkv_proj.out_features == 3 * 4 * 32, "Q, K, V each n_head * n_k wide"
    assert isinstance(model.final_norm, torch.nn.Identity), "post-norm needs no final norm"


def test_exported_from_the_package():
    import basegpt

    assert issubclass(basegpt.B2lM, B2lM) and basegpt.ModelConfig is ModelConfig, \
        "public API exports (B2lM: the model plus model.train(loader), basegpt/api.py)"


def test_construction_from_config_dict_and_overrides():
    cfg = ModelConfig(vocab_size=50, n_embed=16, n_block=1, n_head=2, n_k=8, n_v=8, n_ff=32)
    assert B2lM(cfg).config == cfg and B2lM(config=cfg).config == cfg, "config argument"
    assert B2lM(cfg.to_dict()).config == cfg, "dict (e.g. from JSON) argument"
    assert B2lM(cfg, n_ff=64).config == cfg.replace(n_ff=64), "keyword arguments override a config"
    with pytest.raises(ValueError, match="did you mean 'n_embed'"):
        B2lM(vocab_size=50, n_embd=16)


def test_train_with_bool_or_nothing_keeps_pytorch_meaning():
    model = B2lM(ModelConfig(vocab_size=20, n_embed=16, n_block=1, n_head=2, n_k=8, n_v=8, n_ff=16))
    assert model.train() is model and model.training, "train() switches training mode on"
    assert model.train(False) is model and not model.training, "train(False) switches it off"
    assert all(not m.training for m in model.modules()), "train(False) reaches every submodule"
    assert model.train(mode=True).training, "train(mode=True) as in PyTorch"
    assert model.eval() is model and not model.training, "eval() switches it off"


def test_the_plain_model_does_not_train_on_data_and_says_where_to():
    model = B2lM(ModelConfig(vocab_size=20, n_embed=16, n_block=1, n_head=2, n_k=8, n_v=8, n_ff=16))
    with pytest.raises(TypeError, match="from basegpt import B2lM"):
        model.train([1, 2, 3])


# -- accounting, by hand ----------------------------------------------------------------------
# vocab 10, C=8, 2 blocks, H=2, n_k=4, n_v=3, F=16, n_context=6, learned positions, biases:
#   token embedding 10*8 = 80, positions 6*8 = 48, head 8*10 = 80 (no bias)
#   block: qkv 8*(2*4 + 2*4 + 2*3) + 22 = 198, out 6*8 + 8 = 56,
#          ff 8*16 + 16 + 16*8 + 8 = 280, two LayerNorms 2*(8 + 8) = 32      -> 566
#   total 80 + 48 + 2*566 + 80 = 1340; without the two embeddings 1212
#   FLOPs/token at T=6: 6*1212 + 2 blocks * 6*H*(n_k + n_v)*T = 7272 + 2*6*2*7*6 = 8280
SMALL = ModelConfig(vocab_size=10, n_embed=8, n_block=2, n_head=2, n_k=4, n_v=3, n_ff=16,
                    n_context=6, positional="learned")


def test_num_parameters_and_flops_by_hand():
    model = B2lM(SMALL)
    assert model.num_parameters() == 1340, f"num_parameters() = {model.num_parameters()}"
    assert model.num_parameters(exclude_embeddings=True) == 1212, "without embeddings"
    assert model.flops_per_token() == 8280, f"flops_per_token() = {model.flops_per_token()}"
    assert model.flops_per_token(seq_len=3) == 6 * 1212 + 2 * 6 * 2 * 7 * 3, "attention term scales with T"


def test_tied_weights_count_once_and_cost_the_same_flops():
    model = B2lM(SMALL.replace(tie_weights=True))
    assert model.lm_head.weight is model.tok_emb.weight, "head and embedding must be one tensor"
    assert model.num_parameters() == 1340 - 80, f"tied: {model.num_parameters()}"
    assert model.num_parameters(exclude_embeddings=True) == 1212 - 80, "tied, without embeddings"
    assert model.flops_per_token() == 8280, "the head matmul runs whether or not it is tied"
    with torch.no_grad():
        model.tok_emb.weight[3, 0] = 7.0
    assert model.lm_head.weight[3, 0].item() == 7.0, "tied weights must stay shared"


def test_no_bias_removes_every_bias():
    model = B2lM(SMALL.replace(bias=False))
    biases = [n for n, _ in model.named_parameters() if n.endswith("bias")]
    assert biases == [], f"bias=False left {biases}"
    # 1340 - per block (22 + 8 + 16 + 8 + 2*8 LayerNorm biases = 70) * 2
    assert model.num_parameters() == 1340 - 2 * 70, f"no-bias count {model.num_parameters()}"


def test_layerwise_config_changes_exactly_the_blocks_it_names():
    cfg = SMALL.replace(n_block=3, blocks=[{}, {"n_head": 4, "n_ff": 32}, {"activation": "swiglu"}])
    model = B2lM(cfg)
    counts = [sum(p.numel() for p in b.parameters()) for b in model.blocks]
    # block 1: qkv 8*(16+16+12) + 44 = 396, out 12*8 + 8 = 104, ff 8*32+32 + 32*8+8 = 552, norms 32
    # block 2: swiglu gate+up 2*(8*16 + 16) = 288 and down 136, attention 198 + 56, norms 32
    assert counts == [566, 1084, 710], f"per-block parameter counts {counts}"
    assert model.blocks[1].attn.n_head == 4 and model.blocks[0].attn.n_head == 2, "heads per block"


def test_pre_norm_adds_a_final_norm_and_rmsnorm_has_no_bias():
    model = B2lM(SMALL.replace(norm_position="pre", norm="rmsnorm"))
    assert all(type(b) is PreNormBlock for b in model.blocks), "pre-norm blocks"
    assert not isinstance(model.final_norm, torch.nn.Identity), "pre-norm needs a final norm"
    # RMSNorm: gain only, so 2 norms * 8 fewer per block, and a final gain of 8.
    assert model.num_parameters() == 1340 - 2 * 16 + 8, f"count {model.num_parameters()}"


def test_initialisation_follows_gpt2():
    torch.manual_seed(0)
    model = B2lM(ModelConfig(vocab_size=512, n_embed=256, n_block=4, n_head=4, n_k=64, n_v=64, n_ff=512))
    scaled = 0.02 / math.sqrt(2 * 4)
    checks = {
        "tok_emb.weight": 0.02, "lm_head.weight": 0.02, "blocks.0.attn.qkv_proj.weight": 0.02,
        "blocks.0.ff.up.weight": 0.02, "blocks.0.attn.out_proj.weight": scaled, "blocks.3.ff.down.weight": scaled,
    }
    params = dict(model.named_parameters())
    for name, std in checks.items():
        got = params[name].std().item()
        assert abs(got - std) / std < 0.03, f"{name}: std {got:.5f}, expected {std:.5f}"
    assert params["blocks.0.attn.qkv_proj.bias"].abs().max() == 0, "biases start at zero"
    assert (params["blocks.0.ff_norm.weight"] == 1).all(), "norm gains start at one"


@pytest.mark.parametrize("attention", ["manual", "sdpa"])
@pytest.mark.parametrize("site", ["embed_dropout", "attn_dropout", "resid_dropout"])
def test_each_dropout_is_active_in_training_and_off_in_eval(site, attention):
    """One dropout at a time, so a site that never applies its dropout fails on its own."""
    model = B2lM(SMALL.replace(attention=attention, **{site: 0.5}))
    ids = torch.randint(0, 10, (2, 6))
    model.train()
    assert not torch.allclose(model(ids), model(ids)), f"{site} should make training passes differ"
    model.eval()
    torch.testing.assert_close(model(ids), model(ids), msg=f"{site} must be off in eval mode")


@pytest.mark.parametrize("attention", ["manual", "sdpa"])
@pytest.mark.parametrize("site", ["attn_dropout", "resid_dropout"])
def test_a_per_block_dropout_override_acts_in_its_block_only(site, attention):
    model = B2lM(SMALL.replace(attention=attention, blocks=[{}, {site: 0.5}])).train()
    outputs: list[list[torch.Tensor]] = [[], []]
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(lambda m, inp, out, i=i: outputs[i].append(out[0]))
    ids = torch.randint(0, 10, (2, 6))
    model(ids), model(ids)
    torch.testing.assert_close(*outputs[0], msg="block 0 keeps the model-wide dropout 0")
    assert not torch.allclose(*outputs[1]), f"block 1's {site}=0.5 override should make passes differ"


def test_bad_ids_shape_is_a_value_error():
    with pytest.raises(ValueError, match=r"shape \(batch, time\)"):
        B2lM(SMALL)(torch.zeros(6, dtype=torch.long))


@pytest.mark.parametrize("bad, message", [
    (10, r"token id 10 is out of range for vocab_size=10 .*vocab_size=len\(tokenizer\)"),
    (-100, r"token id -100 is negative; ids must be in 0\.\.9 .*pad_id"),
])
def test_out_of_range_ids_are_a_value_error_naming_the_id(bad, message):
    model = B2lM(SMALL)                                  # vocab_size 10: ids 0..9
    ids = torch.tensor([[1, 9, 0], [2, bad, 3]])
    with pytest.raises(ValueError, match=message):
        model(ids)
    ids[1, 1] = 9
    assert model(ids).shape == (2, 3, 10), "the largest valid id, 9, must work"
    assert model(ids.int()).shape == (2, 3, 10), "int32 ids work as nn.Embedding takes them"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.uint8])
def test_ids_that_are_not_int64_or_int32_are_a_type_error(dtype):
    with pytest.raises(TypeError, match=f"integer token ids.*got dtype {dtype}.*ids.long"):
        B2lM(SMALL)(torch.ones(1, 3, dtype=dtype))


@pytest.mark.parametrize("placement", ["post", "pre"])
def test_blocks_compute_their_residual_equations(placement):
    """post: x = n1(x + attn(x)); x = n2(x + ff(x)).  pre: x = x + attn(n1(x)); x = x + ff(n2(x))."""
    torch.manual_seed(0)
    model = B2lM(SMALL.replace(norm_position=placement))
    block = model.blocks[0]
    x = torch.randn(2, 5, 8)
    pos = torch.arange(5)

    def attn(h: torch.Tensor) -> torch.Tensor:
        return block.attn(h, pos, model.positional)[0]

    if placement == "post":
        h = block.attn_norm(x + attn(x))
        expected = block.ff_norm(h + block.ff(h))
    else:
        h = x + attn(block.attn_norm(x))
        expected = h + block.ff(block.ff_norm(h))
    torch.testing.assert_close(block(x, pos, model.positional)[0], expected)


