"""The decoder-only transformer, one idea per module.

    norms.py        LayerNorm, RMSNorm (written from their formulas)
    positional.py   where position enters: sinusoidal, learned, rotary (RoPE), none
    feedforward.py  position-wise MLP: ReLU, GELU (tanh), SwiGLU
    attention.py    causal self-attention with grouped-query heads; "manual" and "sdpa" kernels
    block.py        one residual block: post-norm (original) or pre-norm (GPT-2)
    kv_cache.py     per-layer key/value storage for incremental decoding
    b2lm.py         B2lM: token embedding -> positions -> blocks -> (final norm) -> LM head

The same numbers, faster on a CPU (a weight layout, a one-token decoding step, a kernel
hand-off), live outside, in basegpt/fast/, behind one switch.

Shape legend, used in every shape comment of this package:

    B  batch size
    T  new positions in this forward pass (the whole sequence without a cache, 1 when decoding)
    S  attended positions: cached + new (S == T without a cache)
    C  residual stream width, n_embed
    H  query heads, n_head
    G  key/value heads, n_kv_head (G == H: multi-head; 1 < G < H: grouped-query; G == 1: multi-query)
    D  per-head query/key width, n_k (the value width n_v is written Dv where it differs)
    F  feed-forward hidden width, n_ff
    V  vocabulary size
"""

from basegpt.config import ModelConfig
from basegpt.model.attention import ATTENTION_KERNELS, CausalSelfAttention, attention_manual, attention_sdpa
from basegpt.model.b2lm import B2lM
from basegpt.model.block import BLOCKS, PostNormBlock, PreNormBlock
from basegpt.model.feedforward import ACTIVATIONS, FEEDFORWARDS, MLP, SwiGLU
from basegpt.model.kv_cache import KVCache
from basegpt.model.norms import NORMS, LayerNorm, RMSNorm
from basegpt.model.positional import POSITIONALS

__all__ = [
    "ACTIVATIONS", "ATTENTION_KERNELS", "BLOCKS", "FEEDFORWARDS", "NORMS", "POSITIONALS",
    "B2lM", "CausalSelfAttention", "KVCache", "LayerNorm", "MLP", "ModelConfig", "PostNormBlock", "PreNormBlock",
    "RMSNorm", "SwiGLU", "attention_manual", "attention_sdpa",
]
