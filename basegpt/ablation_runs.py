"""Training a comparison's runs (basegpt/ablation.py): one run, trained, resumed or kept as
it is, and several at once in worker processes of one thread each, with a bar per run.

A run that diverges is marked with OUT/VARIANT/seedK/diverged.json and kept as diverged by
later calls. Workers are spawned, not forked, train with one thread each, and leave Ctrl-C to
fit, which saves the run; their progress comes back on a queue, where the parent draws it.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from basegpt._io import atomic_write_text
from basegpt.ablation_table import run_numbers
from basegpt.config import TrainConfig
from basegpt.progress import progress_bar
from basegpt.recipe import check_spec, saved_progress, train_run

DIVERGED = "diverged.json"       # in a run directory: the run diverged, do not retry it


def default_jobs(train: TrainConfig) -> int:
    """Runs at once when the caller leaves it to compare: one per CPU core the process may
    use, when the runs train on the CPU; one at a time on an accelerator, which one run
    already fills."""
    from basegpt.devices import pick_device
    if pick_device(train.device).type != "cpu":
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def train_one(run_dir: Path, spec: dict[str, Any], progress: bool,
               log: Callable[[str], None],
               on_step: Callable[[dict[str, Any]], None] | None = None,
               dist: Any = None) -> dict[str, Any]:
    """Train the run, resume it if it stopped before its budget, or leave it if it is done
    (or diverged before); its numbers. Ctrl-C (the run saved) is a KeyboardInterrupt.
    `on_step` is fit's: called with each step's metrics record. Under torchrun (`dist`, a
    distributed.Dist) every process trains the run and waits for the others after it."""
    from basegpt.distributed import Dist
    dist = dist or Dist()
    from basegpt.optim import stop_reason
    from basegpt.train import TrainingDiverged
    seed = {"seed": spec["train"]["seed"], "run_dir": str(run_dir)}
    marker = run_dir / DIVERGED
    if marker.is_file():
        log(f"{run_dir}: diverged before, kept as diverged")
        return {**seed, **run_numbers(run_dir, json.loads(marker.read_text())["error"])}
    try:
        if not (run_dir / "config.json").is_file():
            result, _, _ = _after_all(dist, train_run, spec, run_dir, progress=progress,
                                      log=log, on_step=on_step)
        else:
            done = saved_progress(run_dir)
            train = check_spec(spec)[1]
            if done is not None and stop_reason(train, done["step"], None, done["seconds"]):
                log(f"{run_dir}: finished before, kept")
                return {**seed, **run_numbers(run_dir)}
            log(f"{run_dir}: unfinished, resuming")
            result, _, _ = _after_all(dist, train_run, {"train": {}}, run_dir, resume=True,
                                      progress=progress, log=log, on_step=on_step)
    except TrainingDiverged as error:
        # Recorded rather than raised: one unstable variant (post-LN at a high learning
        # rate, say) is a result of the comparison, not a reason to stop it.
        if dist.is_main:
            atomic_write_text(marker, json.dumps({"error": str(error)}) + "\n")
        dist.barrier()
        return {**seed, **run_numbers(run_dir, str(error))}
    if result.stopped_by == "signal":
        # fit saved the run and returned on Ctrl-C / SIGTERM; the comparison stops too
        # (the next call resumes it), rather than going on to the next run.
        raise KeyboardInterrupt
    return {**seed, **run_numbers(run_dir)}


# ------------------------------------------------------------------------ worker processes

REPORT_EVERY = 0.5
"""Seconds between two progress reports of a run in a worker."""

_reports: Any = None        # in a worker: the queue its runs report progress on, or None


def _after_all(dist: Any, train: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """train(*args, **kwargs), then a wait until every process has finished it (and so
    process 0 has written the run) before any reads it; a TrainingDiverged, which every
    process raises at the same step, passes through to the caller's own wait."""
    result = train(*args, **kwargs)
    dist.barrier()
    return result


