"""DecodeStep (basegpt/fast/decode.py), the fast one-token step, against the modules' forward: the same
logits and cache contents for every kind of block it accepts, on its torch steps and on the
compiled one-row step (basegpt/fast/compiled.py, the C extension _decode.c) on one and two
threads, batched rows with padding, the torch (non-numpy) path, weights updated in place;
`unsupported` and `compiled_unsupported` refusing what they do not know; generation using it,
and falling back to the torch steps or the forward where it must."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

import basegpt.fast.compiled as compiled
import basegpt.fast.decode as decode
from basegpt import fast
from basegpt.config import ModelConfig
from basegpt.fast.compiled import CompiledStep, compiled_unsupported
from basegpt.fast.decode import DecodeStep, numpy_blas_threads, numpy_products, unsupported
from basegpt.generate import generate_ids
from basegpt.model import B2lM
from basegpt.model.norms import LayerNorm, RMSNorm

V = 97
CONFIGS = {
    "seed (post-norm, relu, sinusoidal)": {},
    "gpt-2 (pre-norm, gelu, learned, tied)": dict(norm_position="pre", activation="gelu",
                                                 positional="learned", tie_weights=True),
    "llama-like (rmsnorm, swiglu, rope, gqa, no bias)": dict(
        norm="rmsnorm", activation="swiglu", positional="rope", n_kv_head=2, bias=False,
        norm_position="pre"),
    "no positions, multi-query, n_k != n_v": dict(positional="none", n_kv_head=1, n_v=12),
    "manual kernels": dict(attention="manual", norm_kernel="manual", activation_kernel="manual",
                           activation="gelu"),
    "layer-wise": dict(positional="rope", blocks=[{"n_head": 2, "n_kv_head": 1}, {"n_ff": 40}]),
}


def tiny(seed: int = 0, dtype: torch.dtype = torch.float32, **kw) -> B2lM:
    torch.manual_seed(seed)
    base = dict(vocab_size=V, n_context=64, n_block=2, n_embed=32, n_head=4, n_k=8, n_v=8, n_ff=64)
    return fast.prepare(B2lM(ModelConfig(**(base | kw)))).to(dtype).eval()   # as basegpt builds it


def both_paths(model: B2lM, prompt: torch.Tensor, steps: int, pad_lengths=None,
               compiled: bool = False):
    """Prefill, then `steps` one-token steps through model.forward and through DecodeStep (on
    its torch steps, or compiled=True: on the C step where it applies), each path on its own
    cache, fed the same ids. Returns the two lists of logits (B, V) and caches."""
    ids = torch.randint(0, V, (steps, prompt.shape[0]), generator=torch.Generator().manual_seed(1))
    device = model.tok_emb.weight.device
    ids, prompt = ids.to(device), prompt.to(device)
    pad_lengths = None if pad_lengths is None else pad_lengths.to(device)
    results = []
    with torch.inference_mode():
        for use_step in (False, True):
            cache = model.new_kv_cache(prompt.shape[0])
            model(prompt, kv_cache=cache, pad_lengths=pad_lengths)
            step = DecodeStep(model, compiled=compiled)
            logits = []
            for t in range(steps):
                if use_step:
                    logits.append(step(ids[t], cache, pad_lengths))
                else:
                    logits.append(model(ids[t].unsqueeze(1), kv_cache=cache, logits_for="last",
                                        pad_lengths=pad_lengths)[:, -1])
            results.append((logits, cache))
    return results


def assert_same_steps(slow: list, fast: list, slow_cache, fast_cache, n_layer: int,
                      length: int, name: str) -> None:
    """Each step's logits, and the first `length` cached keys and values of every layer, the
    same on both paths to 1e-5."""
    for t, (a, b) in enumerate(zip(slow, fast)):
        assert_close(b, a, atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}, step {t}: {m}")
    for layer in range(n_layer):
        for what in ("keys", "values"):
            slow_kv, fast_kv = (getattr(c, what)[layer][:, :, :length]
                                for c in (slow_cache, fast_cache))
            assert_close(fast_kv, slow_kv, atol=1e-5, rtol=1e-5,
                         msg=lambda m: f"{name}, layer {layer} cached {what}: {m}")


needs_c = pytest.mark.skipif(not compiled.available(),
                             reason="the C extension basegpt.fast._decode is not built")


@pytest.mark.parametrize("on", ["torch steps", pytest.param("compiled", marks=needs_c)])
@pytest.mark.parametrize("name", CONFIGS)
def test_decode_step_gives_the_forward_logits_and_cache(name, on):
    model = tiny(**CONFIGS[name])
    assert unsupported(model) is None, "a basegpt-built model is supported"
    if on == "compiled":
        assert compiled_unsupported(model) is None, "every basegpt-built float32 model"
        assert DecodeStep(model).compiled is not None, "one row runs in C"
    prompt = torch.tensor([[5, 17, 3, 44, 8]])
    (slow, slow_cache), (fast, fast_cache) = both_paths(model, prompt, steps=12,
                                                        compiled=on == "compiled")
    assert fast_cache.length == slow_cache.length == 17, "each step moved the cache on by one"
    assert all(b.shape == a.shape == (1, V) for a, b in zip(slow, fast)), "a row per step"
    assert_same_steps(slow, fast, slow_cache, fast_cache, len(model.blocks), 17, name)


@pytest.mark.parametrize("positional", ["learned", "rope"])
def test_decode_step_handles_left_padded_rows(positional):
    model = tiny(positional=positional, norm_position="pre")
    prompt = torch.tensor([[5, 17, 3, 44, 8], [0, 0, 0, 9, 21]])       # row 1: 3 pads
    pad = torch.tensor([0, 3])
    (slow, _), (fast, _) = both_paths(model, prompt, steps=8, pad_lengths=pad)
    for t, (a, b) in enumerate(zip(slow, fast)):
        assert_close(b, a, atol=1e-5, rtol=1e-5, msg=lambda m: f"padded batch, step {t}: {m}")


def test_the_torch_path_off_numpy_matches_to_double_precision():
    """Outside CPU float32 the products are F.linear, as in the modules: in float64 the two
    paths agree to ~1e-12, far tighter than float32 rounding, so the arithmetic is the same."""
    model = tiny(dtype=torch.float64, norm_position="pre", positional="rope", n_kv_head=2)
    (slow, _), (fast, _) = both_paths(model, torch.tensor([[1, 2, 3]]), steps=6)
    for a, b in zip(slow, fast):
        assert a.dtype == b.dtype == torch.float64, "the model's dtype throughout"
        assert_close(b, a, atol=1e-12, rtol=0)


def test_numpy_multiplies_only_with_torch_on_one_thread_and_one_blas_thread(monkeypatch):
    """tests/conftest.py runs torch on one thread, so the other tests here cover the numpy
    products. During a step numpy's OpenBLAS runs on one thread, and its count is put back."""
    model = tiny(norm_position="pre")
    set_threads = numpy_blas_threads()
    if set_threads is None:
        pytest.skip("this numpy does not bundle OpenBLAS >= 0.3.27; the step multiplies in torch")
    assert torch.get_num_threads() == 1 and numpy_products(model), "numpy on one thread"

    def current() -> int:
        count = set_threads(1)
        set_threads(count)
        return count
    seen, matmul = [], np.matmul

    def counting_matmul(*args):
        seen.append(current())
        return matmul(*args)
    before = set_threads(2)
    try:
        step = DecodeStep(model, compiled=False)
        cache = model.new_kv_cache(1)
        with torch.inference_mode():
            model(torch.tensor([[3, 4]]), kv_cache=cache)
        with monkeypatch.context() as patch:
            patch.setattr(decode.np, "matmul", counting_matmul)
            step(torch.tensor([5]), cache)
        assert seen and set(seen) == {1}, f"OpenBLAS threads during the products: {seen}"
        assert current() == 2, "the caller's OpenBLAS thread count is back after the step"
    finally:
        set_threads(before)
    torch.set_num_threads(2)
    try:
        assert not numpy_products(model), "with torch on 2 threads the products stay in torch"
        (slow, _), (fast, _) = both_paths(model, torch.tensor([[1, 2, 3]]), steps=4)
    finally:
        torch.set_num_threads(1)
    for a, b in zip(slow, fast):
        assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_the_bare_sdpa_call_is_the_kernels_call_bit_for_bit():
    """Without padding, the step calls F.scaled_dot_product_attention itself for the sdpa
    kernel: the call the kernel makes for one query, so the same bits; with grouped-query
    heads (the kernel repeats k and v) or padding it goes through the kernel."""
    for kw, direct in ((dict(), True), (dict(n_kv_head=2), False),
                       (dict(attention="manual"), False)):
        model = tiny(norm_position="pre", positional="rope", **kw)
        step = DecodeStep(model, compiled=False)
        assert all(b.bare_sdpa == direct for b in step.blocks), kw
        cache = model.new_kv_cache(1)
        with torch.inference_mode():
            model(torch.tensor([[3, 4, 5]]), kv_cache=cache)
            bare = step(torch.tensor([6]), cache)
            cache.length -= 1                          # the same position again, via the kernel
            for block in step.blocks:
                block.bare_sdpa = False
            kernel = step(torch.tensor([6]), cache)
        assert torch.equal(bare, kernel), f"{kw}: the same op and arguments, the same bits"


