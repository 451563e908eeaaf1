"""Normalisation layers, written from their formulas: LayerNorm and RMSNorm.

A norm rescales each position's vector (the last axis, width C) to a standard size, so that the
residual stream neither explodes nor vanishes through many blocks. Where it sits (after the
residual add, "post", or before each sublayer, "pre") is the block's business (block.py); here
is only what it computes. Shapes: (..., C) -> (..., C).

Each norm has two kernels (NORM_KERNELS), as attention has: "manual" computes the formula
step by step (the reference), "fused" hands the same formula to torch's single kernel
(F.layer_norm, F.rms_norm). The manual LayerNorm costs ~7 elementwise passes forward and more
backward; at the seed's size that made a whole training step ~5-9% slower on CPU, so "fused"
is the default. Tests hold the two equal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORM_KERNELS: tuple[str, ...] = ("manual", "fused")


class LayerNorm(nn.Module):
    """Layer normalisation (Ba, Kiros & Hinton, 2016).

        mean = sum(x) / C                    over the last axis
        var  = sum((x - mean) ** 2) / C      (biased variance, as torch and the paper)
        y    = g * (x - mean) / sqrt(var + eps) + b

    g starts at 1 and b at 0, so at initialisation the layer is a pure standardisation. `bias=False`
    drops b (as in models trained without biases). eps keeps the division finite when var ~ 0.
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True, kernel: str = "fused") -> None:
        super().__init__()
        self.eps, self.kernel = eps, _check_kernel(kernel)
        self.weight = nn.Parameter(torch.ones(dim))                        # g, (C,)
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None       # b, (C,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "fused":
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        mean = x.mean(dim=-1, keepdim=True)                                # (..., 1)
        centred = x - mean                                                 # (..., C)
        var = (centred * centred).mean(dim=-1, keepdim=True)               # (..., 1)
        y = centred * torch.rsqrt(var + self.eps) * self.weight            # (..., C)
        return y + self.bias if self.bias is not None else y


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich, 2019).

        y = g * x / sqrt(mean(x ** 2 over C) + eps)

    Unlike LayerNorm it subtracts no mean and adds no bias: only the vector's scale is
    normalised, which is cheaper and works as well in transformers. eps keeps the division
    finite when x is ~0. `bias` is accepted for a shared constructor signature and ignored.
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True, kernel: str = "fused") -> None:
        super().__init__()
        self.eps, self.kernel = eps, _check_kernel(kernel)
        self.weight = nn.Parameter(torch.ones(dim))                        # g, (C,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "fused" and hasattr(F, "rms_norm"):              # F.rms_norm: torch >= 2.4
            # Fused on CUDA; on CPU (torch 2.13) a composite about as fast as the manual path.
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        ms = (x * x).mean(dim=-1, keepdim=True)                            # (..., 1)
        return x * torch.rsqrt(ms + self.eps) * self.weight                # (..., C)


def _check_kernel(kernel: str) -> str:
    if kernel not in NORM_KERNELS:
        raise ValueError(f"unknown norm kernel {kernel!r}; choose one of: {', '.join(NORM_KERNELS)}")
    return kernel


NORMS: dict[str, type[nn.Module]] = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}


def build_norm(name: str, dim: int, eps: float = 1e-5, bias: bool = True, kernel: str = "fused") -> nn.Module:
    """The norm NORMS[name] over a last axis of width dim, (..., dim) -> (..., dim)."""
    if name not in NORMS:
        raise ValueError(f"unknown norm {name!r}; choose one of: {', '.join(sorted(NORMS))}")
    return NORMS[name](dim, eps=eps, bias=bias, kernel=kernel)
