"""Norms, activations and positional encodings against their formulas and their defining properties."""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import pytest
import torch
import torch.nn.functional as F

import basegpt.config
from basegpt.config import ModelConfig
from basegpt.model import B2lM
from basegpt.model.feedforward import ACTIVATIONS, FEEDFORWARDS, MLP, SwiGLU, gelu_tanh
from basegpt.model.norms import NORMS, LayerNorm, RMSNorm, build_norm
from basegpt.model.positional import POSITIONALS, Learned, Rotary, Sinusoidal, sinusoid_table


def test_layernorm_matches_torch():
    torch.manual_seed(0)
    ln = LayerNorm(16, eps=1e-5, kernel="manual")
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(3, 5, 16) * 4 + 2
    expected = F.layer_norm(x, (16,), ln.weight, ln.bias, eps=1e-5)
    torch.testing.assert_close(ln(x), expected, rtol=1e-5, atol=1e-5)


def test_layernorm_without_bias_has_no_bias_parameter():
    ln = LayerNorm(8, bias=False, kernel="manual")
    assert [n for n, _ in ln.named_parameters()] == ["weight"], "bias=False must drop the bias"
    x = torch.randn(4, 8)
    torch.testing.assert_close(ln(x), F.layer_norm(x, (8,), ln.weight, None), rtol=1e-5, atol=1e-5)


def test_rmsnorm_matches_its_formula_and_normalises_scale():
    torch.manual_seed(0)
    norm = RMSNorm(16, eps=1e-6, kernel="manual")
    x = torch.randn(2, 7, 16) * 3
    expected = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x), expected)
    rms = norm(x).pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-4, atol=1e-4)
    assert [n for n, _ in norm.named_parameters()] == ["weight"], "RMSNorm has a gain only"


@pytest.mark.parametrize("name", sorted(NORMS))
def test_manual_and_fused_norm_kernels_agree_with_gradients(name):
    torch.manual_seed(0)
    manual, fused = build_norm(name, 16, kernel="manual"), build_norm(name, 16, kernel="fused")
    with torch.no_grad():
        for p in manual.parameters():
            p.normal_()
    fused.load_state_dict(manual.state_dict())
    x = torch.randn(3, 5, 16, requires_grad=True) * 2 + 1
    outs = [norm(x) for norm in (manual, fused)]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    w = torch.randn(16)
    g_manual = torch.autograd.grad((outs[0] * w).sum(), [x, *manual.parameters()])
    g_fused = torch.autograd.grad((outs[1] * w).sum(), [x, *fused.parameters()])
    for a, b in zip(g_manual, g_fused):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="choose one of: manual, fused"):
        build_norm(name, 4, kernel="cuda")


def test_build_norm_rejects_unknown_names():
    assert set(NORMS) == {"layernorm", "rmsnorm"}, f"unexpected norms {set(NORMS)}"
    with pytest.raises(ValueError, match="choose one of: layernorm, rmsnorm"):
        build_norm("batchnorm", 4)


def test_gelu_is_the_tanh_approximation():
    x = torch.linspace(-6, 6, 1001)
    torch.testing.assert_close(gelu_tanh(x), F.gelu(x, approximate="tanh"))
    # and it is an approximation: exact GELU differs, though by less than 1e-3
    diff = (gelu_tanh(x) - F.gelu(x)).abs().max().item()
    assert 0 < diff < 1e-3, f"tanh-GELU vs exact GELU max diff {diff}"


def test_relu_and_silu_activations():
    x = torch.linspace(-3, 3, 61)
    torch.testing.assert_close(ACTIVATIONS["relu"](x), torch.relu(x))
    torch.testing.assert_close(ACTIVATIONS["silu"](x), F.silu(x))


def test_swiglu_formula_and_parameter_count():
    torch.manual_seed(0)
    ff = FEEDFORWARDS["swiglu"](8, 12, bias=False)
    assert isinstance(ff, SwiGLU), f"swiglu built {type(ff).__name__}"
    x = torch.randn(2, 3, 8)
    expected = (F.silu(x @ ff.gate.weight.T) * (x @ ff.up.weight.T)) @ ff.down.weight.T
    torch.testing.assert_close(ff(x), expected)
    n = sum(p.numel() for p in ff.parameters())
    assert n == 3 * 8 * 12, f"SwiGLU has three C x F matrices, got {n} parameters"


