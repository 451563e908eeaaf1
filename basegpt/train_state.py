"""A training run's state: what a checkpoint holds besides the weights, metrics.jsonl, run.json.

A resumed run must end with the same weights as one that never stopped, so a checkpoint
holds more than the weights: the optimizer's moments, the gradient scaler, the step, the
random number generators (dropout draws from them) and the data position.

    train_state.safetensors   tensors: optimizer state, torch (and CUDA) RNG states
    train_state.json          everything else: step, epoch, data stream position, Python RNG,
                              optimizer hyper-parameters, scaler, best validation loss
    optimizer.rankR-of-N.safetensors   under FSDP, each process's rows of the optimizer's
                              state (optimizer_state.py), indexed in train_state.json

Tensors go to safetensors and the rest to JSON; nothing is pickled (see checkpoint.py).
Both files name their step, and loading checks that they agree. Where the files go, and how
a checkpoint is committed whole, is rundir.py's part. metrics.jsonl gets one line per step;
run.json one entry per start or resume (versions, git commit, hardware, command line).
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

from basegpt._io import atomic_write_text, errors_name
from basegpt.checkpoint import (CONFIG_FILE, WEIGHTS_FILE, load_model_tensors, load_tensors,
                                read_config, save_tensors)
from basegpt.devices import mps_available
from basegpt.model import B2lM
from basegpt.optimizer_state import optimizer_from_flat, optimizer_to_flat
from basegpt.tokenizer import Tokenizer

METRICS_FILE = "metrics.jsonl"
RUN_INFO_FILE = "run.json"

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"


def process_rng_state(device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """This process's own generators: torch's CPU one, and its GPU's when it trains on one.

    Under torchrun every process seeds these differently (fit: seed + rank), so each draws
    its own dropout masks; a checkpoint keeps every process's state (`rng_to_flat(ranks)`),
    or a resume would give all of them rank 0's masks.
    """
    states = {"torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def rng_to_flat(ranks: list[dict[str, torch.Tensor]] | None = None
                ) -> tuple[dict[str, torch.Tensor], dict]:
    """The RNG states that training touches: torch CPU, every CUDA device, MPS, Python's
    random; and from `ranks` (every process's `process_rng_state`, in rank order, under
    torchrun) the other processes' as rng.rank1.torch, rng.rank1.cuda, ..."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    if mps_available():
        tensors["rng.mps"] = torch.mps.get_rng_state()
    for rank, states in enumerate(ranks or []):
        if rank > 0:                             # rank 0's are the ones above
            tensors.update({f"rng.rank{rank}.{name}": t for name, t in states.items()})
    version, internal, gauss = random.getstate()
    return tensors, {"python": [version, list(internal), gauss]}


def rng_from_flat(tensors: dict[str, torch.Tensor], meta: dict, rank: int = 0,
                  device: torch.device | None = None) -> None:
    """Inverse of rng_to_flat: set torch's CPU RNG, the CUDA and MPS RNGs (when this machine
    has them and the checkpoint saved them) and Python's random back to the saved states.

    Process `rank` > 0 of a torchrun job takes its own saved states (rng.rank{rank}.*) for
    torch's CPU generator and its GPU (`device`). A checkpoint without them (written by
    fewer processes) leaves that process's generators as fit seeded them (seed + rank):
    not an exact resume, but its dropout masks still differ from the other processes'.
    """
    if rank == 0:
        torch.set_rng_state(tensors["rng.torch"].cpu())
        cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")),
                      key=lambda k: int(k.split(".")[-1]))
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([tensors[k].cpu() for k in cuda])
        if "rng.mps" in tensors and mps_available():
            torch.mps.set_rng_state(tensors["rng.mps"].cpu())
    else:
        own = f"rng.rank{rank}."
        if own + "torch" in tensors:
            torch.set_rng_state(tensors[own + "torch"].cpu())
        if own + "cuda" in tensors and device is not None and device.type == "cuda":
            torch.cuda.set_rng_state(tensors[own + "cuda"].cpu(), device)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def save_train_state(directory: Path, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None, progress: dict[str, Any],
                     rng_ranks: list[dict[str, torch.Tensor]] | None = None) -> None:
    """Write train_state.safetensors, then train_state.json (the commit record).
    `rng_ranks`: every process's RNG states under torchrun (see rng_to_flat)."""
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    rng_tensors, rng_meta = rng_to_flat(rng_ranks)
    step = str(progress["step"])
    save_tensors(directory / STATE_TENSORS, {**opt_tensors, **rng_tensors}, metadata={"step": step})
    meta = {"progress": progress, "optimizer": opt_meta, "rng": rng_meta,
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None}
    atomic_write_text(directory / STATE_JSON, json.dumps(meta, indent=1) + "\n")


