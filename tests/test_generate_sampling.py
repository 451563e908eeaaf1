"""Sampling math (basegpt/sampling.py): each filter against hand-computed answers, the sampled
distribution against the renormalised one, the repetition penalty exactly as documented, and
end to end through generate_ids on a model whose logits are fixed."""

from __future__ import annotations

import math

import pytest
import torch

from basegpt.config import ModelConfig
from basegpt import Tokenizer
from basegpt.generate import generate, generate_ids
from basegpt.model import B2lM
from basegpt.sampling import (SamplingSettings, apply_min_p, apply_repetition_penalty,
                              apply_top_k, apply_top_p, choose, process_logits)

INF = float("inf")


def test_repetition_penalty_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0]])
    seen = torch.tensor([[True, True, False, True]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    # seen & positive: 2.0 / 2; seen & negative: -1.0 * 2; unseen unchanged; seen 0.0 * 2 = 0
    assert out.tolist() == [[1.0, -2.0, 0.5, 0.0]], f"penalised logits {out.tolist()}"
    # The probabilities: softmax of the penalised logits, computed by hand.
    z = [1.0, -2.0, 0.5, 0.0]
    expected = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
    probs = torch.softmax(process_logits(logits, SamplingSettings(repetition_penalty=2.0), seen), -1)
    torch.testing.assert_close(probs[0], torch.tensor(expected))
    before = torch.softmax(logits, -1)[0]
    assert probs[0, 0] < before[0] and probs[0, 1] < before[1], "seen tokens must become less likely"
    assert probs[0, 2] > before[2], "the unseen token takes the freed mass"


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert apply_top_k(logits, 2).tolist() == [[-INF, 3.0, 2.0, -INF]], "top-2"
    assert apply_top_k(logits, 10).tolist() == logits.tolist(), "k >= V keeps everything"


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    kept = lambda p: (apply_top_p(logits, p) > -INF)[0].tolist()   # noqa: E731
    assert kept(0.8) == [False, True, False, True], "0.5 + 0.3 reaches 0.8"
    assert kept(0.81) == [False, True, True, True], "needs the third token to pass 0.81"
    assert kept(0.5) == [False, True, False, False], "the top token alone has mass 0.5"
    assert kept(1e-9) == [False, True, False, False], "tiny p keeps only the most likely token"
    assert kept(1.0) == [True, True, True, True], "p = 1 keeps everything"


def test_min_p_threshold_scales_with_the_top_probability():
    logits = torch.tensor([[0.6, 0.3, 0.1]]).log()
    kept = (apply_min_p(logits, 0.2) > -INF)[0].tolist()          # threshold 0.2 * 0.6 = 0.12
    assert kept == [True, True, False], f"min_p kept {kept}"
    kept = (apply_min_p(logits, 0.5) > -INF)[0].tolist()          # threshold 0.3: 0.3 >= 0.3
    assert kept == [True, True, False], f"min_p=0.5 kept {kept}"


def test_greedy_and_top_k_1_and_tiny_top_p_are_argmax():
    torch.manual_seed(0)
    logits = torch.randn(64, 50)
    argmax = logits.argmax(-1)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(choose(logits, SamplingSettings(temperature=0.0), None), argmax), "temperature 0"
    assert torch.equal(choose(logits, SamplingSettings(top_k=1), g), argmax), "top_k=1"
    assert torch.equal(choose(logits, SamplingSettings(top_p=1e-6), g), argmax), "tiny top_p"
    assert torch.equal(choose(logits, SamplingSettings(min_p=0.999999, temperature=3.0), g), argmax), \
        "min_p near 1"


@pytest.mark.parametrize("settings, keep", [
    (SamplingSettings(top_k=3), [0, 1, 2]),
    (SamplingSettings(top_p=0.75), [0, 1, 2]),           # 0.4 + 0.25 = 0.65 < 0.75, + 0.15 = 0.8
    (SamplingSettings(min_p=0.5), [0, 1]),               # >= 0.2: 0.4 and 0.25
    (SamplingSettings(temperature=0.5, top_k=4), [0, 1, 2, 3]),
    # Temperature comes first: t = 2 flattens p to sqrt(p) / sum = 0.294, 0.233, 0.180, 0.161,
    # 0.132; mass before the 4th is 0.707 < 0.75, before the 5th 0.868, so 4 are kept (top-p
    # on the untempered p would keep 3).
    (SamplingSettings(temperature=2.0, top_p=0.75), [0, 1, 2, 3]),
    # min-p threshold on the tempered p: 0.5 * 0.294 = 0.147 keeps 4 (on the raw p,
    # 0.5 * 0.4 = 0.2 would keep 2).
    (SamplingSettings(temperature=2.0, min_p=0.5), [0, 1, 2, 3]),
    (SamplingSettings(), [0, 1, 2, 3, 4]),
])
def test_sampled_frequencies_match_the_renormalised_distribution(settings, keep):
    probs = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08])
    logits = probs.log().expand(40_000, 5)                          # one row per draw
    g = torch.Generator().manual_seed(1234)
    draws = choose(logits, settings, g)
    freq = torch.bincount(draws, minlength=5).double() / draws.numel()
    expected = torch.zeros(5, dtype=torch.float64)
    tempered = probs.double() ** (1 / settings.temperature)         # softmax(log p / t) ∝ p^(1/t)
    expected[keep] = tempered[keep] / tempered[keep].sum()
    # 40k draws: the standard error of a frequency is <= 0.0025, so 0.012 is ~5 sigma.
    assert (freq - expected).abs().max() < 0.012, f"frequencies {freq.tolist()} vs {expected.tolist()}"
    assert (freq[[i for i in range(5) if i not in keep]] == 0).all(), "filtered tokens never drawn"