def _start_worker(reports: Any) -> None:
    """A worker process trains with one thread, and leaves Ctrl-C to fit: fit saves the run
    and returns; between runs the worker ignores it, and the parent stops handing out runs.
    Progress goes to `reports` (a queue), where the parent draws each run's bar."""
    import signal
    import torch
    global _reports
    _reports = reports
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _train_in_worker(run_dir: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """_train_one in a worker, quiet but for its reports; {"interrupted": True} when Ctrl-C
    stopped the run."""
    on_step = _Reporter(str(run_dir)) if _reports is not None else None
    try:
        return train_one(run_dir, spec, progress=False, log=lambda m: None, on_step=on_step)
    except KeyboardInterrupt:
        return {"interrupted": True}


class _Reporter:
    """fit's on_step in a worker: (run_dir, step, seconds) onto the queue, at most every
    REPORT_EVERY seconds."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir, self.last = run_dir, -math.inf

    def __call__(self, record: dict[str, Any]) -> None:
        import time
        now = time.monotonic()
        if now - self.last >= REPORT_EVERY:
            self.last = now
            _reports.put((self.run_dir, record["step"], record["seconds"]))


class _RunBars:
    """The bars of the runs that workers are training, under the overall bar: one per run,
    opened at its first report in the first free row, closed when it ends."""

    def __init__(self, todo: list[tuple[int, Path, dict[str, Any]]], rows: int) -> None:
        self.totals = {str(run_dir): _bar_total(spec) for _, run_dir, spec in todo}
        self.free = list(range(1, rows + 1))
        self.bars: dict[str, Any] = {}

    def report(self, run_dir: str, step: int, seconds: float) -> None:
        total, unit = self.totals[run_dir]
        bar = self.bars.get(run_dir)
        if bar is None:
            name = f"{Path(run_dir).parent.name}/{Path(run_dir).name}"
            bar = self.bars[run_dir] = progress_bar(total, name, unit, leave=False,
                                                    position=self.free.pop(0))
        bar.update((step if unit == "step" else round(seconds)) - bar.n)

    def close(self, run_dir: str) -> None:
        bar = self.bars.pop(run_dir, None)
        if bar is not None:
            bar.update(bar.total - bar.n)
            self.free.insert(0, bar.pos if bar.pos > 0 else -bar.pos)
            self.free.sort()
            bar.close()

    def close_all(self) -> None:
        for run_dir in list(self.bars):
            self.close(run_dir)


def _bar_total(spec: dict[str, Any]) -> tuple[float, str]:
    """A run bar's length and unit: its steps, or the seconds of a time budget."""
    train = spec["train"]
    if train.get("max_steps"):
        return train["max_steps"], "step"
    return train["max_minutes"] * 60, "s"


def train_in_workers(todo: list[tuple[int, Path, dict[str, Any]]], jobs: int,
                      finished: Callable[[int, Path, dict[str, Any]], None],
                      log: Callable[[str], None], progress: bool) -> None:
    """Every run of `todo` in `jobs` worker processes, `finished` called for each in the
    order they end, and with `progress` a bar per running run. Ctrl-C: the running runs
    save and stop, nothing new starts, and a KeyboardInterrupt follows (a second call
    resumes)."""
    import queue
    # spawn, not fork: a forked copy of a process that has run torch's thread pools can hang.
    context = multiprocessing.get_context("spawn")
    reports = context.Queue() if progress else None
    bars = _RunBars(todo, jobs) if progress else None
    log(f"training {jobs} runs at once, one thread each")
    interrupted = False
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                             initargs=(reports,)) as pool:
        running: dict[Future, tuple[int, Path]] = {
            pool.submit(_train_in_worker, run_dir, spec): (i, run_dir)
            for i, run_dir, spec in todo}
        try:
            while running:
                done, _ = wait(running, timeout=REPORT_EVERY if bars else None,
                               return_when=FIRST_COMPLETED)
                while bars is not None:
                    try:
                        bars.report(*reports.get_nowait())
                    except queue.Empty:
                        break
                for future in done:
                    i, run_dir = running.pop(future)
                    run = future.result()
                    if bars is not None:
                        bars.close(str(run_dir))
                    if run.get("interrupted"):
                        interrupted = True
                    else:
                        finished(i, run_dir, run)
                if interrupted:
                    break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if interrupted or running:
                for future in running:
                    future.cancel()              # not started: stays unstarted
                pool.shutdown(wait=True)         # started: fit saves them and returns
            if bars is not None:
                bars.close_all()
    if interrupted:
        raise KeyboardInterrupt
