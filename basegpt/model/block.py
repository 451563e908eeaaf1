"""One residual block: self-attention then a feed-forward network, each with a residual path.

Two placements of the norm, one class each (BLOCKS), same constructor and forward:

    post-norm (Vaswani et al., 2017; the original design's default):
        x = norm1(x + dropout(attn(x)))
        x = norm2(x + dropout(ff(x)))

    pre-norm (GPT-2; Xiong et al., 2020, "On Layer Normalization in the Transformer"):
        x = x + dropout(attn(norm1(x)))
        x = x + dropout(ff(norm2(x)))

Post-norm normalises the residual stream itself after every sublayer; pre-norm leaves the stream
untouched, so gradients reach early layers through pure additions, which trains deep stacks
more stably without warm-up, but needs one final norm before the LM head (b2lm.py adds it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from basegpt.config import BlockConfig
from basegpt.model.attention import CausalSelfAttention
from basegpt.model.feedforward import build_feedforward
from basegpt.model.norms import build_norm

if TYPE_CHECKING:
    from basegpt.model.kv_cache import KVCache
    from basegpt.model.positional import Positional


class PostNormBlock(nn.Module):
    """x = norm1(x + drop(attn(x))); x = norm2(x + drop(ff(x))). Shapes: (B, T, C) -> (B, T, C)."""

    def __init__(self, config: BlockConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ff = build_feedforward(config.activation, config.n_embed, config.n_ff, bias=config.bias,
                                    kernel=config.activation_kernel)
        norm_kw = dict(eps=config.norm_eps, bias=config.bias, kernel=config.norm_kernel)
        self.attn_norm = build_norm(config.norm, config.n_embed, **norm_kw)
        self.ff_norm = build_norm(config.norm, config.n_embed, **norm_kw)
        self.resid_dropout = nn.Dropout(config.resid_dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, positional: Positional,
                kv_cache: KVCache | None = None, mask: torch.Tensor | None = None,
                return_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, weights = self.attn(x, pos, positional, kv_cache, mask, return_weights)   # (B, T, C)
        x = self.attn_norm(x + self.resid_dropout(a))
        x = self.ff_norm(x + self.resid_dropout(self.ff(x)))
        return x, weights


class PreNormBlock(PostNormBlock):
    """x = x + drop(attn(norm1(x))); x = x + drop(ff(norm2(x))). Same parameters as post-norm."""

    def forward(self, x: torch.Tensor, pos: torch.Tensor, positional: Positional,
                kv_cache: KVCache | None = None, mask: torch.Tensor | None = None,
                return_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, weights = self.attn(self.attn_norm(x), pos, positional, kv_cache, mask, return_weights)
        x = x + self.resid_dropout(a)                                                  # (B, T, C)
        x = x + self.resid_dropout(self.ff(self.ff_norm(x)))
        return x, weights


BLOCKS: dict[str, type[PostNormBlock]] = {"post": PostNormBlock, "pre": PreNormBlock}


def build_block(config: BlockConfig, layer_idx: int) -> PostNormBlock:
    """The block for config.norm_position (BLOCKS); layer_idx is its slot in a KV cache."""
    if config.norm_position not in BLOCKS:
        raise ValueError(f"unknown norm_position {config.norm_position!r}; "
                         f"choose one of: {', '.join(sorted(BLOCKS))}")
    return BLOCKS[config.norm_position](config, layer_idx)