@pytest.mark.parametrize("on", ["torch steps", pytest.param("compiled", marks=needs_c)])
def test_weights_changed_in_place_are_seen(on):
    """The numpy products, the norms and the C step read the parameters' own memory: no stale
    copy after an update."""
    model = tiny(norm_position="pre")
    step = DecodeStep(model, compiled=on == "compiled")
    assert (step.compiled is not None) == (on == "compiled")
    with torch.no_grad():
        model.blocks[0].ff.up.weight.mul_(3.0)
        model.blocks[1].attn_norm.weight.mul_(2.0)
        model.final_norm.bias.add_(0.25)
        model.lm_head.weight.add_(0.5)
    (slow, _), _ = both_paths(model, torch.tensor([[4, 5]]), steps=1)
    with torch.inference_mode():
        cache = model.new_kv_cache(1)
        model(torch.tensor([[4, 5]]), kv_cache=cache)
        ids = torch.randint(0, V, (1, 1), generator=torch.Generator().manual_seed(1))[0]
        assert_close(step(ids, cache), slow[0], atol=1e-5, rtol=1e-5,
                     msg=lambda m: f"a DecodeStep built before the update: {m}")


@pytest.mark.parametrize("make", [LayerNorm, partial(LayerNorm, bias=False), RMSNorm],
                         ids=["layernorm", "layernorm without bias", "rmsnorm"])
