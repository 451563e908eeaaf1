"""glibc's malloc asked to keep the memory a CPU training step frees, for the next step.

A process-wide setting: the command line, which owns its process, asks for it; the library's
fit() never does (it reports what was asked, `malloc_setting`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

# By default glibc's malloc gives large freed blocks straight back to the system (blocks from
# 128 KiB up are mmap'd, a threshold it adapts, and the heap's top is trimmed past
# M_TRIM_THRESHOLD), so a CPU training step, which frees and allocates the same activations
# every step, pays the kernel to map and zero fresh pages again each time (thousands of page
# faults a step; BENCHMARKS.md, training, has the measurements with and without the thresholds
# below).
MALLOC_MMAP_THRESHOLD = 32 * 2 ** 20    # the ceiling of glibc's own adaptive threshold (64-bit)
MALLOC_TRIM_THRESHOLD = 512 * 2 ** 20   # free memory kept at the heap's top, for reuse
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3          # mallopt's parameter numbers (malloc.h)
_MALLOC_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                     "MALLOC_MMAP_MAX_")


@functools.cache
def keep_freed_memory() -> str:
    """Ask glibc's malloc to keep freed memory for reuse rather than return it to the system
    (blocks under MALLOC_MMAP_THRESHOLD come from the heap; up to MALLOC_TRIM_THRESHOLD of
    free heap stays). `basegpt train` calls it when training on a CPU (a library call must
    not change the process's settings, so fit does not); it acts once per process, for the
    whole process, and returns what it did, which fit's summary then states.

    It leaves malloc alone where libc is not glibc (macOS, Windows, musl), where another
    allocator is preloaded (LD_PRELOAD), and where the environment tunes glibc's malloc
    itself (MALLOC_TRIM_THRESHOLD_ and its siblings, or glibc.malloc in GLIBC_TUNABLES):
    setting one of those is the way to choose other thresholds.
    """
    import ctypes
    try:
        libc = ctypes.CDLL(None)                    # the C library this process runs on
    except OSError:
        libc = None
    return set_malloc_thresholds(libc, os.environ)


def malloc_setting() -> str | None:
    """What keep_freed_memory did in this process; None when nothing has asked for it."""
    return keep_freed_memory() if keep_freed_memory.cache_info().currsize else None


def set_malloc_thresholds(libc: Any, environ: Mapping[str, str]) -> str:
    """keep_freed_memory's work, on a given C library (a ctypes.CDLL, or None) and
    environment; returns what it did."""
    if libc is None or not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return "the system's malloc (not glibc)"
    if "malloc" in environ.get("LD_PRELOAD", ""):
        return "the preloaded allocator (LD_PRELOAD)"
    if (any(name in environ for name in _MALLOC_VARIABLES)
            or "glibc.malloc" in environ.get("GLIBC_TUNABLES", "")):
        return "glibc malloc as the environment sets it"
    if (libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD) != 1
            or libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD) != 1):
        return "glibc malloc's defaults (mallopt refused the thresholds)"
    return (f"glibc malloc keeps freed memory for reuse (mmap threshold "
            f"{MALLOC_MMAP_THRESHOLD // 2 ** 20} MiB, trim threshold "
            f"{MALLOC_TRIM_THRESHOLD // 2 ** 20} MiB)")
