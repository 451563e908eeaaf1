"""basegpt.fast: every speed trick behind one switch, each giving the plain path's numbers.

DecodeStep's own tests are in test_fast_decode.py; these hold the switch, the weight layout,
the attention hand-off in training and the malloc request, and generation and training with
the tricks against the plain path."""

from __future__ import annotations

import contextlib

import pytest
import torch

from basegpt import devices, fast, load_run
from basegpt.checkpoint import save_run
from basegpt.fast.attention import (CPU_LOW_PRECISION_MANUAL_MAX_KEYS, attention_sdpa_or_manual,
                                    sdpa_hands_to_manual, training_kernels)
from basegpt.generate import generate
from basegpt.model import B2lM as PlainB2lM
from basegpt.model.attention import attention_manual, attention_sdpa
from basegpt.train import fit
from helpers import tiny


@pytest.fixture(autouse=True)
def switch_on(monkeypatch):
    """Every test starts from the default: on, whatever the environment running the tests."""
    monkeypatch.delenv(fast.switch.ENV, raising=False)
    fast.set_enabled(None)
    yield
    fast.set_enabled(None)


# ------------------------------------------------------------------------ the switch

@pytest.mark.parametrize("value, on", [("1", True), ("on", True), ("TRUE", True),
                                       ("0", False), ("off", False), (" no ", False)])
def test_the_environment_sets_the_switch(monkeypatch, value, on):
    monkeypatch.setenv("BASEGPT_FAST", value)
    assert fast.enabled() is on


def test_a_bad_environment_value_is_an_error_naming_it(monkeypatch):
    monkeypatch.setenv("BASEGPT_FAST", "maybe")
    with pytest.raises(ValueError, match=r"BASEGPT_FAST='maybe' is not a switch: set it to 1 .* or 0"):
        fast.enabled()


def test_set_enabled_overrides_the_environment_and_disabled_restores(monkeypatch):
    monkeypatch.setenv("BASEGPT_FAST", "0")
    fast.set_enabled(True)
    assert fast.enabled()
    with fast.disabled():
        assert not fast.enabled()
    assert fast.enabled(), "the block ends: the choice before it again"
    fast.set_enabled(None)
    assert not fast.enabled(), "None: the environment's again"
    with pytest.raises(TypeError, match="True, False or None"):
        fast.set_enabled("no")


# ------------------------------------------------------------------------ weight layout

@pytest.mark.parametrize("tie", [False, True])
def test_the_layout_changes_memory_order_only(tie):
    """store_transposed: (out, in) weights laid out as (in, out), the same values, the same
    Parameter objects, and logits equal to the row-major model's."""
    torch.manual_seed(0)
    plain = PlainB2lM(vocab_size=64, n_embed=32, n_block=2, n_head=2, n_k=16, n_v=16, n_ff=64,
                      n_context=16, tie_weights=tie).eval()
    assert all(p.is_contiguous() for p in plain.parameters()), "the plain model is row-major"
    model = PlainB2lM(plain.config).eval()
    model.load_state_dict(plain.state_dict())
    before = dict(model.named_parameters())
    fast.store_transposed(model)
    for name, p in model.named_parameters():
        assert p is before[name], f"{name}: the same Parameter, re-laid"
        assert torch.equal(p, plain.state_dict()[name]), f"{name}: the same values"
        if p.dim() == 2 and (name != "tok_emb.weight" or tie):
            assert p.t().is_contiguous() and not p.is_contiguous(), f"{name} is kept (in, out)"
    if tie:
        assert model.lm_head.weight is model.tok_emb.weight, "a tied head is the table itself"
    else:
        assert model.tok_emb.weight.is_contiguous(), "an embedding only looked up keeps its rows"
    ids = torch.randint(0, 64, (2, 16))
    torch.testing.assert_close(model(ids), plain(ids), rtol=1e-5, atol=1e-6)
    again = fast.prepare(PlainB2lM(model.config)).eval()
    again.load_state_dict(plain.state_dict())            # load_state_dict copies into the layout
    assert again.blocks[0].ff.up.weight.t().is_contiguous(), "the layout survives a load"
    assert torch.equal(again(ids), model(ids)), "the same layout gives the very same logits"


