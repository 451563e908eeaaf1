"""Attention: the manual and sdpa kernels agree (outputs and gradients) for every model variant;
every variant is causal; grouped-query attention is multi-head attention with shared kv heads."""

from __future__ import annotations

import itertools

import pytest
import torch

from basegpt.config import ModelConfig
from basegpt.model import B2lM
from basegpt.model.attention import ATTENTION_KERNELS, attention_manual, attention_sdpa, causal_mask

V = 37


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=V, n_context=16, n_block=2, n_embed=32, n_head=4, n_k=8, n_v=8, n_ff=48)
    return ModelConfig(**(base | kw))


def twin_models(**kw) -> tuple[B2lM, B2lM]:
    """The same weights, one model on the reference paths (manual attention, norms and
    activations), the other on the fast ones (sdpa, fused norms and activations)."""
    torch.manual_seed(0)
    manual = B2lM(tiny(attention="manual", norm_kernel="manual", activation_kernel="manual", **kw))
    sdpa = B2lM(tiny(attention="sdpa", norm_kernel="fused", activation_kernel="fused", **kw))
    sdpa.load_state_dict(manual.state_dict())
    return manual, sdpa


# -- kernels ---------------------------------------------------------------------------------

@pytest.mark.parametrize("H, G, T, S, D, Dv, masked", [
    (4, 4, 6, 6, 8, 8, False),      # plain causal training shape
    (4, 2, 6, 6, 8, 12, False),     # grouped-query, n_v != n_k
    (4, 1, 3, 9, 8, 8, False),      # multi-query, queries after a cached prefix
    (4, 4, 1, 9, 8, 4, False),      # single-token decode
    (2, 2, 5, 5, 4, 4, True),       # explicit bool mask
])
def test_kernels_agree_outputs_and_gradients(H, G, T, S, D, Dv, masked):
    torch.manual_seed(0)
    q = torch.randn(2, H, T, D, requires_grad=True)
    k = torch.randn(2, G, S, D, requires_grad=True)
    v = torch.randn(2, G, S, Dv, requires_grad=True)
    mask = None
    if masked:
        mask = causal_mask(T, S) & (torch.rand(2, 1, T, S) > 0.3)
        mask[..., 0] = True                             # every query keeps one key: no empty rows
    results = []
    for kernel in (attention_manual, attention_sdpa):
        out, _ = kernel(q, k, v, mask)
        assert out.shape == (2, H, T, Dv), f"{kernel.__name__} gave {tuple(out.shape)}"
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, Dv)).sum(), (q, k, v))
        results.append((out, grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    for g_manual, g_sdpa in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g_manual, g_sdpa, rtol=1e-4, atol=1e-5)


def test_grouped_kernel_equals_repeated_kv_heads():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 6, 5, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    for kernel in ATTENTION_KERNELS.values():
        grouped, _ = kernel(q, k, v)
        full, _ = kernel(q, k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1))
        torch.testing.assert_close(grouped, full)


def test_manual_kernel_returns_causal_weights_on_request():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 6)
    out, weights = attention_manual(q, k, v, return_weights=True)
    assert weights.shape == (2, 3, 5, 5), f"weights shape {tuple(weights.shape)}"
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))
    assert (weights.triu(diagonal=1) == 0).all(), "a query attended to a later key"
    torch.testing.assert_close(out, weights @ v)
    assert attention_manual(q, k, v)[1] is None, "weights must only be returned when asked"
    with pytest.raises(ValueError, match="manual kernel"):
        attention_sdpa(q, k, v, return_weights=True)


def test_causal_mask_aligns_queries_to_the_end():
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(2, 4), expected), f"causal_mask(2, 4) = {causal_mask(2, 4)}"


# -- every model variant: manual == sdpa, and causal -----------------------------------------

VARIANTS = list(itertools.product(
    ["sinusoidal", "learned", "rope", "none"], ["post", "pre"], ["layernorm", "rmsnorm"],
    ["relu", "gelu", "swiglu"], [None, 2],
))


# Targeted cases beside the grid, each with a choice the grid keeps fixed (one case each keeps it fast).
EXTRA_VARIANTS = {
    "multi-query": dict(n_kv_head=1, positional="rope"),
    "n_k != n_v": dict(n_k=8, n_v=12, n_kv_head=2, positional="rope", norm_position="pre"),
    "no bias": dict(bias=False, positional="learned"),
    "tied head": dict(tie_weights=True, norm_position="pre", norm="rmsnorm"),
    "layer-wise": dict(n_block=3, n_kv_head=2, positional="rope", norm_position="pre",
                       blocks=[{}, {"n_head": 2, "n_kv_head": 1, "n_k": 4, "n_v": 12},
                               {"n_head": 8, "n_ff": 16, "activation": "swiglu", "norm": "rmsnorm"}]),
}


