"""Where and in what precision training runs: device, dtype, autocast, compile, peak FLOP/s.

Decisions live here, not in the loop, and arrive as settings ("auto" or explicit):
    device  auto: CUDA, then Apple's MPS, then the CPU
    dtype   auto: bf16 autocast on GPUs with bf16 tensor cores (compute capability 8.0+),
            fp16 (with a gradient scaler) on older GPUs; on a CPU bf16 autocast where it
            multiplies bf16 in hardware (AVX512-BF16 or AMX), else fp32; fp32 on MPS
    compile auto: on for CUDA under Linux
PEAK_TFLOPS turns tokens/s into MFU (model FLOPs utilisation) on known GPUs. compile_decision
and dtype_decision say why, for the summary fit prints before training.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

PEAK_TFLOPS: dict[str, dict[str, float]] = {
    # Peak TFLOP/s from NVIDIA's data sheets: bf16/fp16 are the dense tensor-core figures,
    # WITHOUT 2:4 structured sparsity (from Ampere on, the data sheets' headline numbers are
    # "with sparsity", twice these; V100 and T4 have none); float32 is the plain (non
    # tensor-core) FP32 rate, which is what an fp32 matmul gets unless TF32 is switched on.
    # Keys are regexes searched in torch.cuda.get_device_name(); the first match wins, so a
    # specific name comes before the one it contains ("H100 PCIe" before "H100", "L40S" before
    # "L40" before "L4"), and \b makes "A10" miss "A10G" and "L4" miss "L40".
    # Recognised but left without figures (so MFU is omitted; pass peak_tflops): the NVL
    # cards, whose published per-GPU figures differ between data sheet versions, and the A10G,
    # which has no NVIDIA data sheet.
    r"\b[HG]?H[12]00\b.*\bNVL\b": {},
    r"\bH100\b.*\bPCIe\b": {"bfloat16": 756.0, "float16": 756.0, "float32": 51.0},
    r"\bH100\b": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},    # SXM: "H100 80GB HBM3"
    r"\bH200\b": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},    # SXM
    r"\bA100\b": {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5},    # SXM4 and PCIe
    r"\bL40S\b": {"bfloat16": 362.05, "float16": 362.05, "float32": 91.6},
    r"\bL40\b": {"bfloat16": 181.05, "float16": 181.05, "float32": 90.5},
    r"\bL4\b": {"bfloat16": 121.0, "float16": 121.0, "float32": 30.3},
    r"\bA10G\b": {},
    r"\bA10\b": {"bfloat16": 125.0, "float16": 125.0, "float32": 31.2},
    r"\bV100S\b": {"float16": 130.0, "float32": 16.4},                     # V100S PCIe
    r"\bV100\b.*\bPCIE\b": {"float16": 112.0, "float32": 14.0},
    r"\bV100\b": {"float16": 125.0, "float32": 15.7},                      # SXM2
    r"\bT4\b": {"float16": 65.0, "float32": 8.1},
}


def available_devices() -> list[str]:
    """The device names `pick_device` accepts on this machine, e.g. ["auto", "cpu", "cuda",
    "cuda:0"] on a one-GPU Linux box."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if mps_available():
        names.append("mps")
    return names


def pick_device(name: str = "auto") -> torch.device:
    """auto: CUDA if available, then Apple's MPS, then the CPU. Any other name must be one of
    `available_devices()`; an unknown name ("foo") or a device this machine lacks ("cuda"
    without CUDA, "cuda:3" with one GPU) is a ValueError that lists the valid ones."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    choices = ", ".join(available_devices())
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; choose one of: {choices}") from None
    present = (device.type == "cpu"
               or (device.type == "cuda" and torch.cuda.is_available()
                   and (device.index is None or device.index < torch.cuda.device_count()))
               or (device.type == "mps" and mps_available()))
    if not present:
        raise ValueError(f"device {name!r} is not available on this machine; choose one of: "
                         f"{choices}")
    return device


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on `device`: a CUDA GPU's free memory
    (torch.cuda.mem_get_info), or for the CPU the kernel's estimate of what can be allocated
    without swapping (MemAvailable in /proc/meminfo; else the free pages os.sysconf reports).
    None where it cannot be known (MPS, other systems): callers then refuse nothing."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024          # the kernel counts in kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: int) -> str:
    """A byte count for people, in binary units: 1536 -> "1.5 KiB", 5 * 2**40 -> "5.0 TiB"."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    value, i = float(n), 0
    while value >= 1024 and i < len(units) - 1:
        value, i = value / 1024, i + 1
    return f"{n} B" if i == 0 else f"{value:.1f} {units[i]}"


