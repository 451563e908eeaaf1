"""A tiny model memorises one batch: the whole model (forward, masking, backward) can learn.

Every norm / placement / position / activation choice is covered by the fast set; the slow
test sweeps all 48 combinations.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from basegpt.config import ModelConfig
from basegpt.model import B2lM

V = 16
STEPS = 150          # enough for every variant to go below 1e-2 (measured: ~1e-3 at 150 steps)
LEARNING_RATE = 1e-2  # high for a transformer, fine for memorising 64 tokens with 2 small blocks


def final_loss(**kw) -> tuple[float, float]:
    torch.manual_seed(0)
    model = B2lM(ModelConfig(vocab_size=V, n_context=16, n_block=2, n_embed=32, n_head=4,
                             n_k=8, n_v=8, n_ff=64, **kw))
    ids = torch.randint(0, V, (4, 17))
    # Distinct first tokens: position 0 sees only its own token, so with clashing first tokens
    # and different targets no model could reach zero loss.
    ids[:, 0] = torch.arange(4)
    x, y = ids[:, :-1], ids[:, 1:]                                # (B, T) each, targets shifted by one
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    first = None
    for _ in range(STEPS):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, loss.item()


# Each choice of each field appears at least once.
COVERING = [
    dict(positional="sinusoidal", norm_position="post", norm="layernorm", activation="relu"),
    dict(positional="learned", norm_position="pre", norm="rmsnorm", activation="gelu"),
    dict(positional="rope", norm_position="pre", norm="layernorm", activation="swiglu"),
    dict(positional="none", norm_position="post", norm="rmsnorm", activation="relu"),
    dict(positional="rope", norm_position="post", norm="rmsnorm", activation="gelu", n_kv_head=1,
         attention="manual"),
]


@pytest.mark.parametrize("kw", COVERING, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_tiny_model_overfits_one_batch(kw):
    first, last = final_loss(**kw)
    assert first > 0.5 * math.log(V), f"initial loss {first:.3f} should be near log(V) = {math.log(V):.3f}"
    assert last < 1e-2, f"{kw}: loss {first:.3f} -> {last:.4f} after {STEPS} steps, expected < 0.01"


@pytest.mark.slow
@pytest.mark.parametrize("positional, norm_position, norm, activation", list(itertools.product(
    ["sinusoidal", "learned", "rope", "none"], ["post", "pre"], ["layernorm", "rmsnorm"],
    ["relu", "gelu", "swiglu"])))
def test_every_combination_overfits_one_batch(positional, norm_position, norm, activation):
    first, last = final_loss(positional=positional, norm_position=norm_position, norm=norm,
                             activation=activation)
    assert last < 1e-2, f"loss {first:.3f} -> {last:.4f} after {STEPS} steps, expected < 0.01"
