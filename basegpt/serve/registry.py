"""Which runs a server serves, under which model ids, and loading them when first asked.

    runs = find_runs([], runs_root="runs")           # every run under runs/
    runs = find_runs(["runs/laptop", "runs/seed"])   # just these two
    registry = Registry(runs, device="cpu", max_queue=64)
    registry.get("laptop").submit(job)               # job(run) runs on laptop's own thread

A run is a folder holding config.json (a basegpt run directory, basegpt/checkpoint.py). Under
a runs root every such folder counts, at any depth (`basegpt compare` puts its runs one level
down), but a run's own subfolders (best/, checkpoints) do not.

Model ids. A run's id is its folder name (runs/laptop -> "laptop"). When several served runs
share a name (runs/a/best and runs/b/best, or two compare folders with the same variant),
each of those gets its path instead: relative to the runs root, or as given on the command
line, with "/" separators ("compare-rope/rope-seed0"), so ids stay unique and readable.

Loading is lazy and never fatal: a run is loaded (basegpt.checkpoint.load_run: safetensors and
JSON, never a pickle) by its worker thread on its first request, so a server with many runs
starts at once, and a run that cannot be loaded answers each request with an error that names
the run and the cause, while the other runs go on being served. A failed load is tried again
on the next request (the run may just not have saved its first checkpoint yet); a loaded run
stays in memory as loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from basegpt.checkpoint import CONFIG_FILE
from basegpt.serve.errors import APIError
from basegpt.serve.limits import Limits
from basegpt.serve.worker import ModelWorker


@dataclass(frozen=True)
class ServedRun:
    """One run a server offers: its model id, its folder and when it was made (config.json's
    modification time, as the Unix time OpenAI's `created` field holds)."""

    id: str
    path: Path

    @property
    def created(self) -> int:
        try:
            return int((self.path / CONFIG_FILE).stat().st_mtime)
        except OSError:                      # removed since: the model list still answers
            return 0


def find_runs(run_dirs: list[str | os.PathLike], runs_root: str | os.PathLike = "runs") -> list[ServedRun]:
    """The runs to serve: `run_dirs`, or with none, every run under `runs_root`; with their
    model ids (module docstring), sorted by id. A missing folder, one that is not a run, or
    a runs root without runs is a FileNotFoundError/ValueError that says what to give instead."""
    if run_dirs:
        paths = []
        for given in map(Path, run_dirs):
            if not given.is_dir():
                raise FileNotFoundError(f"{given}: no such run directory; give the folder of a "
                                        "trained run (e.g. runs/laptop)")
            if not (given / CONFIG_FILE).is_file():
                raise FileNotFoundError(f"{given} is not a basegpt run directory: it has no "
                                        f"{CONFIG_FILE}; give the folder `basegpt train` wrote")
            paths.append((given, given))
    else:
        root = Path(runs_root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder of runs; give run directories "
                                    "(basegpt serve runs/NAME) or --runs-root FOLDER")
        paths = [(path, path.relative_to(root)) for path in _runs_under(root)]
        if not paths:
            raise ValueError(f"no runs under {root}: no folder there holds {CONFIG_FILE}; train "
                             "one with `basegpt train`, or give --runs-root FOLDER")
    unique: dict[Path, tuple[Path, Path]] = {}
    for path, shown in paths:
        unique.setdefault(path.resolve(), (path, shown))      # the same run given twice: once
    names = [path.resolve().name for path, _ in unique.values()]
    runs = [ServedRun(id=path.resolve().name if names.count(path.resolve().name) == 1
                      else shown.as_posix(), path=path)
            for path, shown in unique.values()]
    return sorted(runs, key=lambda run: run.id)


def _runs_under(root: Path) -> list[Path]:
    """Every folder under `root` (root itself included) that holds config.json, not looking
    inside a run."""
    found = []
    for folder, subfolders, files in os.walk(root):
        if CONFIG_FILE in files:
            found.append(Path(folder))
            subfolders.clear()                  # best/ and checkpoints belong to this run
        else:
            subfolders.sort()
    return found


class Registry:
    """The served runs by model id, each with its own worker (one request at a time on its
    model, basegpt/serve/worker.py)."""

    def __init__(self, runs: list[ServedRun], device: str | torch.device = "cpu",
                 max_queue: int = Limits.max_queue) -> None:
        if not runs:
            raise ValueError("no runs to serve; give at least one run directory")
        self.runs = {run.id: run for run in runs}
        self.workers = {run.id: ModelWorker(run.id, run.path, device, max_queue) for run in runs}

    def get(self, model_id: object) -> ModelWorker:
        """The worker of `model_id`, or a 404 naming the ids that are served."""
        if not isinstance(model_id, str) or model_id not in self.workers:
            raise APIError(404, f"model {model_id!r} is not served here; the models are: "
                                f"{', '.join(sorted(self.workers))} (GET /v1/models)",
                           param="model", code="model_not_found")
        return self.workers[model_id]

    def close(self) -> None:
        """Stop the workers: queued requests are dropped, running ones finish."""
        for worker in self.workers.values():
            worker.close()