def test_fused_norms_run_as_their_op_with_the_modules_numbers(make):
    norm = make(16)
    with torch.no_grad():
        for p in norm.parameters():
            p.normal_(generator=torch.Generator().manual_seed(2))
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(3))
    direct = decode._norm(norm)
    assert direct is not norm, "the fused kernel is called without its module"
    assert torch.equal(direct(x), norm(x)), "the same op and arguments: the same bits"
    norm.kernel = "manual"
    assert decode._norm(norm) is norm, "the manual kernel runs as the module (its own steps)"

    class MyNorm(type(norm)):
        pass
    norm.__class__, norm.kernel = MyNorm, "fused"
    assert decode._norm(norm) is norm, "a subclass may compute something else: its module runs"
    assert decode._norm(nn.Identity())(x) is x, "a post-norm model's final norm is x itself"


def test_the_step_calls_no_norm_module(monkeypatch):
    model = tiny(norm_position="pre", positional="learned")
    calls = []
    real = LayerNorm.forward
    monkeypatch.setattr(LayerNorm, "forward", lambda self, x: calls.append(1) or real(self, x))
    cache = model.new_kv_cache(1)
    with torch.inference_mode():
        model(torch.tensor([[3, 4]]), kv_cache=cache)
        assert len(calls) == 2 * 2 + 1, "the forward calls each block's two norms and the final one"
        calls.clear()
        DecodeStep(model, compiled=False)(torch.tensor([5]), cache)
    assert calls == [], "the step runs the norms' op directly"


def test_unsupported_names_what_it_cannot_stand_in_for():
    model = tiny()
    assert "training mode" in unsupported(model.train())
    model.eval()
    handle = model.blocks[1].ff.register_forward_hook(lambda *a: None)
    assert unsupported(model) == "blocks.1.ff has a forward hook"
    handle.remove()

    class LoRALinear(nn.Linear):
        pass
    old = model.blocks[0].attn.qkv_proj
    model.blocks[0].attn.qkv_proj = LoRALinear(old.in_features, old.out_features)
    assert "blocks.0.attn.qkv_proj is a LoRALinear" in unsupported(model)
    model.blocks[0].attn.qkv_proj = old

    class MyBlock(type(model.blocks[0])):
        pass
    model.blocks[0].__class__ = MyBlock
    assert "block 0's block is a MyBlock" in unsupported(model)
    with pytest.raises(ValueError, match="DecodeStep cannot run this model: block 0"):
        DecodeStep(model)
    assert "not B2lM" in unsupported(nn.Linear(2, 2))


