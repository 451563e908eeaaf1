"""Left-padded batches in the model (B2lM.forward's pad_lengths, attention.left_padding_mask):
a padded row's logits equal the row run alone, with and without the cache, for every
positional kind and both attention kernels; padding never receives attention."""

from __future__ import annotations

import pytest
import torch

from basegpt.config import ModelConfig
from basegpt.model import B2lM
from basegpt.model.attention import left_padding_mask

V = 41


def tiny_model(**kw) -> B2lM:
    torch.manual_seed(0)
    base = dict(vocab_size=V, n_context=16, n_block=2, n_embed=32, n_head=4, n_k=8, n_v=8, n_ff=48)
    return B2lM(ModelConfig(**(base | kw))).eval()


def test_left_padding_mask_by_hand():
    mask = left_padding_mask(torch.tensor([0, 2]), T=3, S=3)
    assert mask.shape == (2, 1, 3, 3), f"shape {tuple(mask.shape)}"
    assert mask[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, True]], \
        "no padding: plain causal"
    assert mask[1, 0].tolist() == [[True, False, False], [False, True, False], [False, False, True]], \
        "padding queries see only themselves; the real query sees no padding"
    decode = left_padding_mask(torch.tensor([1]), T=1, S=4)       # one query after 3 cached keys
    assert decode[0, 0].tolist() == [[False, True, True, True]], "decode step skips the padding"


@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "rope", "none"])
@pytest.mark.parametrize("attention", ["manual", "sdpa"])
def test_padded_rows_give_the_logits_of_the_row_alone(positional, attention):
    model = tiny_model(positional=positional, attention=attention, n_kv_head=2)
    rows = [torch.randint(0, V, (n,)) for n in (9, 4, 1)]
    P = 9
    ids = torch.zeros(3, P, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, P - len(r):] = r
    pad = torch.tensor([P - len(r) for r in rows])
    with torch.no_grad():
        batch = model(ids, pad_lengths=pad)                           # (3, P, V)
        for b, r in enumerate(rows):
            alone = model(r.unsqueeze(0))[0]                          # (n, V)
            torch.testing.assert_close(batch[b, P - len(r):], alone, rtol=1e-4, atol=1e-5)
        assert torch.isfinite(batch).all(), "padding positions must not produce NaN"


@pytest.mark.parametrize("positional", ["learned", "rope"])
def test_padded_rows_with_the_cache_match_the_full_forward(positional):
    model = tiny_model(positional=positional)
    ids = torch.randint(0, V, (2, 12))
    ids[1, :3] = 0                                                     # row 1: 3 padding tokens
    pad = torch.tensor([0, 3])
    with torch.no_grad():
        full = model(ids, pad_lengths=pad)
        cache = model.new_kv_cache(2, 12)
        parts = [model(ids[:, :6], kv_cache=cache, pad_lengths=pad)]
        parts += [model(ids[:, t:t + 1], kv_cache=cache, pad_lengths=pad) for t in range(6, 12)]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-5)


def test_padding_gets_no_attention_weight():
    model = tiny_model(attention="manual")
    ids = torch.randint(0, V, (2, 6))
    with torch.no_grad():
        _, weights = model(ids, pad_lengths=torch.tensor([0, 4]), return_attention=True)
    for w in weights:                                                  # (B, H, T, S) per layer
        assert (w[1, :, 4:, :4] == 0).all(), "real queries put no weight on padding keys"
        assert (w[0, :, 4:, :4] > 0).any(), "the unpadded row still attends to its first tokens"


def test_pad_lengths_of_the_wrong_shape_is_a_value_error():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"pad_lengths must have shape \(batch,\) = \(2,\)"):
        model(torch.zeros(2, 4, dtype=torch.long), pad_lengths=torch.tensor([1, 0, 0]))
