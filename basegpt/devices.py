"""Where and in what precision training runs: device, dtype, autocast, compile, peak FLOP/s.

Decisions live here, not in the loop, and arrive as settings ("auto" or explicit):
    device  auto: CUDA, then Apple's MPS, then the CPU
    dtype   auto: bf16 autocast on GPUs that support it, fp16 (with a gradient scaler) on
            older GPUs, fp32 on CPU and MPS
    compile auto: on for CUDA under Linux
PEAK_TFLOPS turns tokens/s into MFU (model FLOPs utilisation) on known GPUs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

PEAK_TFLOPS: dict[str, dict[str, float]] = {
    # Dense (no sparsity) tensor-core peaks from the vendors' data sheets, TFLOP/s.
    "H200": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},
    "H100 SXM": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},
    "H100 PCIe": {"bfloat16": 756.0, "float16": 756.0, "float32": 51.0},
    "H100": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5},
    "L40S": {"bfloat16": 362.0, "float16": 362.0, "float32": 91.6},
    "L4": {"bfloat16": 121.0, "float16": 121.0, "float32": 30.3},
    "A10": {"bfloat16": 125.0, "float16": 125.0, "float32": 31.2},
    "V100": {"float16": 125.0, "float32": 15.7},
    "T4": {"float16": 65.0, "float32": 8.1},
}


def pick_device(name: str = "auto") -> torch.device:
    """auto: CUDA if available, then Apple's MPS, then the CPU."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available; "
                             "use --device cpu (or auto)")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU and MPS.

    CPU stays fp32 by default: see BENCHMARKS.md (bf16 autocast on CPU) for the measurement
    that decided it.
    """
    if name != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def peak_flops(device: torch.device, dtype: torch.dtype, override_tflops: float | None) -> float | None:
    """Peak FLOP/s of the device for this dtype (None when unknown, e.g. CPUs)."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    dtype_name = str(dtype).removeprefix("torch.")
    for key in PEAK_TFLOPS:            # ordered: specific names ("H100 PCIe") before "H100"
        if key in name and dtype_name in PEAK_TFLOPS[key]:
            return PEAK_TFLOPS[key][dtype_name] * 1e12
    return None


def autocast(device: torch.device, dtype: torch.dtype) -> Callable[[], Any]:
    """A factory of the context that runs a forward pass in `dtype` (nothing for fp32)."""
    if dtype == torch.float32:
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def wants_compile(setting: str, device: torch.device) -> bool:
    """compile "auto": on for CUDA under Linux only. On this project's 2-core CPU the
    start-up cost did not pay back within a laptop-sized run (BENCHMARKS.md)."""
    return setting == "on" or (setting == "auto" and device.type == "cuda"
                               and sys.platform.startswith("linux"))