def test_decode_step_checks_the_cache():
    model = tiny()
    step = DecodeStep(model)
    with pytest.raises(ValueError, match="batch_size=2"):
        step(torch.tensor([1]), model.new_kv_cache(2))
    full = model.new_kv_cache(1, max_len=1)
    full.advance(1)
    with pytest.raises(ValueError, match="KV cache is full"):
        step(torch.tensor([1]), full)
    with pytest.raises(ValueError, match=r"pad_lengths must have shape \(batch,\) = \(1,\)"):
        step(torch.tensor([1]), model.new_kv_cache(1), pad_lengths=torch.tensor([0, 0]))


def count_fast_steps(monkeypatch) -> list[int]:
    calls = []
    real = DecodeStep.__call__

    def counted(self, ids, cache, pad_lengths=None):
        calls.append(ids.shape[0])
        return real(self, ids, cache, pad_lengths)
    monkeypatch.setattr(DecodeStep, "__call__", counted)
    return calls


def test_generation_runs_its_one_token_steps_on_decode_step(monkeypatch):
    model = tiny(norm_position="pre", positional="learned")
    calls = count_fast_steps(monkeypatch)
    fast = generate_ids(model, [[1, 2, 3], [4]], max_new_tokens=30, temperature=0)
    assert calls == [2] * 29, "prefill through forward, then 29 batched one-token steps"
    calls.clear()
    slow = generate_ids(model, [[1, 2, 3], [4]], max_new_tokens=30, temperature=0, fast_step=False)
    assert calls == [], "fast_step=False runs every step through model.forward"
    assert [g.ids for g in fast] == [g.ids for g in slow], "the same greedy tokens"
    sampled = [generate_ids(model, [[1, 2, 3]], max_new_tokens=30, seed=3, top_p=0.9,
                            fast_step=f)[0].ids for f in (True, False)]
    assert sampled[0] == sampled[1], "the same sampled tokens for the same seed"


def test_a_hooked_model_generates_through_its_modules(monkeypatch):
    """A hook must run, so generation falls back to model.forward rather than skip it."""
    model = tiny()
    calls = count_fast_steps(monkeypatch)
    seen = []
    handle = model.blocks[0].attn.register_forward_hook(lambda m, args, out: seen.append(1))
    try:
        generate_ids(model, [[1, 2, 3]], max_new_tokens=10, temperature=0)
    finally:
        handle.remove()
    assert calls == [] and len(seen) == 10, "the hook ran at the prefill and each of 9 steps"
    assert unsupported(model) is None, "supported again once the hook is gone"


def test_a_global_forward_hook_also_sends_generation_through_the_modules():
    model = tiny()
    handle = nn.modules.module.register_module_forward_hook(lambda *a: None)
    try:
        assert unsupported(model) == "a global forward hook is registered"
    finally:
        handle.remove()
    assert unsupported(model) is None, "supported again once the hook is gone"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_on_a_gpu_the_step_multiplies_in_torch_and_matches_the_forward(dtype):
    model = tiny(norm_position="pre", positional="rope", n_kv_head=2).to("cuda", dtype)
    assert not numpy_products(model), "no numpy on a GPU"
    (slow, _), (fast, _) = both_paths(model, torch.tensor([[5, 17, 3]]), steps=8)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for t, (a, b) in enumerate(zip(slow, fast)):
        assert b.device.type == "cuda" and b.dtype == dtype, "logits stay on the model's device"
        assert_close(b, a, atol=tol, rtol=tol, msg=lambda m: f"{dtype}, step {t}: {m}")
    if dtype != torch.float32:
        return                        # bf16 rounding can flip a near-tie of a random model
    rows = [[1, 2, 3], [4]]
    fast_ids, slow_ids = ([g.ids for g in generate_ids(model, rows, max_new_tokens=40,
                                                        temperature=0, fast_step=f)]
                          for f in (True, False))
    assert fast_ids == slow_ids, "the same greedy tokens on the GPU"


# --------------------------------------------------------------- the compiled one-row step