@pytest.mark.parametrize("positional, norm_position, norm, activation, n_kv_head", VARIANTS)
def test_manual_and_sdpa_models_agree_and_are_causal(positional, norm_position, norm, activation, n_kv_head):
    check_manual_and_sdpa_agree_and_are_causal(positional=positional, norm_position=norm_position,
                                               norm=norm, activation=activation, n_kv_head=n_kv_head)


@pytest.mark.parametrize("name", sorted(EXTRA_VARIANTS))
def test_manual_and_sdpa_agree_and_are_causal_for_heads_biases_tying_and_layers(name):
    check_manual_and_sdpa_agree_and_are_causal(**EXTRA_VARIANTS[name])


def check_manual_and_sdpa_agree_and_are_causal(**kw) -> None:
    """Same logits and gradients from the reference and fast twins; both causal."""
    manual, sdpa = twin_models(**kw)
    torch.manual_seed(1)
    ids = torch.randint(0, V, (2, 12))
    targets = torch.randint(0, V, (2, 12))
    outs, grads = [], []
    for model in (manual, sdpa):
        logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        outs.append(logits)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    names = [n for n, _ in manual.named_parameters()]
    for name, g_manual, g_sdpa in zip(names, *grads):
        torch.testing.assert_close(g_manual, g_sdpa, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")

    # Causality: changing the tokens after t never changes the logits at positions <= t.
    t = 6
    changed = ids.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 1 + torch.arange(5)) % V
    for model, logits in zip((manual, sdpa), outs):
        torch.testing.assert_close(model(changed)[:, : t + 1], logits[:, : t + 1], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(model(changed)[:, t + 1:], logits[:, t + 1:]), "later logits ignored the change"


# -- grouped-query attention is multi-head attention with shared kv heads ---------------------

def test_gqa_with_as_many_kv_heads_as_query_heads_is_plain_multi_head():
    torch.manual_seed(0)
    mha = B2lM(tiny(attention="manual"))
    gqa = B2lM(tiny(attention="manual", n_kv_head=4))
    assert mha.state_dict().keys() == gqa.state_dict().keys(), "parameter layouts differ"
    gqa.load_state_dict(mha.state_dict())
    ids = torch.randint(0, V, (2, 10))
    torch.testing.assert_close(gqa(ids), mha(ids))


def test_gqa_equals_multi_head_with_duplicated_kv_weights():
    """G=2 kv heads for H=4 queries == an H=4 multi-head model whose kv heads 0,1 and 2,3 are copies."""
    torch.manual_seed(0)
    H, G, D = 4, 2, 8
    gqa = B2lM(tiny(n_kv_head=G, positional="rope"))
    mha = B2lM(tiny(positional="rope"))
    state = gqa.state_dict()
    for i in range(2):
        prefix = f"blocks.{i}.attn.qkv_proj."
        for kind in ("weight", "bias"):
            q, k, v = state[prefix + kind].split([H * D, G * D, G * D], dim=0)
            k = k.unflatten(0, (G, D)).repeat_interleave(H // G, dim=0).flatten(0, 1)   # (H*D, ...)
            v = v.unflatten(0, (G, D)).repeat_interleave(H // G, dim=0).flatten(0, 1)
            state[prefix + kind] = torch.cat([q, k, v], dim=0)
    mha.load_state_dict(state)
    ids = torch.randint(0, V, (2, 10))
    torch.testing.assert_close(gqa(ids), mha(ids), rtol=1e-5, atol=1e-6)
    assert gqa.num_parameters() < mha.num_parameters(), "GQA should have fewer kv parameters"


def test_model_returns_attention_weights_from_either_kernel():
    manual, sdpa = twin_models(n_kv_head=2, blocks=[{}, {"n_head": 2, "n_kv_head": 1}])
    ids = torch.randint(0, V, (1, 7))
    logits, attention = sdpa(ids, return_attention=True)
    torch.testing.assert_close(logits, manual(ids), rtol=1e-5, atol=1e-5)
    shapes = [tuple(w.shape) for w in attention]
    assert shapes == [(1, 4, 7, 7), (1, 2, 7, 7)], f"per-layer weight shapes {shapes}"
    torch.testing.assert_close(attention[1].sum(-1), torch.ones(1, 2, 7))
