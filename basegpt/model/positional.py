"""Positional encodings: how a token's position enters the model.

Attention by itself is blind to order (it sees a set of keys), so position has to be added
somewhere. The variants act in different places, so each has two hooks, identity by default:

    embed(x, pos)      added to the token embeddings once, before the first block
                       (sinusoidal, learned)
    rotate(q, k, pos)  applied to queries and keys inside every attention layer (RoPE)

The model calls `embed` once and every attention layer calls `rotate`; neither ever asks which
kind it has. `pos` holds absolute positions, int64, shape (T,) or (B, T) (per-row positions, for
left-padded batches); with a KV cache it starts at the cache length, so positions continue.
"""

from __future__ import annotations

import torch
from torch import nn

from basegpt.config import ModelConfig

SINUSOID_BASE = 10000.0  # Vaswani et al. (2017), section 3.5: wavelengths 2*pi .. 2*pi*10000


class Positional(nn.Module):
    """The base of every positional encoding: both hooks are the identity, and each variant
    overrides the one it needs.

    Used as it is, it is `positional="none"`: no position information at all ("NoPE"). The
    causal mask still lets a model infer position a little (a token at t sees exactly t + 1
    tokens), so it can learn, but weaker."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Token embeddings x (B, T, C) at positions pos (T,) or (B, T) -> (B, T, C); here x itself."""
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries (B, H, T, D) and keys (B, G, T, D) at positions pos -> the same shapes; here unchanged."""
        return q, k


def sinusoid_table(n_positions: int, dim: int, base: float = SINUSOID_BASE) -> torch.Tensor:
    """The fixed table of Vaswani et al. (2017), section 3.5, shape (n_positions, dim):

        PE[p, 2i]     = sin(p / base ** (2i / dim))
        PE[p, 2i + 1] = cos(p / base ** (2i / dim))

    Each pair of columns is a clock turning at its own speed, from one turn per 2*pi positions
    (i = 0) to one per 2*pi*base (the last pair), so every position gets a distinct pattern and
    PE[p + k] is a fixed rotation of PE[p] for each k. An odd `dim` drops the last cosine column.
    """
    p = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)             # (P, 1)
    two_i = torch.arange(0, dim, 2, dtype=torch.float64)                          # (ceil(dim/2),)
    angle = p / base ** (two_i / dim)                                             # (P, ceil(dim/2))
    table = torch.zeros(n_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return table.float()  # computed in float64 so that large p * small frequency stays exact


class Sinusoidal(Positional):
    """Fixed sinusoidal encoding added to the token embeddings (the original design's default).

        x[b, t] = sqrt(C) * tok_emb[ids[b, t]] + PE[pos[t]]        PE from `sinusoid_table`

    The sqrt(C) is Vaswani et al. (2017), section 3.4. It matters: the table's entries are
    sines of amplitude 1 while embeddings start at std init_std = 0.02, so without it the
    position drowns the token (measured: a seed-size model's loss stalls near the unigram
    level, 5.3 after 150 steps on tinyshakespeare, against 4.2 with the factor).
    No parameters; the table is a non-persistent buffer (rebuilt from the config, not saved).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.scale = config.n_embed ** 0.5
        self.register_buffer("table", sinusoid_table(config.n_context, config.n_embed), persistent=False)

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """sqrt(C) * x + PE[pos]: (B, T, C) -> (B, T, C)."""
        return x * self.scale + self.table[pos]                     # (B, T, C) + (T, C) or (B, T, C)


class Learned(Positional):
    """A learned vector per position, added to the token embeddings (GPT-1, GPT-2).

        x[b, t] = tok_emb[ids[b, t]] + pos_emb[pos[t]]

    One (n_context, C) table of parameters, initialised like the token embeddings.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.weight = nn.Parameter(torch.empty(config.n_context, config.n_embed))   # (n_context, C)
        nn.init.normal_(self.weight, std=config.init_std)

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x + pos_emb[pos]: (B, T, C) -> (B, T, C)."""
        return x + self.weight[pos]                                  # (B, T, C)


class _RotaryTable(nn.Module):
    """cos and sin of RoPE's angles for one head width D; buffers so they follow .to(device)."""

    def __init__(self, n_positions: int, head_dim: int, base: float) -> None:
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)   # (D/2,)
        angle = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1) * inv_freq      # (P, D/2)
        self.register_buffer("cos", angle.cos().float(), persistent=False)
        self.register_buffer("sin", angle.sin().float(), persistent=False)


class Rotary(Positional):
    """Rotary position embedding, RoPE (Su et al., 2021, "RoFormer").

    Each query and key vector is cut into D/2 pairs, and pair i at position p is rotated by the
    angle p * theta_i, with theta_i = rope_base ** (-2i / D):

        (x1, x2) -> (x1 * cos(p theta_i) - x2 * sin(p theta_i),
                     x1 * sin(p theta_i) + x2 * cos(p theta_i))

    Rotations compose, so q_m . k_n = (R_m q) . (R_n k) = q . R_(n-m) k depends only on the offset
    n - m: attention sees relative positions, and nothing is added to the residual stream.
    Pairs are (x[i], x[i + D/2]) ("rotate half", as GPT-NeoX and Llama), not adjacent
    columns; the two layouts are the same up to a fixed permutation of the head's columns.
    Values are not rotated. Blocks may have different n_k, so there is one table per width.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        widths = sorted({b.n_k for b in config.block_configs})
        self.tables = nn.ModuleDict({str(d): _RotaryTable(config.n_context, d, config.rope_base)
                                     for d in widths})

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn each (x[i], x[i + D/2]) pair of q (B, H, T, D) and k (B, G, T, D) by pos * theta_i."""
        table = self.tables[str(q.shape[-1])]
        cos, sin = table.cos[pos], table.sin[pos]                   # (T, D/2), or (B, T, D/2)
        if pos.dim() == 2:                                           # per-row positions
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)            # (B, 1, T, D/2): same for all heads
        return _rotate_half(q, cos, sin), _rotate_half(k, cos, sin)


def _rotate_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)                                      # (B, H, T, D/2) each
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)   # (B, H, T, D)


POSITIONALS: dict[str, type[Positional]] = {
    "sinusoidal": Sinusoidal,
    "learned": Learned,
    "rope": Rotary,
    "none": Positional,
}


def build_positional(config: ModelConfig) -> Positional:
    """The positional encoding POSITIONALS[config.positional], built for config's widths."""
    if config.positional not in POSITIONALS:
        raise ValueError(f"unknown positional {config.positional!r}; "
                         f"choose one of: {', '.join(sorted(POSITIONALS))}")
    return POSITIONALS[config.positional](config)


__all__ = ["POSITIONALS", "Learned", "Positional", "Rotary", "Sinusoidal", "build_positional",
           "sinusoid_table"]