def load_train_state(directory: Path, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None, rank: int = 0,
                     device: torch.device | None = None) -> dict[str, Any]:
    """Restore optimizer, scaler and RNGs (process `rank`'s, on `device`) from `directory`;
    returns the saved progress dict."""
    meta = read_state_json(directory)
    tensors = load_tensors(directory / STATE_TENSORS)
    saved = tensor_step(directory / STATE_TENSORS)
    if saved != str(meta["progress"]["step"]):
        raise ValueError(f"{directory}: {STATE_TENSORS} is from step {saved} but {STATE_JSON} "
                         f"from step {meta['progress']['step']} (a save was cut short); resume "
                         "from another checkpoint in checkpoints/")
    optimizer_from_flat(optimizer, tensors, meta["optimizer"], directory)
    if scaler is not None and meta.get("scaler") is not None:
        scaler.load_state_dict(meta["scaler"])
    rng_from_flat(tensors, meta["rng"], rank, device)
    return meta["progress"]


STATE_KEYS = {"progress": dict, "optimizer": dict, "rng": dict}
"""What train_state.json must hold, and of what type (scaler may be null)."""


def read_state_json(directory: Path) -> dict[str, Any]:
    """train_state.json of a checkpoint folder, checked for the keys a resume reads."""
    path = directory / STATE_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {STATE_JSON}: it holds no training state "
                                "to resume (was it written by an older basegpt, or not by train?)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the checkpoint is damaged, "
                         "resume from another one in checkpoints/") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is not a training state (a JSON object); the checkpoint is "
                         "damaged, resume from another one in checkpoints/")
    for key, kind in STATE_KEYS.items():
        if not isinstance(meta.get(key), kind):
            raise ValueError(f"{path} has no {key!r} section; the checkpoint is damaged, resume "
                             "from another one in checkpoints/")
    if not isinstance(meta["progress"].get("step"), int):
        raise ValueError(f"{path}: progress has no step; the checkpoint is damaged, resume "
                         "from another one in checkpoints/")
    return meta


def tensor_step(path: Path) -> str | None:
    """The step a safetensors file of a checkpoint records in its metadata (None: none, or
    the file is missing or unreadable)."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(path, "pt") as f:
            return (f.metadata() or {}).get("step")
    except (SafetensorError, OSError, ValueError):
        return None


def resume(folder: Path, model: B2lM, optimizer: torch.optim.Optimizer,
           scaler: torch.amp.GradScaler, stream: Any, rank: int = 0,
           device: torch.device | None = None) -> dict[str, Any]:
    """Load checkpoint folder `folder` (a complete checkpoints/step_N, see
    rundir.latest_checkpoint) into model, optimizer, scaler and data stream (and process
    `rank`'s RNG states, on `device`, under torchrun); returns its progress dict (step,
    tokens, best_val, seconds, train_seconds)."""
    progress = load_train_state(folder, optimizer, scaler, rank, device)
    weights = folder / WEIGHTS_FILE
    saved = tensor_step(weights)
    if saved != str(progress["step"]):
        raise ValueError(f"{folder}: {WEIGHTS_FILE} is from step {saved} but the training "
                         f"state from step {progress['step']} (a save was cut short); resume "
                         "from another checkpoint in checkpoints/")
    load_model_tensors(model, load_tensors(weights), str(weights))
    stream.load_state_dict(progress["data"])
    progress["best_val"] = progress["best_val"] if progress["best_val"] is not None else math.inf
    return progress


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Add one step's record (step, train_loss, lr, ... and val_* after an evaluation) as a
    JSON line to run_dir/metrics.jsonl."""
    # Appending one line is atomic enough: a crash can only cut the last line, and readers
    # (plot, info) skip a line that does not parse.
    path = run_dir / METRICS_FILE
    with errors_name(path), open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Keep only metrics.jsonl's records up to `step` (rewritten atomically); returns how
    many records were dropped.

    A run that dies after its last checkpoint (a crash, kill -9, a divergence stop) has
    logged steps that its resume trains again from that checkpoint: without the cut they
    would be in the file twice, and loss.png would draw both copies. A line cut short by
    the crash goes too; appended to, it would swallow the next record.
    """
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return 0
    text = _read_text(path)
    records = _parse_metrics(text)
    kept = [r for r in records if r["step"] <= step]
    if len(kept) < len(records) or (text and not text.endswith("\n")):
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return len(records) - len(kept)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl (a cut last line is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    return _parse_metrics(_read_text(path)) if path.is_file() else []


def _read_text(path: Path) -> str:
    """A text file of the run, as UTF-8; other bytes are an error that names the file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); "
                         "the file is damaged: restore it, or delete it to start it afresh") from None