def mps_available() -> bool:
    """True when torch can use Apple's GPU (MPS) on this machine."""
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


BF16_MIN_CAPABILITY = 8     # Ampere: the first GPUs whose tensor cores multiply bf16


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on GPUs with bf16 tensor cores (compute capability 8.0+: A100, H100, L4,
    ...), fp16 on older GPUs (V100, T4); bf16 on CPUs with bf16 instructions
    (`cpu_bf16_instructions`), fp32 on other CPUs and on MPS.

    The capability is asked directly: torch.cuda.is_bf16_supported() also says True on 7.x
    GPUs, where bf16 is emulated and runs far slower than fp16. On a CPU with bf16
    instructions, bf16 autocast trains faster than fp32 and the main job reaches a lower
    validation loss in the same time (BENCHMARKS.md, training); without those instructions
    bf16 is converted in software and fp32 stays.
    """
    return dtype_decision(name, device)[0]


@functools.cache
def cpu_bf16_instructions() -> str | None:
    """The name of this CPU's bf16 matrix instructions ("AMX-BF16", "AVX512-BF16"), or None
    when it has neither (or this torch cannot say: then fp32, the safe side). Asked of
    torch's own CPU detection, the one its bf16 kernels dispatch on, once per process (the
    attention kernel asks at every training step)."""
    detect = getattr(torch._C._cpu, "_get_cpu_capability", None)     # private: may go away
    try:
        capability = detect() if detect is not None else {}
    except (RuntimeError, TypeError):
        capability = {}
    for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")):
        if capability.get(flag) is True:
            return name
    return None


def dtype_decision(name: str, device: torch.device) -> tuple[torch.dtype, str]:
    """(pick_dtype's choice, why), the why for the pre-training summary."""
    if name != "auto":
        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        return dtypes[name], f"dtype={name!r}"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        has_bf16 = major >= BF16_MIN_CAPABILITY
        return ((torch.bfloat16 if has_bf16 else torch.float16),
                f"auto: compute capability {major}.{minor} "
                f"{'has' if has_bf16 else 'lacks'} bf16 tensor cores")
    if device.type == "cpu":
        instructions = cpu_bf16_instructions()
        if instructions is not None:
            return torch.bfloat16, f"auto: this CPU multiplies bf16 in hardware ({instructions})"
        return torch.float32, "auto: fp32 on a CPU without bf16 instructions"
    return torch.float32, f"auto: fp32 on {device.type}"


def peak_flops(device: torch.device, dtype: torch.dtype, override_tflops: float | None) -> float | None:
    """Peak FLOP/s of one device for this dtype, from PEAK_TFLOPS by the GPU's name; None
    when unknown (CPUs, MPS, GPUs not in the table), and then training reports no MFU.
    `override_tflops` (TrainConfig.peak_tflops, `--peak-tflops`) replaces the lookup, e.g.
    for a GPU the table lacks."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    figures = gpu_peak_tflops(torch.cuda.get_device_name(device))
    dtype_name = str(dtype).removeprefix("torch.")
    if figures is None or dtype_name not in figures:
        return None
    return figures[dtype_name] * 1e12


def gpu_peak_tflops(name: str) -> dict[str, float] | None:
    """The PEAK_TFLOPS entry for a GPU name, by the first pattern that matches (None if none).

        gpu_peak_tflops("NVIDIA H100 PCIe")["bfloat16"] -> 756.0
        gpu_peak_tflops("NVIDIA L40")["bfloat16"]       -> 181.05   (not the L4's 121)
        gpu_peak_tflops("NVIDIA A10G")                  -> None     (recognised, no figures)
    """
    for pattern, figures in PEAK_TFLOPS.items():
        if re.search(pattern, name, flags=re.IGNORECASE):
            return figures or None
    return None


def autocast(device: torch.device, dtype: torch.dtype) -> Callable[[], Any]:
    """A factory of the context that runs a forward pass in `dtype` (nothing for fp32)."""
    if dtype == torch.float32:
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def compile_decision(setting: str, device: torch.device) -> tuple[bool, str]:
    """(compile?, why) for the pre-training summary, e.g. (False, "auto: off on cpu, ...").
    A "yes" can still end eager: fit falls back if compiling fails (it warns once)."""
    if setting != "auto":
        return setting == "on", f"compile={setting!r}"
    if device.type != "cuda":
        return False, (f"auto: off on {device.type}, where its start-up cost did not pay "
                       "back in a laptop-sized run, see BENCHMARKS.md")
    if not sys.platform.startswith("linux"):
        return False, f"auto: off for CUDA on {sys.platform} (on under Linux only)"
    return True, "auto: on for CUDA under Linux"