def random_model(seed: int) -> B2lM:
    """A small model of a random shape the compiled step covers, every parameter (norm gains
    and biases included) moved off its initial value, so that each one counts."""
    rng = np.random.default_rng(seed)
    H = int(rng.choice([1, 2, 4]))
    kw = dict(norm_position=rng.choice(["pre", "post"]), norm=rng.choice(["layernorm", "rmsnorm"]),
              positional=rng.choice(["rope", "learned", "sinusoidal", "none"]),
              activation=rng.choice(["relu", "gelu", "swiglu"]), n_head=H,
              n_kv_head=int(rng.choice([g for g in (1, 2, 4) if H % g == 0])),
              n_k=int(rng.choice([4, 8, 10])), n_v=int(rng.choice([4, 8, 12])),
              n_ff=int(rng.choice([24, 37, 64])), n_embed=int(rng.choice([16, 32, 40])),
              bias=bool(rng.integers(2)), tie_weights=bool(rng.integers(2)),
              attention=rng.choice(["sdpa", "manual"]), norm_kernel=rng.choice(["fused", "manual"]))
    return perturbed(tiny(seed, **{k: v.item() if isinstance(v, np.generic) else v
                                   for k, v in kw.items()}), seed)


def perturbed(model: B2lM, seed: int) -> B2lM:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.1)
    return model


@needs_c
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("seed", range(12))
def test_the_compiled_step_gives_the_forward_logits_and_cache_for_random_shapes(seed, threads):
    """Three threads on this 2-core machine: a thread often loses its core mid-step and the
    others take its shares over (_decode.c, "The step"); the numbers must not change."""
    model = random_model(seed)
    shape = {k: getattr(model.config, k) for k in ("norm_position", "norm", "positional",
                                                   "activation", "n_head", "n_kv_head")}
    torch.set_num_threads(threads)
    try:
        step = DecodeStep(model)
        assert step.compiled is not None and step.compiled.n_threads == threads, shape
        (slow, slow_cache), (fast, fast_cache) = both_paths(model, torch.tensor([[5, 17, 3]]),
                                                            steps=40, compiled=True)
    finally:
        torch.set_num_threads(1)
    assert_same_steps(slow, fast, slow_cache, fast_cache, len(model.blocks), 43, str(shape))


def count_calls(monkeypatch, cls, name: str) -> list[int]:
    calls = []
    real = getattr(cls, name)

    def counted(self, ids, cache, pad_lengths=None):
        calls.append(ids.shape[0])
        return real(self, ids, cache, pad_lengths)
    monkeypatch.setattr(cls, name, counted)
    return calls


@needs_c
@pytest.mark.parametrize("threads", [1, 2])
def test_one_row_generates_on_the_compiled_step_the_plain_paths_tokens(monkeypatch, threads):
    """Greedy and sampled tokens of the compiled step equal the plain path's (basegpt.fast
    off: every step through model.forward), which runs no compiled step at all. The main
    job's shape: pre-norm RMSNorm, RoPE, SwiGLU, grouped-query heads, no biases."""
    model = perturbed(tiny(**CONFIGS["llama-like (rmsnorm, swiglu, rope, gqa, no bias)"],
                           tie_weights=True), 3)
    calls = count_calls(monkeypatch, CompiledStep, "__call__")
    settings = [dict(temperature=0), dict(seed=5, top_p=0.9), dict(seed=6, top_k=20)]
    torch.set_num_threads(threads)
    try:
        quick = [generate_ids(model, [[1, 2, 3]], max_new_tokens=50, **s)[0].ids for s in settings]
        assert calls == [1] * 49 * 3, "after each prefill, 49 one-row compiled steps"
        with fast.disabled():
            plain = [generate_ids(model, [[1, 2, 3]], max_new_tokens=50, **s)[0].ids
                     for s in settings]
    finally:
        torch.set_num_threads(1)
    assert len(calls) == 49 * 3, "the switch off: no compiled step"
    assert quick == plain, "the same greedy and sampled tokens"
    assert len(set(map(tuple, quick))) == 3, "three different generations"


