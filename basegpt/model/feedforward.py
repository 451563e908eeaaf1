"""Position-wise feed-forward networks: the per-token MLP of each block.

Attention mixes information across positions; the feed-forward network then transforms each
position on its own (Vaswani et al., 2017, section 3.3). Variants share one constructor,
`(n_embed, n_ff, bias)`, and one forward, (B, T, C) -> (B, T, C), so the block never asks which
it has:

    relu    down(relu(up(x)))                          the original design
    gelu    down(gelu(up(x)))                          GPT-2 (tanh approximation of GELU)
    swiglu  down(silu(gate(x)) * up(x))                Shazeer (2020); Llama

SwiGLU has three matrices instead of two, so at the same n_ff it has 1.5x the parameters; to
match a 2-matrix MLP of width F, give it n_ff = 2F/3 (as Llama does). The config takes n_ff as
written and does not rescale it.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

GELU_TANH_COEFF = 0.044715  # Hendrycks & Gimpel (2016), section 2: fit of the cubic term


def relu(x: torch.Tensor) -> torch.Tensor:
    """relu(x) = max(x, 0)."""
    return x.clamp_min(0.0)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (Hendrycks & Gimpel, 2016), the one GPT-2 uses ("gelu_new"):

        gelu(x) = 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3)))

    It approximates the exact x * Phi(x) (Phi the standard normal CDF) to within ~1e-3; GPT-2's
    weights were trained with this form, so it is the one to use when loading them.
    """
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + GELU_TANH_COEFF * x * x * x)))


def silu(x: torch.Tensor) -> torch.Tensor:
    """silu(x) = x * sigmoid(x) (also called swish with beta = 1)."""
    return x * torch.sigmoid(x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": relu, "gelu": gelu_tanh, "silu": silu}

# The same functions as single fused torch kernels: one pass over the (B, T, F) tensor forward
# and one backward, where the formulas above take five or six (gelu on (4, 256, 3072): 22 ms
# -> 4.6 ms forward + backward on a 2-core CPU). The config's `activation_kernel` chooses;
# tests hold the two to the same outputs and gradients.
FUSED_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,     # clamp_min's backward is a comparison plus a where; relu's is one kernel
    "gelu": partial(F.gelu, approximate="tanh"), "silu": F.silu}
ACTIVATION_KERNELS = {"manual": ACTIVATIONS, "fused": FUSED_ACTIVATIONS}


class MLP(nn.Module):
    """Two-layer MLP: y = down(act(up(x))), widths C -> F -> C.

    `activation` is a name in ACTIVATIONS (its formula with kernel="manual", torch's fused
    kernel from FUSED_ACTIVATIONS with kernel="fused"), or any elementwise function, which then
    runs on both kernels: `partial(MLP, activation=relu_squared)` is a new feed-forward.
    """

    def __init__(self, n_embed: int, n_ff: int, bias: bool = True,
                 activation: str | Callable[[torch.Tensor], torch.Tensor] = "relu",
                 kernel: str = "fused") -> None:
        super().__init__()
        self.up = nn.Linear(n_embed, n_ff, bias=bias)
        self.down = nn.Linear(n_ff, n_embed, bias=bias)   # a residual output projection (scaled init)
        self.activation = _activation(activation, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.activation(self.up(x)))     # (B, T, C) -> (B, T, F) -> (B, T, C)


class SwiGLU(nn.Module):
    """Gated MLP with a SiLU gate (Shazeer, 2020, "GLU Variants Improve Transformer"):

        y = down(silu(gate(x)) * up(x))                   widths C -> F (twice) -> C
    """

    def __init__(self, n_embed: int, n_ff: int, bias: bool = True, kernel: str = "fused") -> None:
        super().__init__()
        self.silu = _activation("silu", kernel)
        self.gate = nn.Linear(n_embed, n_ff, bias=bias)
        self.up = nn.Linear(n_embed, n_ff, bias=bias)
        self.down = nn.Linear(n_ff, n_embed, bias=bias)   # a residual output projection (scaled init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.silu(self.gate(x)) * self.up(x))  # (B, T, F) * (B, T, F) -> (B, T, C)


# The config's `activation` picks an entry; all share the constructor (n_embed, n_ff, bias, kernel).
# A new activation is a function and one entry here, `"name": partial(MLP, activation=function)`,
# plus its name in config.py's `Activation` Literal (README, "Adding a variant").
FEEDFORWARDS: dict[str, Callable[..., nn.Module]] = {
    "relu": partial(MLP, activation="relu"),
    "gelu": partial(MLP, activation="gelu"),
    "swiglu": SwiGLU,
}


def build_feedforward(name: str, n_embed: int, n_ff: int, bias: bool = True,
                      kernel: str = "fused") -> nn.Module:
    """The feed-forward FEEDFORWARDS[name], (B, T, C) -> (B, T, C) with hidden width n_ff."""
    if name not in FEEDFORWARDS:
        raise ValueError(f"unknown activation {name!r}; choose one of: {', '.join(sorted(FEEDFORWARDS))}")
    return FEEDFORWARDS[name](n_embed, n_ff, bias=bias, kernel=kernel)


def _activation(name: str | Callable[[torch.Tensor], torch.Tensor],
                kernel: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if kernel not in ACTIVATION_KERNELS:
        raise ValueError(f"unknown activation kernel {kernel!r}; choose one of: "
                         f"{', '.join(sorted(ACTIVATION_KERNELS))}")
    if callable(name):
        return name          # a function given directly is its own reference and fast path
    if name not in ACTIVATION_KERNELS[kernel]:
        raise ValueError(f"unknown activation {name!r}; choose one of: "
                         f"{', '.join(sorted(ACTIVATION_KERNELS[kernel]))}, or pass the function itself")
    return ACTIVATION_KERNELS[kernel][name]
