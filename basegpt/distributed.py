"""Data-parallel training under torchrun, and the same interface when there is one process.

`torchrun --nproc_per_node=N -m basegpt train ...` starts N copies of the program with RANK,
LOCAL_RANK and WORLD_SIZE set. Each process holds a full model replica and a different slice
of every global batch (BatchStream shards the sampler's order by rank);
DistributedDataParallel averages the gradients across processes during backward, so every
replica takes the same optimizer step. NCCL on GPUs, gloo on CPUs. Only rank 0 writes files.

With gradient accumulation, only the last micro-batch of a step needs to synchronise:
`no_sync` skips the all-reduce for the others (the gradients accumulate locally and the last
all-reduce averages the sums).

Every process must make the same collective calls in the same order, or the job hangs. So
whatever can differ between processes (each one's clock, a Ctrl-C that reaches one first) is
summed across them before anyone acts on it: train.py folds those votes into the loss
all-reduce it makes every step anyway, and all processes stop after the same step.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist


@dataclass
class Dist:
    """The process's place in the job; world = 1 and rank = 0 without torchrun."""

    enabled: bool = False
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    device: torch.device | None = None
    parallel: str = "none"
    """How fit spreads the model: "ddp", "fsdp" (sharding.py) or "none" (sharding.choose)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` in DistributedDataParallel (which averages gradients across processes
        during backward and broadcasts rank 0's weights now); the model itself with one
        process, or under FSDP (sharded in place, sharding.shard). On GPUs each process
        drives its own device (device_ids=[local rank])."""
        if self.parallel != "ddp":
            return model
        from torch.nn.parallel import DistributedDataParallel
        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def no_sync(self, model: torch.nn.Module, last: bool) -> Any:
        """Skip the gradient all-reduce (FSDP: reduce-scatter) on every micro-batch but the
        step's last: the gradients add up locally, and the last one syncs the sums."""
        if self.parallel == "fsdp":
            model.set_requires_gradient_sync(last)       # holds until the next call
        elif self.parallel == "ddp" and not last:
            return model.no_sync()
        return contextlib.nullcontext()

    def sum(self, value: float | int) -> float | int:
        """Sum a number over all processes (identity with one process)."""
        return type(value)(self.sum_all([value])[0])

    def sum_all(self, values: list[float | int]) -> list[float]:
        """Sum each of several numbers over all processes in ONE all-reduce (the training
        loop folds its stop votes into the loss sum this way); identity with one process."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                         device=self.device if self.device is not None and self.device.type == "cuda" else "cpu")
        torch_dist.all_reduce(t)
        return t.tolist()

    def gather(self, tensors: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Every process's `tensors` (the same names and shapes in each), in rank order, on
        the CPU: one all_gather per name, so every process must call it at the same point.
        With one process: [tensors]."""
        if not self.enabled:
            return [tensors]
        on_gpu = self.device is not None and self.device.type == "cuda"
        gathered: list[dict[str, torch.Tensor]] = [{} for _ in range(self.world)]
        for name, tensor in tensors.items():
            local = tensor.to(self.device) if on_gpu else tensor      # NCCL moves GPU memory
            parts = [torch.empty_like(local) for _ in range(self.world)]
            torch_dist.all_gather(parts, local)
            for rank, part in enumerate(parts):
                gathered[rank][name] = part.cpu()
        return gathered

    def barrier(self) -> None:
        """Wait until every process gets here (nothing to wait for with one process)."""
        if not self.enabled:
            return
        if self.device is not None and self.device.type == "cuda":
            torch_dist.barrier(device_ids=[self.device.index])   # NCCL: on this rank's GPU
        else:
            torch_dist.barrier()


def _destroy_process_group() -> None:
    """Tear down the process group basegpt made, while the interpreter is still whole.

    A gloo worker thread hands a finished collective back (wait() returns) before it lets go
    of that collective's tensors, and letting go of a tensor Python also knows takes the GIL.
    If the interpreter has begun to finalise by then, taking the GIL ends the thread
    (pthread_exit), the unwinding meets a C++ noexcept frame and the process dies with
    SIGABRT ("terminate called without an active exception"): a finished rank fails the
    torchrun job. Destroying the group joins its worker threads first (the GIL released, so
    they can finish), provided nothing else still holds the group: the traceback of an
    uncaught exception holds fit()'s frames and their DistributedDataParallel wrapper, so its
    frames are cleared (it has been printed by now)."""
    if not torch_dist.is_initialized():
        return
    if getattr(sys, "last_traceback", None) is not None:
        traceback.clear_frames(sys.last_traceback)
    torch_dist.destroy_process_group()


def setup() -> Dist:
    """Join the torchrun job if this process is part of one (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    _start_group(backend)
    return Dist(enabled=True, rank=rank, local_rank=local_rank, world=world, device=device,
                parallel="ddp")


def join_alone(device: torch.device) -> None:
    """Make a process group of this process alone, for FSDP without torchrun (one shard; what
    it brings is offload). Without torchrun there is no rendezvous address: the group meets in
    an in-memory store. It stays after training, since a sharded model's calls go through it,
    and is torn down at exit as setup()'s is. Nothing to do inside a torchrun job."""
    _start_group("nccl" if device.type == "cuda" else "gloo", store=torch_dist.HashStore(),
                 rank=0, world_size=1)


def _start_group(backend: str, **options: Any) -> None:
    """Start the process group (unless one exists), to be torn down at exit."""
    if torch_dist.is_initialized():
        return
    # torch.distributed.nn's functions take `group=group.WORLD` as a default argument,
    # evaluated at import. Imported after the group exists (DistributedDataParallel's
    # constructor imports it, through torch._dynamo), they would hold the group for good:
    # destroy_process_group would leave gloo's worker threads running into shutdown.
    importlib.import_module("torch.distributed.nn")
    torch_dist.init_process_group(backend=backend, **options)
    atexit.register(_destroy_process_group)
