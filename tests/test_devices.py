"""pick_device (basegpt/devices.py): "auto" takes CUDA, then MPS, then the CPU, and an unknown
or absent device is a ValueError that lists the devices this machine has. CUDA and MPS are
switched on and off with monkeypatch, so the answers are the same on any machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from basegpt.devices import available_devices, pick_device


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_and_cpu_on_a_cpu_only_machine(cpu_only):
    assert available_devices() == ["auto", "cpu"], available_devices()
    assert pick_device() == torch.device("cpu"), "auto falls back to the CPU"
    assert pick_device("cpu") == torch.device("cpu"), "cpu is always there"


@pytest.mark.parametrize("name, message", [
    ("foo", r"^unknown device 'foo'; choose one of: auto, cpu$"),
    ("cuda:x", r"^unknown device 'cuda:x'; choose one of: auto, cpu$"),
    ("cuda", r"^device 'cuda' is not available on this machine; choose one of: auto, cpu$"),
    ("mps", r"^device 'mps' is not available on this machine; choose one of: auto, cpu$"),
    ("meta", r"^device 'meta' is not available on this machine"),
])
def test_unknown_or_absent_devices_are_value_errors_listing_the_valid_ones(cpu_only, name,
                                                                          message):
    with pytest.raises(ValueError, match=message):
        pick_device(name)


def test_a_gpu_index_past_the_last_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)      # pretend: one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert available_devices() == ["auto", "cpu", "cuda", "cuda:0"], available_devices()
    assert pick_device("cuda:0") == torch.device("cuda:0"), "the one GPU"
    assert pick_device() == torch.device("cuda"), "auto prefers CUDA"
    with pytest.raises(ValueError, match=r"device 'cuda:1' is not available on this machine; "
                                         r"choose one of: auto, cpu, cuda, cuda:0"):
        pick_device("cuda:1")


@pytest.mark.parametrize("cuda, mps, expected", [
    (True, True, "cuda"),          # CUDA first, even beside MPS
    (False, True, "mps"),          # then Apple's GPU
    (False, False, "cpu"),         # then the CPU
])
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: int(cuda))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert pick_device("auto") == torch.device(expected), f"cuda={cuda}, mps={mps}"
    assert ("mps" in available_devices()) == mps, available_devices()


# ------------------------------------------------------------------------ malloc on a CPU

class FakeLibc:
    """Stands in for glibc: records mallopt calls and answers `answer` (1 = accepted)."""

    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def gnu_get_libc_version(self) -> bytes:
        return b"2.36"

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.answer


def test_malloc_thresholds_are_set_on_glibc_unless_the_user_tuned_malloc():
    from basegpt.fast.memory import MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD, set_malloc_thresholds
    libc = FakeLibc()
    said = set_malloc_thresholds(libc, {})
    assert libc.calls == [(-3, MALLOC_MMAP_THRESHOLD), (-1, MALLOC_TRIM_THRESHOLD)], libc.calls
    assert said == "glibc malloc keeps freed memory for reuse (mmap threshold 32 MiB, trim " \
                   "threshold 512 MiB)", said
    for environ, expected in (({"MALLOC_TRIM_THRESHOLD_": "131072"}, "as the environment sets it"),
                              ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"},
                               "as the environment sets it"),
                              ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "preloaded allocator")):
        libc = FakeLibc()
        said = set_malloc_thresholds(libc, environ)
        assert libc.calls == [] and expected in said, (environ, libc.calls, said)
    assert set_malloc_thresholds(None, {}) == "the system's malloc (not glibc)"
    assert "refused" in set_malloc_thresholds(FakeLibc(answer=0), {})


GLIBC_SCRIPT = r'''
import resource, sys, torch
from basegpt.fast.memory import keep_freed_memory

torch.ones(1)                                   # torch's own first-use work
if sys.argv[1] == "kept":
    print(keep_freed_memory())
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for mib in range(1, 25):                        # ever larger blocks, each touched, then freed
    torch.ones(mib * 2 ** 18)                   # mib MiB of float32
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_kept_memory_is_reused_instead_of_mapped_afresh():
    # glibc's defaults mmap each block larger than the largest freed so far, and unmap it on
    # free: every one of these 300 MiB is a fresh page to fault in. Kept, the blocks come from
    # the heap and its freed top stays: only the heap's growth to 24 MiB faults.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}

    def faults(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", GLIBC_SCRIPT, mode], capture_output=True,
                             text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        return lines[0] if mode == "kept" else "", int(lines[-1])
    said, kept = faults("kept")
    if "not glibc" in said:
        pytest.skip(f"this Linux's C library is not glibc: {said}")
    assert said.startswith("glibc malloc keeps freed memory"), said
    _, default = faults("default")
    import resource
    pages = 300 * 2 ** 20 // resource.getpagesize()
    assert default > pages // 2, f"glibc's defaults should fault in every block: {default}"
    assert kept < default / 5, f"kept memory faulted {kept} times (default {default})"


def test_malloc_setting_reports_only_what_was_asked_for():
    from basegpt.fast.memory import keep_freed_memory, malloc_setting
    keep_freed_memory.cache_clear()
    assert malloc_setting() is None, "nothing asked: nothing to report (and nothing changed)"
    done = keep_freed_memory()
    assert malloc_setting() == done, "asked once: its result, without acting again"
