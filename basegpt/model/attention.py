"""Causal self-attention with grouped-query heads, and its two kernels.

Scaled dot-product attention (Vaswani et al., 2017, section 3.2.1), per head:

    Attention(Q, K, V) = softmax(Q K^T / sqrt(D) + M) V

with M = 0 where a query may attend to a key and -inf where it may not. Causal: the query at
position t attends to keys at positions <= t only, so the model cannot peek at the tokens it is
asked to predict.

Grouped-query attention (Ainslie et al., 2023): H query heads share G <= H key/value heads, each
kv head serving H/G consecutive query heads. G == H is plain multi-head attention, G == 1 is
multi-query attention (Shazeer, 2019). Fewer kv heads shrink the KV cache by H/G.

Two kernels, one contract (ATTENTION_KERNELS):

    kernel(q, k, v, mask=None, dropout_p=0.0, return_weights=False) -> (out, weights or None)
        q: (B, H, T, D)   k: (B, G, S, D)   v: (B, G, S, Dv)   out: (B, H, T, Dv)
        mask: bool, broadcastable to (B, H, T, S), True = "may attend" (as torch's SDPA), or
              None for the plain causal mask with the T queries being the last T of the S keys
              (S == T without a cache; S > T when decoding after a cached prefix)

"manual" writes each step out and can return the attention weights; "sdpa" hands the same
computation to torch's fused kernel (F.scaled_dot_product_attention). Tests hold them equal,
outputs and gradients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import nn

from basegpt.config import BlockConfig

if TYPE_CHECKING:
    from basegpt.model.kv_cache import KVCache
    from basegpt.model.positional import Positional


def causal_mask(T: int, S: int, device: torch.device | None = None) -> torch.Tensor:
    """Bool (T, S), True where query t (absolute position S - T + t) may attend to key s <= it.

        causal_mask(2, 4) -> [[T, T, T, F],
                              [T, T, T, T]]
    """
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


def left_padding_mask(pad_lengths: torch.Tensor, T: int, S: int) -> torch.Tensor:
    """Bool (B, 1, T, S) for left-padded rows: row b's first pad_lengths[b] positions are
    padding, which no real query may attend to; otherwise causal, as `causal_mask`.

        left_padding_mask(tensor([0, 2]), T=3, S=3)[1, 0] -> [[T, F, F],    query 0 is padding
                                                             [F, T, F],    query 1 is padding
                                                             [F, F, T]]    the real token

    A padding query attends to itself only: with no key at all its softmax row would be
    0/0 = NaN, and NaN outputs would reach the real rows' values through 0 * NaN = NaN.
    """
    device = pad_lengths.device
    q_pos = torch.arange(S - T, S, device=device).unsqueeze(1)    # (T, 1) absolute query positions
    k_pos = torch.arange(S, device=device).unsqueeze(0)           # (1, S)
    real_key = k_pos >= pad_lengths.unsqueeze(1)                  # (B, S) the key is not padding
    mask = (k_pos <= q_pos) & real_key.unsqueeze(1)               # (B, T, S) causal, no padding
    mask = mask | (k_pos == q_pos)                                # (B, T, S) plus the diagonal
    return mask.unsqueeze(1)                                      # (B, 1, T, S): same for all heads


def attention_manual(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                     dropout_p: float = 0.0, return_weights: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q k^T / sqrt(D), masked) v, step by step. The reference the fast kernel must match.

    With return_weights=True also returns the attention probabilities (B, H, T, S), before
    dropout: row t is how much query t takes from each key (each row sums to 1).
    """
    B, H, T, D = q.shape
    G, S = k.shape[1], k.shape[2]
    if G != H:                                              # (with G == H a repeat would only copy)
        k = k.repeat_interleave(H // G, dim=1)              # (B, H, S, D): kv head g serves queries g*H/G ..
        v = v.repeat_interleave(H // G, dim=1)              # (B, H, S, Dv)
    scores = (q @ k.transpose(-2, -1)) * D ** -0.5          # (B,H,T,D) @ (B,H,D,S) -> (B,H,T,S)
    if mask is None:
        mask = causal_mask(T, S, device=q.device)           # (T, S)
    # M of the formula above: 0 where the key may be attended, -inf where not. Adding it gives
    # masked_fill's numbers, and its backward is cheaper: the add passes its gradient straight
    # through, where masked_fill's backward masks the gradient again (BENCHMARKS.md, training).
    M = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device).masked_fill_(
        ~mask, float("-inf"))                               # (T, S) or (B, 1, T, S)
    scores = scores + M                                     # a forbidden key gets weight exp(-inf) = 0
    weights = torch.softmax(scores, dim=-1)                 # (B, H, T, S), rows sum to 1
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    out = dropped @ v                                       # (B,H,T,S) @ (B,H,S,Dv) -> (B,H,T,Dv)
    return out, (weights if return_weights else None)


def attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                   dropout_p: float = 0.0, return_weights: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The same computation in torch's fused scaled_dot_product_attention (flash / memory-efficient
    kernels where the device has them): no (T, S) score matrix is kept for the backward pass."""
    if return_weights:
        raise ValueError("the sdpa kernel never forms the attention weights; use the manual kernel "
                         "(attention='manual', or return_weights on the attention module) to get them")
    H, G = q.shape[1], k.shape[1]
    if G != H:
        # Grouped-query: give every query head its kv head. (SDPA's enable_gqa flag does this
        # without the copy but, on CPU with torch 2.x, falls back to the slow math path.)
        k = k.repeat_interleave(H // G, dim=1)              # (B, H, S, D)
        v = v.repeat_interleave(H // G, dim=1)              # (B, H, S, Dv)
    T, S = q.shape[2], k.shape[2]
    if mask is None and T == S:
        # is_causal lets the fused kernel skip masked blocks instead of reading a mask tensor.
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True), None
    if mask is None and T > 1:
        mask = causal_mask(T, S, device=q.device)           # (T, S): prefill after a cached prefix
    # mask None and T == 1 here: one new query at the last position may attend to every key.
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p), None


Kernel = Callable[..., tuple[torch.Tensor, "torch.Tensor | None"]]
ATTENTION_KERNELS: dict[str, Kernel] = {"manual": attention_manual, "sdpa": attention_sdpa}


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with optional grouped-query heads.

        q = x Wq   (H heads of width D)     k = x Wk   (G heads of width D)
        v = x Wv   (G heads of width Dv)    q, k = rotate(q, k, pos)   (RoPE; identity otherwise)
        y = concat_h(Attention(q_h, k_(h // (H/G)), v_(h // (H/G)))) Wo      Wo: (H*Dv, C)

    Wq, Wk, Wv are one fused Linear (`qkv_proj`): one matrix multiply instead of three.
    """

    def __init__(self, config: BlockConfig, layer_idx: int = 0) -> None:
        super().__init__()
        C, H, G, D, Dv = config.n_embed, config.n_head, config.n_kv_head, config.n_k, config.n_v
        self.n_head, self.n_kv_head, self.n_k, self.n_v = H, G, D, Dv
        self.layer_idx = layer_idx                          # this layer's slot in a KV cache
        self.qkv_proj = nn.Linear(C, H * D + G * D + G * Dv, bias=config.bias)
        self.out_proj = nn.Linear(H * Dv, C, bias=config.bias)   # a residual output projection
        self.kernel = ATTENTION_KERNELS[config.attention]
        self.dropout_p = config.attn_dropout

    def forward(self, x: torch.Tensor, pos: torch.Tensor, positional: Positional,
                kv_cache: KVCache | None = None, mask: torch.Tensor | None = None,
                return_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T, C) float; pos: (T,) or (B, T) int64 absolute positions.

        Returns (y, weights): y (B, T, C); weights (B, H, T, S) if return_weights (computed with
        the manual kernel whatever the config says, since only it forms them), else None.
        """
        B, T, _ = x.shape
        H, G, D, Dv = self.n_head, self.n_kv_head, self.n_k, self.n_v
        q, k, v = self.qkv_proj(x).split([H * D, G * D, G * Dv], dim=-1)
        q = q.view(B, T, H, D).transpose(1, 2)              # (B, H, T, D)
        k = k.view(B, T, G, D).transpose(1, 2)              # (B, G, T, D)
        v = v.view(B, T, G, Dv).transpose(1, 2)             # (B, G, T, Dv)
        q, k = positional.rotate(q, k, pos)                 # keys are cached already rotated
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)    # (B, G, S, D), (B, G, S, Dv)
        kernel = attention_manual if return_weights else self.kernel
        dropout_p = self.dropout_p if self.training else 0.0
        out, weights = kernel(q, k, v, mask, dropout_p, return_weights)   # (B, H, T, Dv)
        y = out.transpose(1, 2).reshape(B, T, H * Dv)       # (B, T, H*Dv): heads side by side
        return self.out_proj(y), weights                    # (B, T, C)
