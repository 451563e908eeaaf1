"""The screen fit prints before training: what will train, on what, how, and in how much memory.

    model: 26,752 parameters (17,152 without embeddings), 2 blocks x 32 wide, context 16
    batch: 2 x 16 tokens x 2 accumulation x 2 process(es) = 128 tokens/step; steps: 6
    memory estimate: weights 0.1 MB, gradients 0.1 MB, Adam 0.2 MB, activations ~0 MB
    memory per process, without activations: ddp 0.4 MB (a whole replica), fsdp 0.3 MB (...)
    device cpu (torchrun local rank); float32 (dtype='float32'); compile off (...); parallel fsdp (asked)
    optimizer adam, fused kernels, lr 0.003 (cosine, warmup 0)

Each decision comes with its reason (fit passes them in `decisions`), so a run's log says why
it ran as it did.
"""

from __future__ import annotations

import torch

from basegpt.config import TrainConfig
from basegpt.model import B2lM
from basegpt.sharding import replica_bytes, sharded_bytes


def summary(model: B2lM, config: TrainConfig, device: torch.device, dtype: torch.dtype,
            T: int, accum: int, world: int, total_steps: int | None,
            decisions: dict[str, str] | None = None) -> str:
    """One screen: size, batch, memory estimate and the device/precision/compile decisions.

    `decisions` says what was chosen and why, e.g. {"dtype": "auto: this CPU multiplies bf16
    in hardware (AVX512-BF16)", "compile": "off (auto: off on cpu; ...)", "optimizer": "adam,
    fused kernels", "parallel": "fsdp (asked)"} (fit fills it from devices.dtype_decision,
    devices.compile_decision, the optimizer it built and sharding.choose; "memory": what
    basegpt.fast.keep_freed_memory did, where the caller asked for it).

    Memory: weights + gradients (4 bytes each) + Adam's two moments (8 bytes), and activations
    per Korthikanti et al. (2022) (summary_activations). Under torchrun, a line per process for
    each way of spreading the model (sharding.py): DDP's whole replica, FSDP's shard.
    """
    n = model.num_parameters()
    c = model.config
    tokens_per_step = config.batch_size * T * accum * world
    act = summary_activations(model, config.batch_size, T, dtype, config.activation_checkpointing)
    mb = 1 / 2 ** 20
    steps = f"{total_steps:,}" if total_steps else "until the time budget"
    budget = f", budget {config.max_minutes:g} min" if config.max_minutes else ""
    why = decisions or {}
    dtype_name = str(dtype).removeprefix("torch.")
    scaler = " with a gradient scaler" if dtype == torch.float16 else ""
    where = "torchrun local rank" if world > 1 else f"device={config.device!r}"
    dtype_why = why.get("dtype", f"dtype={config.dtype!r}")
    lines = [
        f"model: {n:,} parameters ({model.num_parameters(exclude_embeddings=True):,} without "
        f"embeddings), {c.n_block} blocks x {c.n_embed} wide, context {c.n_context}",
        f"batch: {config.batch_size} x {T} tokens x {accum} accumulation x {world} "
        f"process(es) = {tokens_per_step:,} tokens/step; steps: {steps}{budget}",
        f"memory estimate: weights {n * 4 * mb:.1f} MB, gradients {n * 4 * mb:.1f} MB, "
        f"Adam {n * 8 * mb:.1f} MB, activations ~{act * mb:.0f} MB",
    ]
    spread = world > 1 or config.parallel == "fsdp"       # more than one way to hold it
    if spread:
        gathered = 2 if dtype in (torch.float16, torch.bfloat16) else 4
        lines.append(f"memory per process, without activations: ddp {replica_bytes(n) * mb:,.1f} "
                     f"MB (a whole replica), fsdp {sharded_bytes(model, world, gathered) * mb:,.1f}"
                     f" MB (1/{world} of it + the embeddings and two blocks gathered)"
                     + ("; with offload, all but the gathered blocks in CPU memory"
                        if config.offload else ""))
    lines += [
        f"device {device} ({where}); {dtype_name}{scaler} ({dtype_why}); "
        f"compile {why.get('compile', config.compile)}"
        + (f"; parallel {why['parallel']}" if spread and "parallel" in why else ""),
        f"optimizer {why.get('optimizer', config.optimizer)}, lr {config.lr:g} "
        f"({config.schedule}, warmup {config.warmup_steps})",
    ]
    return "\n".join(lines + ([f"memory: {why['memory']}"] if "memory" in why else []))


def summary_activations(model: B2lM, batch_size: int, T: int, dtype: torch.dtype,
                        recompute: bool = False) -> float:
    """Bytes of activations a micro-batch keeps for the backward pass: per block
    ~ T*B*C*(34 + 5*H*T/C) at 16-bit, doubled at fp32 (Korthikanti et al. 2022), and the
    float32 logits with their gradient. With activation checkpointing (`recompute`) a block
    keeps only its input, and one block at a time has its activations again."""
    c = model.config
    act_bytes = 2 if dtype in (torch.float16, torch.bfloat16) else 4
    blocks = [T * batch_size * c.n_embed * (34 + 5 * b.n_head * T / c.n_embed) * act_bytes / 2
              for b in c.block_configs]
    if recompute:
        blocks = [T * batch_size * c.n_embed * act_bytes] * len(blocks) + [max(blocks)]
    return sum(blocks) + batch_size * T * c.vocab_size * 4 * 2