@pytest.mark.parametrize("name", ["relu", "gelu"])
def test_mlp_variants(name):
    torch.manual_seed(0)
    ff = FEEDFORWARDS[name](8, 12, bias=True)
    assert isinstance(ff, MLP), f"{name} built {type(ff).__name__}"
    x = torch.randn(2, 3, 8)
    act = torch.relu if name == "relu" else (lambda h: F.gelu(h, approximate="tanh"))
    torch.testing.assert_close(ff(x), ff.down(act(ff.up(x))))


def test_sinusoid_table_matches_the_formula():
    P, C = 50, 16
    table = sinusoid_table(P, C)
    for p in (0, 1, 7, 49):
        for i in range(C // 2):
            angle = p / 10000 ** (2 * i / C)
            assert math.isclose(table[p, 2 * i].item(), math.sin(angle), abs_tol=1e-6), f"sin at p={p}, i={i}"
            assert math.isclose(table[p, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6), f"cos at p={p}, i={i}"
    odd = sinusoid_table(P, 7)                      # an odd width ends with a sine column
    assert odd.shape == (P, 7), f"odd table shape {tuple(odd.shape)}"
    assert math.isclose(odd[9, 6].item(), math.sin(9 / 10000 ** (6 / 7)), abs_tol=1e-6), "last odd column"


def test_sinusoidal_embed_adds_the_table_at_the_given_positions():
    pe = Sinusoidal(ModelConfig(n_embed=8, n_context=32))
    x = torch.zeros(2, 3, 8)
    pos = torch.tensor([5, 6, 7])
    torch.testing.assert_close(pe.embed(x, pos), sinusoid_table(32, 8)[5:8].expand(2, 3, 8))
    assert not list(pe.state_dict()), "the fixed table is derived from the config, not saved"
    tokens = torch.randn(2, 3, 8)
    torch.testing.assert_close(pe.embed(tokens, pos), tokens * 8 ** 0.5 + sinusoid_table(32, 8)[5:8],
                               msg="token embeddings are scaled by sqrt(C) (Vaswani et al., 3.4)")


def test_learned_positions_are_parameters_indexed_by_position():
    pe = Learned(ModelConfig(n_embed=8, n_context=32))
    x = torch.zeros(1, 2, 8)
    torch.testing.assert_close(pe.embed(x, torch.tensor([3, 9])), pe.weight[[3, 9]].unsqueeze(0))
    assert pe.weight.shape == (32, 8), f"table shape {tuple(pe.weight.shape)}"


def test_rope_scores_depend_only_on_relative_offset():
    torch.manual_seed(0)
    rope = Rotary(ModelConfig(n_embed=32, n_k=16, n_context=64))
    q = torch.randn(1, 1, 1, 16)
    k = torch.randn(1, 1, 1, 16)

    def score(m: int, n: int) -> float:
        qr, _ = rope.rotate(q, q, torch.tensor([m]))
        _, kr = rope.rotate(k, k, torch.tensor([n]))
        return (qr * kr).sum().item()

    for offset in (0, 1, 5, 20):
        scores = [score(m, m + offset) for m in (0, 3, 17, 40)]
        assert max(scores) - min(scores) < 1e-4, f"offset {offset}: scores vary with position: {scores}"
    assert abs(score(0, 1) - score(0, 9)) > 1e-3, "scores should change with the offset"


@pytest.mark.parametrize("base", [10000.0, 100.0])
def test_rope_turns_each_pair_by_position_times_its_frequency(base):
    """Pair i is (x[i], x[i + D/2]) ("rotate half"), turned by p * base ** (-2i / D): the basis
    vector e_i goes to cos * e_i + sin * e_(i + D/2), and e_(i + D/2) to -sin * e_i + cos * e_(i + D/2)."""
    D, h = 8, 4
    rope = Rotary(ModelConfig(n_embed=32, n_k=D, n_context=64, positional="rope", rope_base=base))
    basis = torch.eye(D).view(1, D, 1, D)                  # (B, H, T, D): "head" j holds e_j
    for p in (0, 1, 5, 63):
        rotated, _ = rope.rotate(basis, basis, torch.tensor([p]))
        rotated = rotated[0, :, 0].T                       # (D, D): column j is the image of e_j
        expected = torch.zeros(D, D, dtype=torch.float64)
        for i in range(h):
            angle = p * base ** (-2 * i / D)
            c, s = math.cos(angle), math.sin(angle)
            expected[i, i], expected[i + h, i] = c, s
            expected[i, i + h], expected[i + h, i + h] = -s, c
        torch.testing.assert_close(rotated, expected.float(), rtol=0, atol=1e-6,
                                   msg=lambda m: f"position {p}, rope_base {base}: {m}")


def test_rope_base_changes_the_rotation():
    q = torch.randn(1, 1, 1, 8)
    turned = []
    for base in (10000.0, 100.0):
        rope = Rotary(ModelConfig(n_embed=32, n_k=8, positional="rope", rope_base=base))
        turned.append(rope.rotate(q, q, torch.tensor([5]))[0])
    assert not torch.allclose(turned[0], turned[1]), "rope_base must change the slower pairs' angles"


def test_rope_preserves_norms_and_is_identity_at_position_zero():
    rope = Rotary(ModelConfig(n_embed=32, n_k=8, n_context=16))
    q = torch.randn(2, 3, 4, 8)
    qr, kr = rope.rotate(q, q, torch.arange(4))
    torch.testing.assert_close(qr.norm(dim=-1), q.norm(dim=-1))
    torch.testing.assert_close(qr[:, :, 0], q[:, :, 0])


def test_rope_keeps_one_table_per_head_width():
    cfg = ModelConfig(n_embed=32, n_k=8, n_block=2, positional="rope", blocks=[{}, {"n_k": 4}])
    rope = POSITIONALS["rope"](cfg)
    assert set(rope.tables) == {"4", "8"}, f"tables for widths {set(rope.tables)}"
    q = torch.randn(1, 1, 3, 4)
    qr, _ = rope.rotate(q, q, torch.arange(3))
    assert qr.shape == q.shape, f"rotated shape {tuple(qr.shape)}"


def test_per_row_positions_broadcast_like_shared_positions():
    """Per-row (B, T) positions (the hook for left-padded batches) equal shared (T,) positions."""
    cfg = ModelConfig(n_embed=16, n_k=8, n_context=16)
    q = torch.randn(2, 3, 5, 8)
    rows = torch.arange(5).expand(2, 5)
    rope = Rotary(cfg)
    torch.testing.assert_close(rope.rotate(q, q, rows)[0], rope.rotate(q, q, torch.arange(5))[0])
    pe = Sinusoidal(cfg)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(pe.embed(x, rows), pe.embed(x, torch.arange(5)))


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    """relu(x) ** 2 (Primer, So et al. 2021): README's "Adding a variant" example."""
    return torch.relu(x).square()


@pytest.mark.parametrize("kernel", ["manual", "fused"])
def test_the_readme_recipe_adds_an_activation(monkeypatch, kernel):
    """README, "Adding a variant": one function, its FEEDFORWARDS entry and its Literal name."""
    monkeypatch.setitem(FEEDFORWARDS, "relu2", partial(MLP, activation=relu_squared))
    monkeypatch.setattr(basegpt.config, "Activation", Literal["relu", "gelu", "swiglu", "relu2"])
    torch.manual_seed(0)
    model = B2lM(vocab_size=20, n_context=8, n_block=2, n_embed=16, n_head=2, n_k=8, n_v=8, n_ff=24,
                 activation_kernel=kernel, blocks=[{}, {"activation": "relu2"}])
    seen = {}
    model.blocks[1].ff.register_forward_hook(lambda m, inp, out: seen.update(h=inp[0], y=out))
    model(torch.randint(0, 20, (2, 6)))
    ff = model.blocks[1].ff
    up = seen["h"] @ ff.up.weight.T + ff.up.bias                      # (B, T, F)
    expected = up.clamp_min(0) ** 2 @ ff.down.weight.T + ff.down.bias  # (B, T, C)
    torch.testing.assert_close(seen["y"], expected, msg="block 1 must run down(relu(up(x)) ** 2)")
    h = torch.randn(3, 16)
    assert torch.equal(model.blocks[0].ff.activation(h), h.clamp_min(0)), "block 0 keeps ReLU"
    assert ModelConfig.from_dict(model.config.to_dict()) == model.config, "JSON round trip"


@pytest.mark.parametrize("name", ["relu", "gelu", "swiglu"])
def test_manual_and_fused_activation_kernels_agree_with_gradients(name):
    torch.manual_seed(0)
    manual = FEEDFORWARDS[name](16, 32, kernel="manual")
    fused = FEEDFORWARDS[name](16, 32, kernel="fused")
    fused.load_state_dict(manual.state_dict())
    x = torch.randn(2, 5, 16, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out_m, out_f = manual(x), fused(x2)
    torch.testing.assert_close(out_f, out_m, msg=f"{name}: fused output differs from the formula")
    out_m.square().sum().backward()
    out_f.square().sum().backward()
    torch.testing.assert_close(x2.grad, x.grad, msg=f"{name}: fused gradient differs")
