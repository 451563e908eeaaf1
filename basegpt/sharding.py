"""Sharded data parallelism (FSDP2): each process keeps 1/N of the weights, gradients and Adam state.

    torchrun --nproc_per_node=N -m basegpt train --parallel fsdp ...

Data parallelism (distributed.py) keeps a whole replica in every process: 4 bytes of weights,
4 of gradients and 8 of Adam's two moments per parameter, 16n bytes for n parameters, however
many processes there are. FSDP (Zhao et al. 2023; PyTorch's `fully_shard`, FSDP2) splits each
parameter by rows among the N processes instead (ZeRO stage 3, Rajbhandari et al. 2020), so a
process holds 16n/N bytes of them:

    forward    a block's processes all-gather its rows into whole weights, run the block,
               and drop the gathered weights again
    backward   gather again, compute the block's gradients, reduce-scatter them: each process
               receives the mean over processes of its own rows' gradients
    step       each process updates its own rows with its own rows of Adam's moments

The unit of gathering is one block; the embeddings, the final norm and the head form the
root unit (with a tied head, one tensor), gathered for the whole forward pass. Besides it, a
process holds two blocks whole at a time (the one computing, the next one prefetched). The
arithmetic is the data-parallel step's: a test holds FSDP's losses equal to DDP's and to one
process's.

Options: mixed precision (the gathered weights in bf16/fp16 while the rows and the gradient
reduction stay fp32), activation checkpointing (B2lM.activation_checkpointing), and CPU offload
(the rows, their gradients and the optimizer in CPU memory; the device holds the gathered
units). A process holds its rows as DTensors (torch.distributed.tensor). Checkpoints stay
pickle-free: the weights gathered whole into model.safetensors, each process's rows of Adam's
moments in a safetensors file of its own (train_state.py), read back at any process count.
"""

from __future__ import annotations

import math
import os
import sys
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from basegpt.distributed import Dist
    from basegpt.model import B2lM

FIT_SHARE = 0.8
"""parallel="auto" picks DDP while a whole replica's estimate needs at most this share of a
device's memory (the rest: activations' peaks, the allocator's slack, the CUDA context)."""


# ------------------------------------------------------------------------ choosing

def choose(setting: str, model: B2lM, dist: Dist, device: torch.device,
           activations: float) -> tuple[str, str]:
    """How fit spreads the model over the processes: ("none" | "ddp" | "fsdp", why).

    One process: "none" (nothing to spread), or "fsdp" when asked for (one shard: what it
    adds then is --offload). Under torchrun: what `setting` asks for; "auto" picks DDP while
    a whole replica (weights, gradients, Adam, `activations` bytes) fits in FIT_SHARE of a
    device's memory, else FSDP.
    """
    if setting == "fsdp":
        return "fsdp", "asked"
    if not dist.enabled:
        return "none", "one process"
    if setting == "ddp":
        return "ddp", "asked"
    need = replica_bytes(model.num_parameters()) + activations
    have = device_memory(device)
    if have is None:
        return "ddp", "auto: this device's memory is unknown"
    fits = need <= FIT_SHARE * have
    return (("ddp" if fits else "fsdp"),
            f"auto: a whole replica needs ~{need / 2**20:,.0f} MB, {'within' if fits else 'over'} "
            f"{FIT_SHARE:.0%} of the {have / 2**20:,.0f} MB a process has on {device.type}")


def replica_bytes(n_params: int) -> int:
    """A whole replica's training state: fp32 weights and gradients, Adam's two moments."""
    return 16 * n_params


def sharded_bytes(model: B2lM, world: int, gathered_bytes: int = 4) -> int:
    """One FSDP process's training state: 1/world of the replica, plus the weights gathered
    whole at a time, `gathered_bytes` per value (2 with bf16/fp16 mixed precision): the root
    unit for the whole forward pass (the tied head at its end uses the embedding of its start)
    and two blocks (the one computing and the next, prefetched)."""
    units = [sum(p.numel() for p in block.parameters()) for block in model.blocks]
    root = model.num_parameters() - sum(units)
    return (math.ceil(replica_bytes(model.num_parameters()) / world)
            + gathered_bytes * (root + 2 * max(units)))