def test_without_the_extension_one_row_runs_on_the_torch_steps(monkeypatch):
    """An install without a C compiler has no basegpt.fast._decode: compiled.py imports, and
    generation runs DecodeStep's torch steps, with the same tokens."""
    import importlib.util
    import sys
    monkeypatch.setitem(sys.modules, "basegpt.fast._decode", None)    # the import fails
    monkeypatch.delattr(fast, "_decode", raising=False)
    spec = importlib.util.spec_from_file_location("compiled_without_c", compiled.__file__)
    without_c = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(without_c)
    assert not without_c.available()
    monkeypatch.setattr(decode, "compiled_unsupported", without_c.compiled_unsupported)
    model = tiny(norm_position="pre", positional="rope")
    assert "basegpt.fast._decode was not built" in without_c.compiled_unsupported(model)
    with pytest.raises(ValueError, match="CompiledStep cannot run this model: the C extension"):
        without_c.CompiledStep(model)
    assert DecodeStep(model).compiled is None
    torch_steps = count_calls(monkeypatch, DecodeStep, "_torch_step")
    ids = generate_ids(model, [[1, 2, 3]], max_new_tokens=12, temperature=0)[0].ids
    assert torch_steps == [1] * 11, "every one-token step on the torch steps"
    with fast.disabled():
        assert generate_ids(model, [[1, 2, 3]], max_new_tokens=12, temperature=0)[0].ids == ids


@needs_c
def test_compiled_unsupported_names_what_the_c_step_does_not_cover():
    model = tiny(norm_position="pre", activation="gelu")
    assert compiled_unsupported(model) is None
    assert "float32 on the CPU" in compiled_unsupported(tiny(dtype=torch.float64))
    model.blocks[1].ff.activation = torch.tanh
    assert "block 1's feed-forward activation is" in compiled_unsupported(model)
    assert DecodeStep(model).compiled is None, "the torch steps call the user's function"
    (slow, _), (fast_, _) = both_paths(model, torch.tensor([[1, 2]]), steps=3, compiled=True)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(slow, fast_))
    model = tiny(norm_position="pre")

    class MyNorm(LayerNorm):
        pass
    model.final_norm.__class__ = MyNorm
    assert compiled_unsupported(model) == "final_norm is a MyNorm"
    with pytest.raises(ValueError, match="CompiledStep cannot run this model: final_norm"):
        CompiledStep(model)


@needs_c
def test_the_compiled_step_checks_its_input():
    model = tiny()
    step = CompiledStep(model)
    cache = model.new_kv_cache(1)
    with pytest.raises(ValueError, match="token id 97 is out of range; valid ids are 0..96"):
        step(torch.tensor([V]), cache)
    assert cache.length == 0, "nothing stored"
    with pytest.raises(ValueError, match="CompiledStep runs one unpadded row"):
        step(torch.tensor([1, 2]), model.new_kv_cache(2))
    with pytest.raises(ValueError, match="KV cache is full"):
        full = model.new_kv_cache(1, max_len=2)
        full.advance(2)
        step(torch.tensor([1]), full)
    with pytest.raises(ValueError, match="needs a float32 CPU KV cache"):
        step(torch.tensor([1]), model.to(torch.float64).new_kv_cache(1))


@needs_c
def test_the_compiled_step_refuses_memory_it_cannot_read_as_one_block():
    """Matrices are read through their strides (a Linear in either layout); a vector or a
    position table laid out otherwise is refused, and the torch steps run instead."""
    model = tiny(norm_position="pre", positional="learned")
    with torch.no_grad():
        pos = model.positional.weight
        pos.data = pos.data.t().contiguous().t()                 # the same values, strided
    assert compiled_unsupported(model) == "a vector or position table of its is not contiguous in memory"
    assert DecodeStep(model).compiled is None
    (slow, _), (fast_, _) = both_paths(model, torch.tensor([[1, 2]]), steps=3, compiled=True)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(slow, fast_))
    plain = perturbed(B2lM(model.config).eval(), 4)   # not fast.prepare'd: (out, in) Linears
    assert plain.blocks[0].ff.up.weight.is_contiguous() and compiled_unsupported(plain) is None
    (slow, _), (fast_, _) = both_paths(plain, torch.tensor([[1, 2]]), steps=6, compiled=True)
    for a, b in zip(slow, fast_):
        assert_close(b, a, atol=1e-5, rtol=1e-5)


@needs_c
def test_a_compiled_step_made_directly_checks_what_decode_step_checks():
    model = tiny().train()
    with pytest.raises(ValueError, match="CompiledStep cannot run this model: the model is in "
                                         "training mode"):
        CompiledStep(model)
