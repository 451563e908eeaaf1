"""A run directory's checkpoints: each one committed whole, the newest complete one found
after a kill at any moment, leftovers of interrupted saves cleaned, a run replaced whole.

    run_dir/
      config.json, tokenizer.json        written when the run starts
      model.safetensors                  the latest checkpoint's weights (what generate reads)
      checkpoints/step_00000040/         a checkpoint: model.safetensors, train_state.* (and
                                         under FSDP optimizer.rankR-of-N.safetensors)
      checkpoints/step_00000080/         (the latest keep_checkpoints are kept)
      best/                              the weights with the best validation loss
      metrics.jsonl, run.json, loss.png
      run.lock                           while a writer holds it (runlock.py)

A checkpoint is written into a hidden temporary folder, checkpoints/.step_N.tmp/, and
renamed to checkpoints/step_N/ once all of its files are on disk (under FSDP every process
writes its rows of the optimizer's state into it first: begin_checkpoint, then
save_checkpoint with begun=True). That rename is the commit
point: a step_N folder is complete by construction, and a kill before it leaves only a
temporary folder, which the next writer removes. Just before the rename, the weights at the
top are replaced (atomically, _io.py) for readers; nothing resumes from them, so a kill
between the two leaves readers a step ahead of the newest checkpoint (which the resume then
trains again), never without weights. A resume takes the newest step folder whose files
agree on their step (folders written by an older basegpt were not committed this way, so
each is checked).

Everything here runs in the process that holds the run's lock (runlock.py): removing another
writer's temporary files would break its save.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from basegpt._io import PROBE_PREFIX, atomic_write_bytes, atomic_write_text, errors_name, fsync_dir
from basegpt.checkpoint import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, save_tensors
from basegpt.model import B2lM
from basegpt.runlock import RunLock
from basegpt.tokenizer import Tokenizer
from basegpt.train_state import (METRICS_FILE, RUN_INFO_FILE, STATE_JSON, STATE_TENSORS,
                                 check_same_run, read_metrics, read_run_info, read_state_json,
                                 save_train_state, tensor_step)

CHECKPOINTS = "checkpoints"
BEST = "best"
PLOT_FILE = "loss.png"

RUN_FILES = (CONFIG_FILE, CHECKPOINTS, WEIGHTS_FILE, TOKENIZER_FILE, BEST, METRICS_FILE,
             RUN_INFO_FILE, PLOT_FILE, STATE_TENSORS, STATE_JSON)
"""Every name a run writes at its top, config.json first: replacing a run moves these aside
in this order, so an interrupted replacement leaves no config.json, and what is left is no
longer a run that could be resumed. (train_state.* at the top: written by basegpt before
checkpoints were committed by rename.)"""

_STEP_FOLDER = re.compile(r"step_(\d+)")
_TRASH = ".trash-"


def step_folder(run_dir: Path, step: int) -> Path:
    """checkpoints/step_N of `run_dir` (N zero-padded, so names sort by step)."""
    return run_dir / CHECKPOINTS / f"step_{step:08d}"


# ------------------------------------------------------------------------ writing

def checkpoint_tmp(run_dir: Path, step: int) -> Path:
    """The temporary folder checkpoint step_N is written into, before its rename commits it.
    Its name follows from the step alone, so that every process of an FSDP run writes its
    rows into the same folder."""
    folder = step_folder(run_dir, step)
    return folder.parent / f".{folder.name}.tmp"


def begin_checkpoint(run_dir: Path, step: int) -> Path:
    """Make checkpoint step_N's empty temporary folder (removing one that an interrupted save
    of the same step left) and return it."""
    tmp = checkpoint_tmp(run_dir, step)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        _discard(tmp)
    tmp.mkdir()
    return tmp


def save_checkpoint(run_dir: Path, weights: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, stream: Any,
                    keep: int, progress: dict[str, Any], is_best: bool,
                    rng_ranks: list[dict[str, torch.Tensor]] | None = None,
                    begun: bool = False) -> Path:
    """Write checkpoint step_N (the model's `weights`, whole, by plain name), put its weights
    at the top of run_dir, commit it (see the module docstring), then copy the weights into
    best/ when validation improved, and drop all but the latest `keep` checkpoints.
    `rng_ranks`: every process's RNG states under torchrun (see train_state.rng_to_flat).
    `begun`: the temporary folder exists already (begin_checkpoint), holding the files that
    the other processes of an FSDP run wrote. Returns the checkpoint's folder."""
    step = progress["step"]
    progress = {**progress, "data": stream.state_dict()}
    folder = step_folder(run_dir, step)
    tmp = checkpoint_tmp(run_dir, step) if begun else begin_checkpoint(run_dir, step)
    try:
        with errors_name(folder):             # a full disk names the checkpoint, not tmp
            save_tensors(tmp / WEIGHTS_FILE, weights, metadata={"format": "pt", "step": str(step)})
            save_train_state(tmp, optimizer, scaler, progress, rng_ranks)
        _atomic_copy(tmp / WEIGHTS_FILE, run_dir / WEIGHTS_FILE)
        if folder.exists():                  # the same step saved again: replace it whole
            _discard(folder)
        os.replace(tmp, folder)              # the commit point
        fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if is_best:
        _atomic_copy(folder / WEIGHTS_FILE, run_dir / BEST / WEIGHTS_FILE)
        _write_best_json(run_dir, step, progress["best_val"])
        _complete_best(run_dir)
    for old in list_checkpoints(run_dir)[:-keep]:
        _discard(old)
    return folder


def save_best(run_dir: Path, weights: dict[str, torch.Tensor], step: int, val_loss: float) -> None:
    """best/: the weights (whole, by plain name) with the lowest validation loss so far
    (between checkpoints too)."""
    save_tensors(run_dir / BEST / WEIGHTS_FILE, weights,
                 metadata={"format": "pt", "step": str(step)})
    _write_best_json(run_dir, step, val_loss)
    _complete_best(run_dir)


def _complete_best(run_dir: Path) -> None:
    """config.json and tokenizer.json beside the best weights make best/ a run directory of
    its own: load_run("RUN/best") and `basegpt generate RUN/best` read it like any run.
    config.json goes last: a reader that finds it finds the files it describes."""
    for name in (TOKENIZER_FILE, CONFIG_FILE):
        if (run_dir / name).is_file():
            _atomic_copy(run_dir / name, run_dir / BEST / name)


def _write_best_json(run_dir: Path, step: int, val_loss: float) -> None:
    atomic_write_text(run_dir / BEST / "best.json",
                      json.dumps({"step": step, "val_loss": val_loss}) + "\n")


def _atomic_copy(source: Path, target: Path) -> None:
    atomic_write_bytes(target, source.read_bytes())


def _discard(path: Path) -> None:
    """Remove a folder or file: first renamed to a hidden .trash- name (atomic), so a kill
    in the middle of the removal leaves a name that no reader or resume takes for a
    checkpoint, and that the next writer removes."""
    trash = path.parent / f"{_TRASH}{path.name}.{secrets.token_hex(8)}"
    os.replace(path, trash)
    if trash.is_dir():
        shutil.rmtree(trash, ignore_errors=True)
    else:
        trash.unlink(missing_ok=True)


# ------------------------------------------------------------------------ finding

def list_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints/step_N folders of `run_dir`, oldest first (complete or not)."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := _STEP_FOLDER.fullmatch(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def checkpoint_problem(folder: Path) -> str | None:
    """Why checkpoint `folder` cannot be resumed from (None: it is complete): its files (three,
    and an FSDP run's one per process) must exist and record the step in the folder's name."""
    step = int(_STEP_FOLDER.fullmatch(folder.name).group(1))
    try:
        state = read_state_json(folder)
    except (OSError, ValueError) as error:
        return str(error)
    if state["progress"]["step"] != step:
        return f"{STATE_JSON} is from step {state['progress']['step']}"
    sharded = state["optimizer"].get("sharded") or {}
    for name in (STATE_TENSORS, WEIGHTS_FILE, *sharded.get("files", [])):
        saved = tensor_step(folder / name)
        if saved != str(step):
            return f"{name} is " + ("missing or unreadable" if saved is None else f"from step {saved}")
    return None


def latest_checkpoint(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint folder of `run_dir` (None: there is none), and a line
    for each newer folder passed over as incomplete ("step_00000080: ..."), newest first."""
    skipped = []
    for folder in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder, skipped
        skipped.append(f"{folder.name}: {problem}")
    return None, skipped


def last_checkpoint(run_dir: Path | None) -> str:
    """The newest checkpoint folder of run_dir as text, for error messages ("none yet"
    before the first save, "none (no run_dir)" without a run directory)."""
    if run_dir is None:
        return "none (no run_dir)"
    kept = list_checkpoints(run_dir)
    return str(kept[-1]) if kept else "none yet"


# ------------------------------------------------------------------------ cleaning up

def clean_leftovers(run_dir: Path) -> list[str]:
    """Remove what interrupted saves left in `run_dir`: temporary files and folders
    (.NAME.<hex>.tmp, .staging.*), half-removed ones (.trash-*), and the train_state.* that
    older basegpt versions kept at the top, where a complete checkpoint folder holds its
    own. Returns the names removed, relative to run_dir."""
    removed = []
    # The old top-level state is a copy of a checkpoint folder's; alone, it is the run's state.
    legacy_copies = latest_checkpoint(run_dir)[0] is not None
    for folder in (run_dir, run_dir / CHECKPOINTS, run_dir / BEST):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            name = path.name
            leftover = ((name.startswith(".") and name.endswith(".tmp")
                         and not name.startswith(PROBE_PREFIX))
                        or name.startswith((_TRASH, ".staging.")))
            if folder == run_dir and name in (STATE_TENSORS, STATE_JSON):
                leftover = legacy_copies
            if leftover:
                _remove(path)
                removed.append(str(path.relative_to(run_dir)))
    return removed


def clear_run(run_dir: Path) -> list[str]:
    """Remove the run in `run_dir` (every name in RUN_FILES; other files stay), so that
    nothing of it remains for a later resume or load to pick up. Each name is first moved
    into one hidden .trash- folder, config.json first, then that folder is removed.
    Returns the names removed."""
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not present:
        return []
    trash = run_dir / f"{_TRASH}{secrets.token_hex(8)}"
    trash.mkdir()
    for name in present:
        os.replace(run_dir / name, trash / name)
    fsync_dir(run_dir)
    shutil.rmtree(trash, ignore_errors=True)
    return present


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds (part of) a run: any of RUN_FILES."""
    return any((run_dir / name).exists() for name in RUN_FILES)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


# ------------------------------------------------------------------------ a writer's start

def tidy(run_dir: Path, lock: RunLock, log: Callable[[str], None]) -> None:
    """What a writer does first in a run directory it now holds: say whose lock it took
    over, and remove what interrupted saves left behind."""
    if lock.previous:
        held = lock.previous
        log(f"note: the previous writer of {run_dir} (pid {held.get('pid')} on host "
            f"{held.get('host')}, since {held.get('started')}) ended without releasing its "
            "lock (killed or crashed)")
    removed = clean_leftovers(run_dir)
    if removed:
        log(f"removed what interrupted saves left in {run_dir}: {', '.join(removed)}")


def checkpoint_to_resume(run_dir: Path, model: B2lM, tokenizer: Tokenizer | None,
                          log: Callable[[str], None]) -> Path | None:
    """The newest complete checkpoint of run_dir, checked against the model and tokenizer;
    None when the run stopped before its first one (it then starts again from step 0)."""
    check_same_run(run_dir, model, tokenizer)
    # A damaged metrics.jsonl or run.json is an error now, before anything is written.
    read_metrics(run_dir)
    read_run_info(run_dir)
    folder, skipped = latest_checkpoint(run_dir)
    if folder is None and skipped:
        # Committed folders are whole, so these are damaged: starting again from step 0
        # would throw them away.
        raise ValueError(f"{run_dir} has checkpoints but none is complete ("
                         + "; ".join(skipped) + "); restore a checkpoint folder, or start "
                         "the run again with overwrite=True (basegpt train --overwrite)")
    if folder is None and (run_dir / STATE_JSON).exists():
        # Written by an older basegpt, with no checkpoint folder left beside it: starting
        # again from step 0 would remove it.
        raise ValueError(f"{run_dir} keeps its training state at the top ({STATE_JSON}, as an "
                         "older basegpt wrote it) and has no checkpoint folder; move "
                         f"{WEIGHTS_FILE}, {STATE_TENSORS} and {STATE_JSON} into "
                         f"{run_dir / CHECKPOINTS}/step_N (N: the step in {STATE_JSON}) and "
                         "resume again")
    for line in skipped:
        log(f"passing over incomplete checkpoint {line}")
    if folder is None:
        log(f"{run_dir} has no complete checkpoint yet (it stopped before its first save): "
            "starting it again from step 0")
    return folder


def start_afresh(run_dir: Path, replace: bool, log: Callable[[str], None]) -> None:
    """Make run_dir ready for a new run: nothing of an earlier run may stay behind for a
    later resume or load to pick up. A complete earlier run (its config.json) is replaced
    only when `replace` says so; parts of one whose replacement was interrupted go anyway."""
    if not replace and (run_dir / CONFIG_FILE).exists():
        raise ValueError(f"{run_dir} already holds a run; continue it with resume=True, pass "
                         "overwrite=True to replace it, or choose another run_dir")
    if holds_run(run_dir):
        removed = clear_run(run_dir)
        what = "the previous run" if replace else "the parts of an unfinished run"
        log(f"removed {what} in {run_dir}: {', '.join(removed)}")
    run_dir.mkdir(parents=True, exist_ok=True)