def device_memory(device: torch.device) -> int | None:
    """The memory one process may count on: a GPU's total memory, or the machine's RAM shared
    by the processes on it (torchrun's LOCAL_WORLD_SIZE). None where it cannot be known."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type != "cpu":
        return None
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return total // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)


# ------------------------------------------------------------------------ sharding

def shard(model: B2lM, device: torch.device, dtype: torch.dtype, offload: bool) -> None:
    """Shard `model` in place over the process group: each block one unit, then the rest
    (embeddings, final norm, head) the root unit. Its parameters become DTensors holding this
    process's rows; build the optimizer afterwards, on them. `dtype` bf16/fp16: the gathered
    weights in that dtype, the gradient reduction in fp32 (summed in bf16, the processes'
    gradients would keep 8 bits of mantissa; it costs twice the bytes of a bf16 reduction).
    `offload`: rows, gradients and the optimizer's state in CPU memory."""
    from torch.distributed.fsdp import (CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy,
                                        fully_shard)
    low = dtype in (torch.bfloat16, torch.float16)
    options = {
        "mp_policy": (MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if low
                      else MixedPrecisionPolicy()),
        # Pinned (page-locked) memory lets the copies to a GPU run asynchronously; it needs one.
        "offload_policy": (CPUOffloadPolicy(pin_memory=device.type == "cuda") if offload
                           else OffloadPolicy()),
    }
    for param in model.parameters():
        # FSDP splits rows of row-major memory; basegpt.fast lays Linear weights out
        # transposed (the same values), for decoding. Back to row-major, the same Parameters.
        if not param.is_contiguous():
            param.data = param.data.contiguous()
    for block in model.blocks:
        fully_shard(block, **options)
    fully_shard(model, **options)


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether `model` was sharded by `shard` (its calls are then collective: every process
    of the group must make them together)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


def is_dtensor(tensor: Any) -> bool:
    """Whether `tensor` is a DTensor (a process's part of a sharded tensor). Without its
    module imported no DTensor can exist, so plain use never imports torch.distributed."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def rows(n: int, world: int, rank: int) -> tuple[int, int]:
    """The rows [start, stop) of an n-row tensor that process `rank` of `world` holds: FSDP2
    splits dim 0 as torch.chunk does, ceil(n / world) rows each, the last ones shorter or
    empty."""
    chunk = math.ceil(n / world)
    start = min(rank * chunk, n)
    return start, min(start + chunk, n)


def own_rows(tensor: Any) -> tuple[int, int]:
    """The rows of the whole tensor that this process's part of DTensor `tensor` holds."""
    mesh = tensor.device_mesh
    start, stop = rows(tensor.shape[0], mesh.size(), mesh.get_local_rank())
    assert tensor.to_local().shape[0] == stop - start, "FSDP split the rows as torch.chunk"
    return start, stop


def from_rows(part: torch.Tensor, like: Any) -> Any:
    """This process's rows `part` of a whole tensor, as a DTensor sharded as `like` is."""
    from torch.distributed.tensor import DTensor
    return DTensor.from_local(part.to(like.to_local().device, like.dtype), like.device_mesh,
                              like.placements, shape=like.shape, stride=like.stride(),
                              run_check=False)


def copy_whole(param: torch.Tensor, whole: torch.Tensor) -> None:
    """Copy the whole tensor `whole` into `param`: all of it, or for a DTensor its rows."""
    with torch.no_grad():
        if is_dtensor(param):
            start, stop = own_rows(param)
            param.to_local().copy_(whole[start:stop])
        else:
            param.copy_(whole)


def gather(tensors: dict[str, torch.Tensor], keep: bool) -> dict[str, torch.Tensor]:
    """Every tensor whole, on the CPU, one at a time (DTensors are all-gathered: every
    process must call this together); `keep` False (the processes that do not write) returns
    {} and holds none of them."""
    whole = {}
    for name, tensor in tensors.items():
        if is_dtensor(tensor):
            # Offloaded rows live in CPU memory; NCCL gathers only on the GPU.
            mesh = tensor.device_mesh
            if mesh.device_type != "cpu" and tensor.device.type == "cpu":
                tensor = tensor.to(mesh.device_type)
            tensor = tensor.full_tensor()
        if keep:
            whole[name] = tensor.detach().cpu()
    return whole