def test_basegpt_lays_out_the_models_it_builds_only_where_the_switch_is_on(tmp_path, tokenizer):
    """basegpt.B2lM and load_run lay weights out (in, out); basegpt.model.B2lM, and anything
    built with the switch off, stays row-major."""
    up = lambda m: m.blocks[0].ff.up.weight                  # noqa: E731
    assert not up(tiny(tokenizer)).is_contiguous() and up(tiny(tokenizer)).t().is_contiguous()
    assert up(PlainB2lM(tiny(tokenizer).config)).is_contiguous(), "the plain model is plain"
    save_run(tmp_path / "run", tiny(tokenizer), tokenizer)
    assert up(load_run(tmp_path / "run").model).t().is_contiguous()
    with fast.disabled():
        assert up(tiny(tokenizer)).is_contiguous()
        assert up(load_run(tmp_path / "run").model).is_contiguous()


# ------------------------------------------------------------------------ generation

def test_generation_with_the_tricks_gives_the_plain_paths_tokens(tokenizer, monkeypatch):
    """Fast (laid-out weights, DecodeStep) and plain (row-major, every step through forward)
    write the same text, greedy and sampled; the switch decides which path runs."""
    steps = []
    real = fast.DecodeStep.__call__
    monkeypatch.setattr(fast.DecodeStep, "__call__",
                        lambda self, *a: steps.append(1) or real(self, *a))
    settings = [dict(max_new_tokens=12, temperature=0), dict(max_new_tokens=12, seed=3, top_k=20)]
    quick = [generate(tiny(tokenizer).eval(), tokenizer, "First ", **s) for s in settings]
    assert len(steps) == 2 * 11, "the fast path: the prefill, then 11 DecodeSteps per call"
    with fast.disabled():
        plain_model = tiny(tokenizer).eval()
        plain = [generate(plain_model, tokenizer, "First ", **s) for s in settings]
    assert len(steps) == 22, "switched off: no DecodeStep"
    assert quick == plain and all(quick), quick


# ------------------------------------------------------------------------ training

def _qkv(T: int, dtype: torch.dtype = torch.float32, grad: bool = True):
    torch.manual_seed(0)
    return [torch.randn(2, 4, T, 8, dtype=dtype, requires_grad=grad) for _ in range(3)]


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU that multiplies bf16 in hardware, where the hand-off to manual pays."""
    monkeypatch.setattr(devices, "cpu_bf16_instructions", lambda: "AVX512-BF16")


def test_sdpa_hands_only_cpu_low_precision_training_on_short_sequences_to_manual(bf16_cpu):
    limit = CPU_LOW_PRECISION_MANUAL_MAX_KEYS
    q16 = _qkv(4, torch.bfloat16)[0]
    assert sdpa_hands_to_manual(q16, 64) and sdpa_hands_to_manual(q16, limit), "bf16 training"
    assert sdpa_hands_to_manual(_qkv(4, torch.float16)[0], 64), "fp16 training"
    assert not sdpa_hands_to_manual(q16, limit + 1), "long sequences keep the fused kernel"
    assert not sdpa_hands_to_manual(_qkv(4)[0], 64), "fp32 keeps the fused kernel"
    assert not sdpa_hands_to_manual(_qkv(4, torch.bfloat16, grad=False)[0], 64), "inference"
    with torch.no_grad():
        assert not sdpa_hands_to_manual(q16, 64), "no_grad is inference"
    q32 = _qkv(4)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sdpa_hands_to_manual(q32, 64), "under bf16 autocast a float32 q runs in bf16"
    assert not sdpa_hands_to_manual(q32.to("meta"), 64), "other devices keep the fused kernel"


def test_sdpa_keeps_the_fused_kernel_on_a_cpu_without_bf16_instructions(monkeypatch):
    """Without bf16 hardware the manual steps' emulated bf16 products are the slow ones."""
    monkeypatch.setattr(devices, "cpu_bf16_instructions", lambda: None)
    assert not sdpa_hands_to_manual(_qkv(4, torch.bfloat16)[0], 64)
    assert not sdpa_hands_to_manual(_qkv(4, torch.float16)[0], 64)
    q32 = _qkv(4)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not sdpa_hands_to_manual(q32, 64)


