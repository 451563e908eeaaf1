"""Saving and restoring everything a training run needs to continue bit for bit.

A resumed run must end with the same weights as one that never stopped, so a checkpoint
holds more than the weights: the optimizer's moments, the gradient scaler, the step, the
random number generators (dropout draws from them) and the data position.

    train_state.safetensors   tensors: optimizer state, torch (and CUDA) RNG states
    train_state.json          everything else: step, epoch, data stream position, Python RNG,
                              optimizer hyper-parameters, scaler, best validation loss

Tensors go to safetensors and the rest to JSON; nothing is pickled (see checkpoint.py).
The JSON is written last and names the step, so it acts as the commit record: a crash
between the files leaves a JSON whose step does not match the tensors, and loading says so.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from basegpt._io import atomic_write_text
from basegpt.checkpoint import load_tensors, save_tensors

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split optimizer.state_dict() into flat named tensors and a JSON-able rest.

        state[3]["exp_avg"] -> tensors["optimizer.3.exp_avg"]
    """
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value
            else:
                plain.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "plain_state": plain}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                        meta: dict) -> None:
    """Inverse of optimizer_to_flat: load the state back into `optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, slots in meta["plain_state"].items():
        state.setdefault(int(index), {}).update(slots)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_to_flat() -> tuple[dict[str, torch.Tensor], dict]:
    """The RNG states that training touches: torch CPU, every CUDA device, Python's random."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    version, internal, gauss = random.getstate()
    return tensors, {"python": [version, list(internal), gauss]}


def rng_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"].cpu())
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.split(".")[-1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k].cpu() for k in cuda])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def save_train_state(directory: Path, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None, progress: dict[str, Any]) -> None:
    """Write train_state.safetensors, then train_state.json (the commit record)."""
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    rng_tensors, rng_meta = rng_to_flat()
    step = str(progress["step"])
    save_tensors(directory / STATE_TENSORS, {**opt_tensors, **rng_tensors}, metadata={"step": step})
    meta = {"progress": progress, "optimizer": opt_meta, "rng": rng_meta,
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None}
    atomic_write_text(directory / STATE_JSON, json.dumps(meta, indent=1) + "\n")


def load_train_state(directory: Path, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None) -> dict[str, Any]:
    """Restore optimizer, scaler and RNGs from `directory`; returns the saved progress dict."""
    json_path = directory / STATE_JSON
    if not json_path.is_file():
        raise FileNotFoundError(f"{directory} has no {STATE_JSON}: it holds no training state "
                                "to resume (was it written by an older basegpt, or not by train?)")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{json_path} is not valid JSON ({error}); resume from an older "
                         "checkpoint in checkpoints/") from None
    from safetensors import safe_open
    tensor_path = directory / STATE_TENSORS
    tensors = load_tensors(tensor_path)
    with safe_open(tensor_path, "pt") as f:
        tensor_step = (f.metadata() or {}).get("step")
    if tensor_step != str(meta["progress"]["step"]):
        raise ValueError(f"{directory}: {STATE_TENSORS} is from step {tensor_step} but "
                         f"{STATE_JSON} from step {meta['progress']['step']} (a save was cut "
                         "short); resume from a complete checkpoint in checkpoints/")
    optimizer_from_flat(optimizer, tensors, meta["optimizer"])
    if scaler is not None and meta.get("scaler") is not None:
        scaler.load_state_dict(meta["scaler"])
    rng_from_flat(tensors, meta["rng"])
    return meta["progress"]
