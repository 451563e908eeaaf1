"""KV cache: prefill + single-token decoding gives the logits of one full forward pass."""

from __future__ import annotations

import pytest
import torch

from basegpt.config import ModelConfig
from basegpt.model import B2lM, KVCache

V = 41


def tiny_model(**kw) -> B2lM:
    torch.manual_seed(0)
    base = dict(vocab_size=V, n_context=16, n_block=2, n_embed=32, n_head=4, n_k=8, n_v=8, n_ff=48)
    return B2lM(ModelConfig(**(base | kw))).eval()


LAYERWISE = dict(n_block=3, n_kv_head=2, blocks=[{}, {"n_head": 2, "n_kv_head": 1, "n_k": 4, "n_v": 12},
                                                  {"n_head": 8, "n_ff": 16, "activation": "swiglu"}])


@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "rope", "none"])
@pytest.mark.parametrize("attention", ["manual", "sdpa"])
@pytest.mark.parametrize("layout", ["mha", "gqa", "layerwise-pre"])
def test_cached_decoding_matches_full_forward(positional, attention, layout):
    kw = {"mha": {}, "gqa": {"n_kv_head": 2}, "layerwise-pre": LAYERWISE | {"norm_position": "pre"}}[layout]
    model = tiny_model(positional=positional, attention=attention, **kw)
    ids = torch.randint(0, V, (2, 12))
    with torch.no_grad():
        full = model(ids)                                            # (B, T, V)
        cache = model.new_kv_cache(batch_size=2, max_len=12)
        parts = [model(ids[:, :5], kv_cache=cache)]                   # prefill 5 tokens
        parts += [model(ids[:, t:t + 1], kv_cache=cache) for t in range(5, 9)]   # decode 4
        parts += [model(ids[:, 9:12], kv_cache=cache)]                # a 3-token chunk after a prefix
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-5)
    assert cache.length == 12, f"cache length {cache.length} after 12 positions"


def test_cache_has_each_layer_s_own_shapes():
    model = tiny_model(**LAYERWISE)
    cache = model.new_kv_cache(batch_size=3, max_len=10)
    shapes = [(tuple(k.shape), tuple(v.shape)) for k, v in zip(cache.keys, cache.values)]
    assert shapes == [((3, 2, 10, 8), (3, 2, 10, 8)), ((3, 1, 10, 4), (3, 1, 10, 12)),
                      ((3, 2, 10, 8), (3, 2, 10, 8))], f"cache shapes {shapes}"


def test_last_only_logits_equal_the_last_row_of_the_full_logits():
    model = tiny_model(positional="rope")
    ids = torch.randint(0, V, (2, 9))
    last = model(ids, logits_for="last")
    assert last.shape == (2, 1, V), f"last-position logits shape {tuple(last.shape)}"
    torch.testing.assert_close(last, model(ids)[:, -1:])
    cache = model.new_kv_cache(2, 9)
    model(ids[:, :8], kv_cache=cache, logits_for="last")
    torch.testing.assert_close(model(ids[:, 8:], kv_cache=cache, logits_for="last"), last, rtol=1e-4, atol=1e-5)


def test_overflowing_the_cache_is_a_value_error_and_leaves_it_unchanged():
    model = tiny_model()
    cache = model.new_kv_cache(batch_size=1, max_len=6)
    model(torch.zeros(1, 5, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match=r"holds 5 of max_len=6 positions and 2 more"):
        model(torch.zeros(1, 2, dtype=torch.long), kv_cache=cache)
    assert cache.length == 5, "a refused forward must not advance the cache"
    cache.reset()
    assert cache.length == 0, "reset must empty the cache"


@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "rope", "none"])
def test_going_past_n_context_is_a_value_error(positional):
    model = tiny_model(positional=positional)
    with pytest.raises(ValueError, match="n_context=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="max_len=20 exceeds n_context=16"):
        model.new_kv_cache(1, max_len=20)


def test_cache_batch_mismatch_is_a_value_error():
    model = tiny_model()
    cache = model.new_kv_cache(batch_size=2)
    assert cache.max_len == 16, f"default max_len {cache.max_len} should be n_context"
    with pytest.raises(ValueError, match="batch_size=2"):
        model(torch.zeros(3, 4, dtype=torch.long), kv_cache=cache)


def test_update_returns_everything_stored_so_far():
    cache = KVCache([(2, 4, 3)], batch_size=1, max_len=5)
    k1, v1 = torch.ones(1, 2, 2, 4), torch.ones(1, 2, 2, 3)
    k, v = cache.update(0, k1, v1)
    assert k.shape == (1, 2, 2, 4) and v.shape == (1, 2, 2, 3), f"shapes {k.shape}, {v.shape}"
    cache.advance(2)
    k, _ = cache.update(0, 2 * torch.ones(1, 2, 1, 4), 2 * torch.ones(1, 2, 1, 3))
    assert k[0, 0, :, 0].tolist() == [1.0, 1.0, 2.0], f"stored keys {k[0, 0, :, 0].tolist()}"
