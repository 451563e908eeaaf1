"""The optimizer's state as safetensors and JSON: whole, or each process's rows under FSDP.

    optimizer.state_dict()["state"][3]["exp_avg"]  ->  tensors["optimizer.3.exp_avg"]
    everything else (hyper-parameters, plain numbers)  ->  JSON (train_state.json)

A checkpoint (train_state.py) keeps them; nothing is pickled. Under FSDP (sharding.py) each
process holds some rows of every moment, and writes them into a file of its own; the JSON
records which rows each file holds, and a resume reads, for each parameter, the rows it holds
now, at whatever process count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from basegpt.checkpoint import save_tensors
from basegpt.sharding import from_rows, is_dtensor, own_rows, rows


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split optimizer.state_dict() into flat named tensors and a JSON-able rest.

        state[3]["exp_avg"] -> tensors["optimizer.3.exp_avg"]

    Under FSDP a moment is a DTensor, of which each process holds some rows: those rows go
    into each process's own file (save_optimizer_rows), and the rest records where they are,
    as meta["sharded"] = {"files": [file of process 0, 1, ...], "tensors": {name: {"shape":
    whole shape, "rows": [[start, stop] of process 0, 1, ...]}}}.
    """
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    sharded: dict[str, dict[str, Any]] = {}
    world = 1
    for key, index, name, value in _slots(state):
        if is_dtensor(value):
            world = value.device_mesh.size()
            sharded[key] = {"shape": list(value.shape),
                            "rows": [list(rows(value.shape[0], world, r)) for r in range(world)]}
        elif isinstance(value, torch.Tensor):
            tensors[key] = value
        else:
            plain.setdefault(str(index), {})[name] = value
    meta: dict[str, Any] = {"param_groups": state["param_groups"], "plain_state": plain}
    if sharded:
        meta["sharded"] = {"files": [shard_file(r, world) for r in range(world)],
                           "tensors": sharded}
    return tensors, meta


def shard_file(rank: int, world: int) -> str:
    """The file of process `rank`'s rows of the optimizer's state in a checkpoint of an FSDP
    run of `world` processes."""
    return f"optimizer.rank{rank}-of-{world}.safetensors"


def save_optimizer_rows(directory: Path, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Under FSDP, every process writes its rows of the optimizer's state into its own file
    in `directory` (see optimizer_to_flat); nothing without sharded state."""
    own, mesh = {}, None
    for key, _, _, value in _slots(optimizer.state_dict()):
        if is_dtensor(value):
            own[key], mesh = value.to_local(), value.device_mesh
    if mesh is not None:
        save_tensors(directory / shard_file(mesh.get_local_rank(), mesh.size()), own,
                     metadata={"step": str(step)})


def _slots(state: dict[str, Any]) -> Iterator[tuple[str, int, str, Any]]:
    """(flat name, parameter index, slot name, value) of every slot of an optimizer's
    state_dict: ("optimizer.3.exp_avg", 3, "exp_avg", tensor)."""
    for index, slots in state["state"].items():
        for name, value in slots.items():
            yield f"optimizer.{index}.{name}", index, name, value


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                        meta: dict, directory: Path | None = None) -> None:
    """Inverse of optimizer_to_flat: load the state back into `optimizer`, whatever the number
    of processes now and when it was saved. Each moment takes the rows its parameter holds:
    all of them for a whole parameter, this process's for an FSDP one (a DTensor), read from
    the whole tensor or from the saved processes' files (in `directory`) that hold them."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved = _SavedRows(tensors, meta.get("sharded"), directory)
    state: dict[int, dict[str, Any]] = {}
    with saved:
        for key in saved.names():
            _, index, name = key.split(".", 2)
            param = params[int(index)]
            if name == "step" or saved.shape(key) != tuple(param.shape):   # not per row
                value = tensors[key]
            elif is_dtensor(param):
                value = from_rows(saved.rows(key, *own_rows(param)), param)
            else:
                value = saved.rows(key, 0, param.shape[0])
            state.setdefault(int(index), {})[name] = value
    for index, slots in meta["plain_state"].items():
        state.setdefault(int(index), {}).update(slots)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    _match_param_layouts(optimizer)


class _SavedRows:
    """The optimizer's saved tensors, read by rows: whole ones from train_state.safetensors,
    and FSDP ones from the saved processes' files, each read only where it overlaps."""

    def __init__(self, tensors: dict[str, torch.Tensor], sharded: dict | None,
                 directory: Path | None) -> None:
        self.tensors = {k: v for k, v in tensors.items() if k.startswith("optimizer.")}
        self.sharded = sharded["tensors"] if sharded else {}
        self.paths = [directory / name for name in sharded["files"]] if sharded else []
        self._stack = contextlib.ExitStack()
        self.files: list[Any] = []

    def __enter__(self) -> _SavedRows:
        from safetensors import SafetensorError, safe_open
        for path in self.paths:
            try:
                self.files.append(self._stack.enter_context(safe_open(path, "pt")))
            except (SafetensorError, OSError) as error:
                raise ValueError(f"{path} is not a readable safetensors file ({error}); the "
                                 "checkpoint is damaged, resume from another one in "
                                 "checkpoints/") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def names(self) -> list[str]:
        return [*self.tensors, *self.sharded]

    def shape(self, key: str) -> tuple[int, ...]:
        if key in self.tensors:
            return tuple(self.tensors[key].shape)
        return tuple(self.sharded[key]["shape"])

    def rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of saved tensor `key`."""
        if key in self.tensors:
            return self.tensors[key][start:stop]
        parts = []
        for file, (first, end) in zip(self.files, self.sharded[key]["rows"]):
            lo, hi = max(start, first), min(stop, end)
            if lo < hi:
                parts.append(file.get_slice(key)[lo - first:hi - first])
        if not parts:                  # no rows here: an empty part of the right width
            return torch.empty((0, *self.sharded[key]["shape"][1:]))
        return torch.cat(parts)


def _match_param_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give every loaded moment its parameter's memory layout.

    Tensors come back from safetensors contiguous, while a parameter may be laid out otherwise
    (basegpt.fast.store_transposed keeps B2lM's matrices in (in, out) memory order). Fused Adam on CPU updates parameter and
    moments as flat memory, element i of one with element i of the other, so a moment laid out
    differently from its parameter would be paired with the wrong weights: a resumed run would
    train on silently wrong updates (on CUDA the fused kernel refuses mismatched layouts with
    an error instead; foreach kernels index by position and are unaffected).
    """
    for param, slots in optimizer.state.items():
        for name, value in slots.items():
            if (isinstance(value, torch.Tensor) and value.shape == param.shape
                    and value.stride() != param.stride()):
                slots[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)
