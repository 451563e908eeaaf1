"""bf16 / fp16 training on a CPU: attention's manual steps where torch's fused kernel is slow."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from basegpt import devices
from basegpt.fast.switch import enabled
from basegpt.model.attention import CausalSelfAttention, attention_manual, attention_sdpa

# Up to this many keys, training in bf16 / fp16 on a CPU with bf16 instructions runs the manual
# kernel's steps instead of torch's fused kernel, whose forward + backward is slower there
# (BENCHMARKS.md, training: attention kernels). Past it the fused kernel wins, and saves the
# (T, S) weights' memory. On a CPU without bf16 instructions it is the other way round: the
# manual steps' emulated bf16 products are slower, so there the fused kernel stays at every
# length.
CPU_LOW_PRECISION_MANUAL_MAX_KEYS = 256


def sdpa_hands_to_manual(q: torch.Tensor, S: int) -> bool:
    """Whether `attention_sdpa_or_manual` runs `attention_manual` for these queries and S keys:
    training (gradients on) in bf16 or fp16 on a CPU with bf16 instructions
    (`devices.cpu_bf16_instructions`), with at most CPU_LOW_PRECISION_MANUAL_MAX_KEYS keys.
    Inference, fp32 and CPUs without bf16 instructions keep the fused kernel.

    Under CPU autocast the fused kernel runs in the autocast dtype whatever q's own (RoPE's
    float32 tables promote q back to float32 before it gets here), so that dtype counts."""
    if q.device.type != "cpu" or not (q.requires_grad and torch.is_grad_enabled()):
        return False
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype
    return (dtype in (torch.bfloat16, torch.float16) and S <= CPU_LOW_PRECISION_MANUAL_MAX_KEYS
            and devices.cpu_bf16_instructions() is not None)


def attention_sdpa_or_manual(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             mask: torch.Tensor | None = None, dropout_p: float = 0.0,
                             return_weights: bool = False
                             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`attention_sdpa`, or where `sdpa_hands_to_manual` says so `attention_manual`: the same
    computation (the kernels' contract, model/attention.py)."""
    kernel = attention_manual if sdpa_hands_to_manual(q, k.shape[2]) else attention_sdpa
    return kernel(q, k, v, mask, dropout_p, return_weights)


@contextlib.contextmanager
def training_kernels(model: nn.Module) -> Iterator[None]:
    """Inside the block, every attention layer of `model` that runs the sdpa kernel runs
    `attention_sdpa_or_manual` instead, where the switch is on; afterwards its own kernel
    again. fit trains inside it."""
    swapped = [module for module in model.modules()
               if isinstance(module, CausalSelfAttention) and module.kernel is attention_sdpa
               ] if enabled() else []
    for module in swapped:
        module.kernel = attention_sdpa_or_manual
    try:
        yield
    finally:
        for module in swapped:
            module.kernel = attention_sdpa
