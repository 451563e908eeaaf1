"""model/memory.py: the parameter count from a config alone equals the built model's, the
position tables are counted, and a model that cannot fit is refused before any allocation,
with the estimate, the memory available and the setting to lower. The memory available is
patched in, so the refusals do not depend on the machine running the tests."""

from __future__ import annotations

import pytest
import torch

import basegpt.model.memory as memory
from basegpt import B2lM, ModelConfig
from basegpt.devices import available_memory, format_bytes
from basegpt.model.memory import check_fits, memory_needed, parameter_count, table_values

GiB = 2**30
TINY = dict(vocab_size=300, n_context=16, n_block=2, n_embed=32, n_head=4, n_k=8, n_v=8, n_ff=64)


@pytest.mark.parametrize("changes", [
    {},
    {"tie_weights": True, "bias": False},
    {"positional": "learned", "norm_position": "pre"},
    {"positional": "rope", "norm": "rmsnorm", "norm_position": "pre"},
    {"positional": "none", "activation": "swiglu", "n_kv_head": 2},
    {"n_v": 12, "blocks": [{"n_head": 2, "n_k": 6, "activation": "swiglu"}, {"n_kv_head": 1}]},
    {"positional": "rope", "blocks": [{"n_k": 4}, {"n_k": 10}]},
])
def test_the_count_from_the_config_equals_the_built_model(changes):
    config = ModelConfig(**(TINY | changes))
    model = B2lM(config)
    assert parameter_count(config) == model.num_parameters(), changes
    tables = sum(b.numel() for b in model.buffers())
    assert table_values(config) == tables, f"{changes}: the position tables hold {tables} values"


def test_memory_needed_counts_weights_and_tables_in_the_default_dtype():
    config = ModelConfig(**TINY, positional="sinusoidal")
    expected = 4 * parameter_count(config) + 16 * 16 * 32       # float32 weights; table built in float64
    assert memory_needed(config) == expected
    training = memory_needed(config, batch_size=8)
    assert training == expected + 3 * 4 * parameter_count(config) + 8 * 16 * (300 + 2 * 32) * 4, \
        "training adds the gradients, Adam's two moments and one micro-batch's activations"


def test_a_model_too_big_for_the_memory_is_refused_before_any_allocation(monkeypatch):
    """Without the check, torch's allocator fails (a RuntimeError) or the kernel kills the
    process; with it, a ValueError comes before the first tensor."""
    monkeypatch.setattr(memory, "available_memory", lambda device: 16 * GiB)
    with pytest.raises(ValueError) as info:
        B2lM(ModelConfig(n_context=10**9, positional="learned"))
    message = str(info.value)
    for part in ("building this model needs about 476.8 GiB", "cpu has 16.0 GiB available",
                 "learned position table (n_context=1000000000 x n_embed=128)",
                 "lower n_context (--n-context)"):
        assert part in message, f"{part!r} not in: {message}"


def test_training_needs_are_refused_with_the_batch_and_context_named(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device: 16 * GiB)
    config = ModelConfig(**(TINY | {"n_context": 10**6, "positional": "none"}))
    check_fits(config)                                       # the model itself is small
    with pytest.raises(ValueError) as info:
        check_fits(config, "cpu", batch_size=64)
    message = str(info.value)
    assert message.startswith("training this model needs about 86.8 GiB of memory, but cpu has "
                              "16.0 GiB available"), message
    assert "lower batch_size (--batch-size) or n_context (--n-context)" in message, message


def test_unknown_memory_and_the_meta_device_refuse_nothing(monkeypatch):
    huge = ModelConfig(n_context=10**9, positional="learned")
    monkeypatch.setattr(memory, "available_memory", lambda device: None)
    check_fits(huge)                                         # nothing known: nothing refused
    monkeypatch.setattr(memory, "available_memory", lambda device: 1)
    check_fits(huge, "meta")                                 # meta allocates nothing
    with torch.device("meta"):
        assert B2lM(huge).num_parameters() == parameter_count(huge), "run_info counts on meta"


def test_small_models_do_not_even_read_the_free_memory(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device: pytest.fail("read"))
    B2lM(ModelConfig(**TINY))


@pytest.mark.skipif(not __import__("os").path.exists("/proc/meminfo"),
                    reason="reads /proc/meminfo, which only Linux has")
def test_available_memory_of_the_cpu_is_what_linux_reports():
    fields = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    total = int(fields["MemTotal"].split()[0]) * 1024
    available = available_memory(torch.device("cpu"))
    assert isinstance(available, int) and 0 < available <= total, (available, total)


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 1023, 1536, 5 * 2**40, 15 * 2**50)] == \
        ["0 B", "1023 B", "1.5 KiB", "5.0 TiB", "15.0 PiB"]