def test_the_hand_off_under_cpu_bf16_autocast_gives_the_manual_kernels_numbers(bf16_cpu):
    """attention_sdpa_or_manual gives the manual kernel's outputs and gradients bit for bit;
    torch's fused kernel in bf16 rounds differently, so this fails if the hand-off is lost."""
    results = []
    for kernel in (attention_manual, attention_sdpa_or_manual):
        q, k, v = _qkv(16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = kernel(q, k, v)
        grads = torch.autograd.grad((out.float() * torch.linspace(-1, 1, 8)).sum(), (q, k, v))
        results.append((out, *grads))
    for a, b in zip(*results):
        assert torch.equal(a, b), (a - b).abs().max()
    q, k, v = _qkv(16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert not torch.equal(fused, results[0][0]), "the fused kernel's bf16 numbers differ"
    torch.testing.assert_close(fused, results[0][0], rtol=2e-2, atol=2e-2)


def test_training_kernels_swap_only_sdpa_layers_and_put_them_back(tokenizer):
    model = tiny(tokenizer, n_block=3, blocks=[{}, {"attention": "manual"}, {}])
    kernels = lambda: [block.attn.kernel for block in model.blocks]    # noqa: E731
    with training_kernels(model):
        assert kernels() == [attention_sdpa_or_manual, attention_manual, attention_sdpa_or_manual]
    assert kernels() == [attention_sdpa, attention_manual, attention_sdpa]
    with fast.disabled(), training_kernels(model):
        assert kernels() == [attention_sdpa, attention_manual, attention_sdpa], "switched off"


def test_fit_trains_on_the_hand_off_and_reaches_the_plain_paths_losses(tokenizer, data, bf16_cpu):
    """bf16 fit on a CPU with bf16 instructions: the attention layers run the hand-off while
    training (and their own kernel afterwards); the losses match the plain path's to bf16
    rounding, and differ from it, so the hand-off did run."""
    def losses(on: bool) -> tuple[list[float], list]:
        seen = []
        model = tiny(tokenizer)
        record = lambda r: seen.append(model.blocks[0].attn.kernel)     # noqa: E731
        with fast.disabled() if not on else contextlib.nullcontext():
            result = fit(model, data, None, dict(max_steps=4, batch_size=4, lr=3e-3,
                                                 dtype="bfloat16", device="cpu"),
                         progress=False, on_step=record)
        assert model.blocks[0].attn.kernel is attention_sdpa, "put back after training"
        return [loss for _, loss in result.train_loss], seen
    quick, kernels_on = losses(True)
    plain, kernels_off = losses(False)
    assert set(kernels_on) == {attention_sdpa_or_manual} and set(kernels_off) == {attention_sdpa}
    assert quick != plain, "the two paths round differently in bf16"
    assert quick == pytest.approx(plain, rel=2e-2)


# ------------------------------------------------------------------------ the command line

def test_the_command_line_leaves_malloc_alone_when_switched_off(monkeypatch, tmp_path):
    from basegpt.cli.training import _keep_freed_memory
    calls = []
    monkeypatch.setattr(fast, "keep_freed_memory", lambda: calls.append(1) or "kept (test)")
    spec = {"train": {"device": "cpu"}}
    monkeypatch.setenv("BASEGPT_FAST", "0")
    _keep_freed_memory(spec, None)
    assert calls == [], "BASEGPT_FAST=0: the plain path, malloc as the system set it"
    monkeypatch.setenv("BASEGPT_FAST", "1")
    _keep_freed_memory(spec, None)
    assert calls == [1]
