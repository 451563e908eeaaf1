"""Speed tricks for CPUs, behind one door.

basegpt/model/ is the plain transformer: every step written as the math reads. Each module here
computes the same numbers faster on a CPU, and basegpt uses it only where the switch is on:

    layout.py     store_transposed: Linear weights kept in (in, out) memory order, which
                  batch-1 products stream faster (basegpt lays out every model it builds:
                  load_run, train_run, basegpt.B2lM)
    decode.py     DecodeStep: the one-token decoding step in fewer operations, its products in
                  numpy's OpenBLAS on one thread (generate, after the prefill)
    compiled.py   CompiledStep: DecodeStep's step for one row as one call into C (_decode.c,
                  an optional extension), on torch.get_num_threads() threads
    support.py    unsupported: which models both steps may stand in for
    attention.py  bf16 / fp16 training over short sequences on a CPU with bf16 instructions runs
                  attention's manual steps, where torch's fused kernel is slow (fit)
    memory.py     keep_freed_memory: glibc's malloc keeps what a training step frees, for the
                  next one (process-wide, so only the command line asks for it)

The switch: BASEGPT_FAST=0 in the environment, `basegpt.fast.set_enabled(False)`, or
`with basegpt.fast.disabled():` runs the plain path only. tests/test_fast.py holds every
trick to the plain path's numbers; BENCHMARKS.md records what each one gains.
"""

from basegpt.fast.attention import attention_sdpa_or_manual, sdpa_hands_to_manual, training_kernels
from basegpt.fast.compiled import CompiledStep, compiled_unsupported
from basegpt.fast.decode import DecodeStep
from basegpt.fast.support import unsupported
from basegpt.fast.layout import prepare, store_transposed
from basegpt.fast.memory import keep_freed_memory, malloc_setting
from basegpt.fast.switch import disabled, enabled, set_enabled

__all__ = [
    "CompiledStep", "DecodeStep", "attention_sdpa_or_manual", "compiled_unsupported", "disabled", "enabled", "keep_freed_memory",
    "malloc_setting", "prepare", "sdpa_hands_to_manual", "set_enabled", "store_transposed",
    "training_kernels", "unsupported",
]