def test_sampling_uses_only_its_generator():
    logits = torch.randn(8, 30)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    a = choose(logits, SamplingSettings(), torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state), "the global RNG must not be touched"
    b = choose(logits, SamplingSettings(), torch.Generator().manual_seed(7))
    assert torch.equal(a, b), "same generator seed, same draws"


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -0.1}, r"temperature=-0.1: must be a finite number >= 0"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_k": -1}, r"top_k=-1: must be an integer >= 0"),
    ({"top_k": 2.5}, "top_k"),
    ({"top_p": 0.0}, r"top_p=0.0: must be in \(0, 1\]"),
    ({"top_p": 1.5}, r"top_p=1.5: must be in \(0, 1\]"),
    ({"min_p": 1.0}, r"min_p=1.0: must be in \[0, 1\)"),
    ({"min_p": -0.1}, "min_p"),
    ({"repetition_penalty": 0.0}, r"repetition_penalty=0.0: must be a finite number > 0"),
])
def test_invalid_settings_are_value_errors_naming_the_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingSettings(**kwargs)


# -- end to end on a model with fixed logits ---------------------------------------------------

def fixed_logit_model(logits: list[float]) -> B2lM:
    """A real B2lM whose next-token logits are `logits` whatever the input: the last post-norm
    LayerNorm has gain 0 and bias = logits, so every position's output vector is `logits`, and
    the LM head is the identity."""
    V = len(logits)
    model = B2lM(ModelConfig(vocab_size=V, n_embed=V, n_block=1, n_head=1, n_k=4, n_v=4, n_ff=8,
                             n_context=16)).eval()
    with torch.no_grad():
        model.blocks[-1].ff_norm.weight.zero_()
        model.blocks[-1].ff_norm.bias.copy_(torch.tensor(logits))
        model.lm_head.weight.copy_(torch.eye(V))
    return model


def test_generate_ids_samples_the_filtered_model_distribution():
    probs = torch.tensor([0.05, 0.4, 0.25, 0.15, 0.1, 0.05])
    model = fixed_logit_model(probs.log().tolist())
    out = generate_ids(model, [[0]] * 20_000, max_new_tokens=1, top_k=4, top_p=0.75, seed=3)
    freq = torch.bincount(torch.tensor([g.ids[0] for g in out]), minlength=6).double() / 20_000
    # top_k=4 keeps ids 1, 2, 3, 4 (mass 0.9); renormalised 0.444, 0.278, 0.167, 0.111;
    # top_p=0.75 then keeps 1, 2, 3 (0.444 + 0.278 = 0.722 < 0.75): renormalised 0.4/0.8 ...
    expected = torch.tensor([0, 0.4, 0.25, 0.15, 0, 0], dtype=torch.float64) / 0.8
    assert (freq - expected).abs().max() < 0.02, f"frequencies {freq.tolist()}"


def test_repetition_penalty_end_to_end_lowers_seen_tokens_by_the_formula():
    logits = [1.0, 0.5, -0.5, 0.2]
    model = fixed_logit_model(logits)
    out = generate_ids(model, [[0, 2]], max_new_tokens=1, temperature=0, repetition_penalty=1.0)
    assert out[0].ids == [0], "without a penalty the argmax is token 0"
    # seen {0, 2}, penalty 3: 1.0 -> 0.333 and -0.5 -> -1.5; now token 1 (0.5) is the argmax
    out = generate_ids(model, [[0, 2]], max_new_tokens=1, temperature=0, repetition_penalty=3.0,
                       return_logprobs=True)
    assert out[0].ids == [1], f"with penalty 3 token 1 should win, got {out[0].ids}"
    raw = torch.log_softmax(torch.tensor(logits), -1)[1].item()
    assert out[0].logprobs[0] == pytest.approx(raw, abs=1e-5), "logprobs are the model's raw ones"


def test_repetition_penalty_also_counts_the_tokens_generated_so_far():
    model = fixed_logit_model([1.0, 0.5, -0.5, 0.2])
    out = generate_ids(model, [[3]], max_new_tokens=2, temperature=0, repetition_penalty=3.0)
    # Step 1, seen {3}: 0.2 -> 0.067; token 0 (1.0) wins. Step 2, seen {3, 0}: 1.0 -> 0.333,
    # so token 1 (0.5) wins; a penalty on the prompt alone would pick token 0 again.
    assert out[0].ids == [0, 1], f"the first generated token is penalised at step 2: {out[0].ids}"
    out = generate_ids(model, [[3]], max_new_tokens=2, temperature=0)
    assert out[0].ids == [0, 0], "without a penalty the fixed argmax repeats"


def test_generate_stops_at_end_of_text_by_default():
    tokenizer = Tokenizer(vocab_size=300)               # 256 bytes, <|endoftext|> 256, <|pad|>
    logits = [0.0] * len(tokenizer)
    logits[tokenizer.eot_id] = 5.0                      # the model always wants to end the text
    model = fixed_logit_model(logits)
    g = generate(model, tokenizer, "a", max_new_tokens=5, temperature=0, return_logprobs=True)
    assert (g.text, g.ids, g.finish_reason) == ("", [tokenizer.eot_id], "eot"), \
        f"stop at the first end-of-text token, which is not part of the text: {g}"
    g = generate(model, tokenizer, "a", max_new_tokens=5, temperature=0, return_logprobs=True,
                 stop_at_eot=False)
    assert (g.ids, g.finish_reason) == ([tokenizer.eot_id] * 5, "length"), \
        f"stop_at_eot=False goes on to max_new_tokens: {g}"
    assert g.text == "<|endoftext|>" * 5, f"and the text holds the tokens: {g.text!r}"
