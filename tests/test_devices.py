"""pick_device (basegpt/devices.py): "auto" takes CUDA, then MPS, then the CPU, and an unknown
or absent device is a ValueError that lists the devices this machine has. CUDA and MPS are
switched on and off with monkeypatch, so the answers are the same on any machine."""

from __future__ import annotations

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
