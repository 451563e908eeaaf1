"""Choosing the next token from the model's logits: the sampling controls of `generate.py`.

A language model gives, for the next position, one logit z_i per vocabulary token i; the
distribution over the next token is p_i = softmax(z)_i = exp(z_i) / sum_j exp(z_j). Decoding
picks one token from it. The controls below reshape the logits first, always in this order:

    1. repetition penalty   (CTRL, Keskar et al. 2019)  on the raw logits of already-seen tokens
    2. temperature          z / t; t = 0 means greedy: argmax, and steps 3-5 are skipped
    3. top-k                keep the k largest logits           (Fan et al. 2018)
    4. top-p, "nucleus"     keep the smallest most-likely set with mass >= p  (Holtzman et al. 2020)
    5. min-p                keep tokens with p_i >= min_p * max_j p_j  (Nguyen et al. 2024)

then sample from softmax of what is left (removed tokens get logit -inf, probability 0, and the
rest are renormalised by the softmax). Each filter sees the distribution the previous one left,
and each always keeps the most likely token, so no filter can leave nothing to sample; and
greedy decoding is the same under every filter: argmax of the penalised logits.

Randomness comes only from the `torch.Generator` passed in, never from torch's global RNG, so
the same seed gives the same tokens and sampling does not disturb anyone else's random state.

The controls' values arrive as a `SamplingSettings` (basegpt/config.py, checked when made, with
no torch, so the CLI can check them before loading a model); a `GenerationConfig` is one.
"""

from __future__ import annotations

import math

import torch

from basegpt.config import SamplingSettings


# --------------------------------------------------------------------------- the processors

def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al. 2019, section 4.1), as Hugging Face applies it.

        z_i' = z_i / penalty   if token i was seen and z_i > 0
        z_i' = z_i * penalty   if token i was seen and z_i <= 0
        z_i' = z_i             otherwise

    With penalty > 1 a seen token's logit always moves down (a positive one shrinks towards 0, a
    negative one grows away from it), so its probability drops; "seen" = anywhere in the prompt
    or the text generated so far (each token counts once, however often it occurs).

        logits [2.0, -1.0, 0.5], seen [T, T, F], penalty 2 -> [1.0, -2.0, 0.5]

    logits: (B, V) float; seen: (B, V) bool. Returns a new tensor.
    """
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)   # (B, V)
    return torch.where(seen, penalised, logits)


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the rest to -inf (ties with the k-th largest
    are kept too). k >= V keeps everything.  (B, V) -> (B, V)

        logits [1.0, 3.0, 2.0, 0.0], k=2 -> [-inf, 3.0, 2.0, -inf]
    """
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]             # (B, 1) the k-th largest
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of most likely tokens
    whose total probability is >= p, set the rest to -inf.  (B, V) -> (B, V)

    Sort probabilities descending, p_(1) >= p_(2) >= ...; keep token (j) iff the mass strictly
    before it, p_(1) + ... + p_(j-1), is < p. The most likely token has mass 0 before it, so it
    is always kept.

        probs [0.5, 0.3, 0.15, 0.05], p=0.8 -> keeps the first two (0.5 < 0.8, 0.8 is not < 0.8)
    """
    probs = torch.softmax(logits, dim=-1)                           # (B, V)
    sorted_probs, order = probs.sort(dim=-1, descending=True)       # (B, V) each
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs        # (B, V) exclusive cumsum
    drop_sorted = mass_before >= p                                  # (B, V) in sorted order
    drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)   # back to id order
    return logits.masked_fill(drop, float("-inf"))


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Min-p filtering (Nguyen et al. 2024): keep token i iff p_i >= min_p * max_j p_j.
    The threshold scales with the model's confidence: strict when one token dominates, loose
    when many are plausible. In logits: z_i >= max_j z_j + log(min_p).  (B, V) -> (B, V)

        probs [0.6, 0.3, 0.1], min_p=0.2 -> threshold 0.12 -> keeps the first two
    """
    threshold = logits.max(dim=-1, keepdim=True).values + math.log(min_p)   # (B, 1)
    return logits.masked_fill(logits < threshold, float("-inf"))


def process_logits(logits: torch.Tensor, settings: SamplingSettings,
                   seen: torch.Tensor | None = None) -> torch.Tensor:
    """Steps 1-5 of the module docstring: the logits whose softmax is sampled. (B, V) -> (B, V).
    For greedy settings only the repetition penalty applies (the filters all keep the argmax)."""
    s = settings
    logits = logits.float()
    if s.repetition_penalty != 1.0:
        if seen is None:
            raise ValueError("a repetition penalty needs `seen`, the (B, V) bool mask of tokens "
                             "already in the context")
        logits = apply_repetition_penalty(logits, seen, s.repetition_penalty)
    if s.greedy:
        return logits
    if s.temperature != 1.0:
        logits = logits / s.temperature
    if s.top_k:
        logits = apply_top_k(logits, s.top_k)
    if s.top_p < 1.0:
        logits = apply_top_p(logits, s.top_p)
    if s.min_p > 0.0:
        logits = apply_min_p(logits, s.min_p)
    return logits


def choose(logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator | None,
           seen: torch.Tensor | None = None) -> torch.Tensor:
    """The next token of each row: logits (B, V) -> ids (B,) int64.

    Greedy (temperature 0): argmax of the penalised logits (the lowest id among exact ties).
    Otherwise one draw per row from softmax(process_logits(logits)), using `generator`.
    """
    logits = process_logits(logits, settings, seen)                # (B, V)
    if settings.greedy:
        return logits.argmax(dim=-1)                                # (B,)
    probs = torch.softmax(logits, dim=-1)                           # (B, V), zero where filtered
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)   # (B,)


__all__ = ["SamplingSettings", "apply_min_p", "apply_repetition_penalty", "apply_top_k",
           "apply_top_p", "choose", "process_logits"]