def _parse_metrics(text: str) -> list[dict[str, Any]]:
    """metrics.jsonl's records from its text; a line that does not parse (cut by a crash)
    is skipped."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def check_same_run(run_dir: Path, model: B2lM, tokenizer: Tokenizer | None) -> None:
    """Resuming needs the model config and the tokenizer the run was started with."""
    from basegpt.config import ModelConfig
    saved = read_config(run_dir)
    try:
        model_config = ModelConfig.from_dict(saved["model"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{run_dir / CONFIG_FILE}: bad model config: {error}") from None
    if model_config != model.config:
        raise ValueError(f"{run_dir} was trained with a different model config; resume with "
                         "the model built from its config.json (basegpt train --resume does)")
    if tokenizer is not None and saved.get("tokenizer_hash") != tokenizer.hash:
        raise ValueError(f"{run_dir} was trained with another tokenizer (hash "
                         f"{str(saved.get('tokenizer_hash'))[:12]}, given {tokenizer.hash[:12]}); "
                         "resume with the run's own tokenizer.json")


def update_train_config(run_dir: Path, train_config: dict[str, Any],
                        extra: dict[str, Any] | None = None) -> None:
    """On resume: write the training settings now in force (and `extra`, e.g. the CLI spec)
    into config.json, so a later resume starts from them rather than the first run's."""
    config = read_config(run_dir)
    config["train"] = train_config
    config.update(extra or {})
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")


def record_run_info(run_dir: Path, device: torch.device, dtype: torch.dtype, world: int,
                     resumed: bool, init_from: str | None = None) -> None:
    """run.json: versions, git commit, hardware and command line of each start or resume, and
    the run whose weights a fine-tuning run started from (`init_from`)."""
    import platform
    import subprocess
    from basegpt import __version__
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resumed": resumed,
             "command": sys.argv, "basegpt": __version__, "git_commit": commit,
             "python": platform.python_version(), "torch": torch.__version__,
             "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
             "cpus": os.cpu_count(), "device": str(device),
             "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
             "dtype": str(dtype).removeprefix("torch."), "processes": world}
    if init_from is not None:
        entry["init_from"] = init_from
    path = run_dir / RUN_INFO_FILE
    history = read_run_info(run_dir) if resumed else []
    atomic_write_text(path, json.dumps(history + [entry], indent=1) + "\n")


def read_run_info(run_dir: Path) -> list[dict[str, Any]]:
    """run.json's entries ([] where there is none); a damaged file is an error naming it."""
    path = run_dir / RUN_INFO_FILE
    if not path.is_file():
        return []
    try:
        history = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); restore it, or delete it to "
                         "start the history afresh") from None
    if not isinstance(history, list):
        raise ValueError(f"{path} is not a list of run entries; restore it, or delete it to "
                         "start the history afresh")
    return history
